"""Typed configuration: dataclass defaults -> YAML (differences only) -> key=value overrides.

The flat keys of the seed YAMLs (`model_type`, `conv_channels`, `lstm_hidden`, ...) are
top-level fields; data-source settings live under `data.` (`data.format=calms21`).
Unknown keys and wrong types raise `ConfigError` with one line naming the key and the
closest valid key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trainer.hints import did_you_mean


class ConfigError(ValueError):
    """A user error in a config file or override; the message is one line."""


DEFAULT_FEATURES = ["coords", "speed", "acceleration", "distances", "angles", "pca", "temporal_stats", "mask"]


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the embedded synthetic resident-intruder generator (trainer/data/synthetic.py)."""

    num_videos: int = 20  # videos generated (split by video into train/val)
    frames_per_video: int = 3000  # frames per video (100 s at 30 fps)
    num_mice: int = 2  # 2..4; labels for every ordered (agent, target) pair when > 2
    fps: float = 30.0  # frame rate of the generated videos
    seed: int = 0  # generator seed (independent of the training seed)
    arena_size: list = field(default_factory=lambda: [1024.0, 570.0])  # arena width, height in pixels
    jitter_px: float = 3.0  # std of Gaussian tracking noise per keypoint, pixels
    missing_rate: float = 0.004  # probability a keypoint starts a missing (NaN) run on a frame
    difficulty: float = 1.0  # scales the ambiguity between behaviours (0 = easy, 2 = hard)


@dataclass(frozen=True)
class DataConfig:
    """Where the recordings come from and how they are split."""

    format: str = "synthetic"  # reader name: synthetic | calms21 | mabe25 | dlc | simba | sleap | auto (see docs/formats.md)
    path: str = ""  # file or directory the reader loads (unused by synthetic)
    val_path: str = ""  # optional separate validation file/directory; else split `path` by video
    val_fraction: float = 0.2  # fraction of videos held out for validation
    split: str = "by_video"  # by_video | by_lab (mabe25) | kfold (videos) | by_time (time blocks of every video)
    num_folds: int = 5  # k for split=kfold / by_time
    fold: int = 0  # validation fold for split=kfold / by_time; -1 = cross-validate: train all k folds (docs/cv.md)
    time_gap: float = 0.0  # by_time: seconds left out each side of a val block; at least one window either way
    split_seed: int = 0  # seed of the video shuffle before splitting
    background_class: str = "other"  # name of the background class (frames with no behaviour)
    annotation_path: str = ""  # dlc, sleap: annotation file/dir (BORIS csv or Caltech .annot)
    annotation_stream: str = "S1"  # dlc + Caltech annotator: which stream to read
    annotation_format: str = "auto"  # dlc: auto | boris | caltech
    behaviors: list = field(default_factory=list)  # optional explicit class list (after background)
    unlabelled_behaviors: list = field(default_factory=list)  # annotated names treated as unlabelled (-1): out of loss and scores
    annotation_pairs: list = field(default_factory=list)  # dlc: [[tracking_file, annotation_file], ...]; [] = pair by file stem
    labs: list = field(default_factory=list)  # mabe25: read only these lab_ids; [] = every lab
    min_likelihood: float = 0.0  # dlc/simba: keypoints with pose likelihood below this become NaN
    pix_per_cm: float = 0.0  # pixels per cm where the format does not store it (calms21, dlc, simba); 0 = unknown
    skeleton: str = "auto"  # native | canonical | auto (= canonical when videos track different body parts)
    units: str = "px"  # px | cm (divide coordinates by each video's pix_per_cm) | body (by each video's median body length)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass(frozen=True)
class Config:
    """Every setting of a run. Field comments are the documentation of each key."""

    # --- run ---
    name: str = ""  # run name; runs/<name>/; default <model_type>-<timestamp>
    output_dir: str = "runs"  # parent directory of run directories
    seed: int = 42  # training seed (init, shuffling, augmentation, dropout)
    device: str = "auto"  # auto | cpu | cuda; cuda without a GPU warns and uses the CPU
    resume: str = ""  # "" | auto | path of a run dir or checkpoint to continue
    mixed_precision: str = "no"  # no | fp16 | bf16 (recorded as actually used; fp16 needs a GPU)
    log_every: int = 10  # optimizer steps between TensorBoard loss/lr points
    # --- data (seed keys) ---
    train_data_dir: str = ""  # seed V3 key: pre-split training data dir (file formats; ignored by synthetic)
    val_data_dir: str = ""  # seed V3 key: pre-split validation data dir (file formats; ignored by synthetic)
    data: DataConfig = field(default_factory=DataConfig)
    fps: float = 30.0  # fallback frame rate when the data format does not carry one
    sequence_length: int = 64  # frames per training window (after frame_gap subsampling)
    window_seconds: float = 0.0  # if > 0, sequence_length = round(window_seconds * fps / frame_gap)
    window_stride: int = 0  # frames between training window starts; 0 = sequence_length // 2
    frame_gap: int = 1  # take every frame_gap-th frame inside a window
    num_workers: int = 0  # DataLoader workers (0 = load in the main process)
    threads: int = 0  # CPU threads torch may use (torch.set_num_threads); 0 = torch's choice (one per core)
    # --- features ---
    use_feature_engineering: bool = True  # false = raw coordinates (+ mask) only
    features: list = field(default_factory=lambda: list(DEFAULT_FEATURES))  # names from trainer.features.FEATURES
    include_pca: bool = True  # seed key: drop "pca" from features when false
    pca_components: int = 16  # PCA components of the centred pose
    include_temporal_stats: bool = True  # seed key: drop "temporal_stats" from features when false
    temporal_windows: list = field(default_factory=lambda: [0.25, 1.0])  # rolling-statistic windows, seconds
    rolling_windows: list = field(default_factory=lambda: [1 / 6, 0.5, 1.5, 4.5, 13.5])  # rolling_stats windows, seconds (5/15/45/135/405 frames at 30 fps)
    feature_store: str = "auto"  # features computed once per video on disk (trainer/store.py): auto = <output_dir>/feature_store | a directory | none = in memory, nothing written
    featurize_workers: int = 0  # processes featurising videos missing from the store; 0 = usable CPU cores
    # --- model ---
    model_type: str = "conv_bilstm"  # conv_bilstm | transformer | tcn_bigru | per_frame_mlp | gbdt (trainer.models.MODELS)
    input_dim: int = 0  # seed key: raw coordinate count (2 mice x bodyparts x 2); 0 = not checked
    num_classes: int = 0  # 0 = from the data; else must equal the data's class count
    hidden_dim: int = 128  # transformer width / MLP width
    num_layers: int = 2  # transformer encoder layers / MLP hidden layers
    num_heads: int = 4  # transformer attention heads
    conv_channels: list = field(default_factory=lambda: [64, 64])  # Conv1d block widths
    conv_kernel: int = 3  # Conv1d kernel size (odd)
    lstm_hidden: int = 64  # BiLSTM hidden size per direction
    lstm_layers: int = 1  # BiLSTM layers
    dropout: float = 0.1  # dropout in every model
    # --- optimisation ---
    epochs: int = 12  # passes over the training windows
    batch_size: int = 32  # windows per step per process
    grad_accum_steps: int = 1  # micro-batches per optimizer step
    learning_rate: float = 2e-3  # peak learning rate
    weight_decay: float = 1e-4  # decoupled (adamw) or L2 (adam, sgd) weight decay
    optimizer: str = "adamw"  # adamw | adam | sgd
    momentum: float = 0.9  # sgd momentum
    grad_clip: float = 1.0  # max gradient norm; 0 = off
    scheduler: str = "cosine"  # none | plateau | cosine | onecycle
    warmup_epochs: float = 0.0  # linear warm-up before the schedule (cosine, plateau)
    scheduler_patience: int = 5  # plateau: epochs without val macro-F1 gain before lowering lr
    scheduler_factor: float = 0.5  # plateau: lr multiplier
    min_lr: float = 1e-6  # floor of cosine / plateau
    ema_decay: float = 0.0  # average of the weights (per step) used for validation and predict; 0 = off, e.g. 0.999
    early_stopping_patience: int = 0  # epochs without val macro-F1 gain before stopping; 0 = off
    # --- gbdt (model_type=gbdt: per-frame HistGradientBoosting, trainer/gbdt.py) ---
    gbdt_max_iter: int = 300  # boosting iterations (one tree per class each); early stopping may end sooner
    gbdt_learning_rate: float = 0.1  # shrinkage of every tree
    gbdt_max_leaf_nodes: int = 31  # leaves per tree
    gbdt_min_samples_leaf: int = 40  # training frames per leaf, at least
    gbdt_l2_regularization: float = 0.0  # L2 penalty on leaf values
    gbdt_max_bins: int = 255  # histogram bins per feature (<= 255)
    gbdt_frame_stride: int = 5  # train on every k-th frame: neighbouring frames are near duplicates
    gbdt_early_stopping: bool = True  # stop on the log-loss of held-out *training* videos
    gbdt_validation_fraction: float = 0.15  # fraction of training videos held out for that early stopping
    gbdt_n_iter_no_change: int = 15  # iterations without loss gain before stopping
    gbdt_eval_every: int = 25  # iterations between metrics.jsonl / TensorBoard rows (staged val scores)
    gbdt_rolling: bool = True  # append 'rolling_stats' to features: a per-frame model's only context
    # --- loss ---
    loss: str = "cross_entropy"  # cross_entropy | focal
    focal_gamma: float = 2.0  # focal loss exponent
    class_weights: list = field(default_factory=list)  # one weight per class; [] = all 1
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    soft_f1_weight: float = 0.0  # add this x (1 - soft macro F1 of the batch's behaviours) to the loss; 0 = off
    # --- augmentation (training windows only) ---
    use_augmentation: bool = True  # master switch for the four below
    noise_std: float = 0.01  # Gaussian noise added to standardised features
    temporal_jitter: int = 2  # random shift of window starts, +- frames
    feature_dropout: float = 0.0  # chance that an input channel is zeroed (its mean) for a whole window
    mixup_alpha: float = 0.0  # mixup Beta(alpha, alpha) between windows; 0 = off
    mirror_pairs: bool = False  # also train on the (target, agent) view of each pair: only for symmetric, pair-level labels
    # --- checkpoints ---
    checkpoint_dir: str = "checkpoints"  # inside the run directory
    save_freq: int = 5  # also keep checkpoints/epoch_NNNN every save_freq epochs; 0 = only last/best
    # --- cloud (used by modal_cluster.py, ignored locally) ---
    modal_gpu: str = "A10G"  # Modal GPU type
    modal_timeout: int = 14400  # Modal function timeout, seconds

    # ------------------------------------------------------------------ derived
    def feature_names(self) -> list[str]:
        """Feature table entries actually used, after the seed's boolean switches."""
        if not self.use_feature_engineering:
            return [f for f in self.features if f in ("coords", "mask")] or ["coords", "mask"]
        names = list(self.features)
        if not self.include_pca:
            names = [n for n in names if n != "pca"]
        if not self.include_temporal_stats:
            names = [n for n in names if n != "temporal_stats"]
        return names

    def feature_params(self) -> dict:
        """The keys the feature functions read, as each feature declares them (part of the feature store's key)."""
        from trainer.features import feature_params  # local import: features imports this module

        return feature_params(self)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- helpers

_CHOICES = {
    "device": ("auto", "cpu", "cuda"),
    "mixed_precision": ("no", "fp16", "bf16"),
    "optimizer": ("adamw", "adam", "sgd"),
    "scheduler": ("none", "plateau", "cosine", "onecycle"),
    "loss": ("cross_entropy", "focal"),
    "data.split": ("by_video", "by_lab", "kfold", "by_time"),
    "data.annotation_format": ("auto", "boris", "caltech"),
    "data.skeleton": ("auto", "native", "canonical"),
    "data.units": ("px", "cm", "body"),
}


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _all_keys(cls, prefix: str = "") -> list[str]:
    keys = []
    for name, tp in _field_types(cls).items():
        if dataclasses.is_dataclass(tp):
            keys += _all_keys(tp, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _unknown(key: str, valid: list[str], where: str) -> ConfigError:
    return ConfigError(f"{where}unknown config key '{key}'{did_you_mean(key, valid)}")


def check_keys(keys, where: str = "") -> None:
    """Every dotted key of `keys` (e.g. a flat override dict) is a config key; values unchecked."""
    valid = all_keys()
    for key in keys:
        if key not in valid:
            raise _unknown(key, valid, where)


def _coerce(key: str, value: Any, tp: Any, where: str) -> Any:
    """Check/convert `value` to the field type `tp`; one-line ConfigError otherwise."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        tp = [a for a in typing.get_args(tp) if a is not type(None)][0]
    bad = ConfigError(f"{where}config key '{key}' expects {getattr(tp, '__name__', tp)}, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
            raise bad
        return int(value)
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad
        return float(value)
    if tp is str:
        if isinstance(value, bool) and "no" in _CHOICES.get(key, ()):
            return "no" if not value else "yes"  # YAML 1.1 reads a bare `no` as False
        if value is None:
            return ""
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise bad
        return str(value)
    if tp is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise bad
        return value
    return value


def _build(cls, values: dict, where: str, prefix: str = ""):
    """Instantiate dataclass `cls` from a (possibly nested) dict, validating every key."""
    types_ = _field_types(cls)
    kwargs = {}
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in types_:
            raise _unknown(full, _all_keys(Config), where)
        tp = types_[key]
        if dataclasses.is_dataclass(tp):
            if isinstance(value, tp):
                kwargs[key] = value
                continue
            if not isinstance(value, dict):
                raise ConfigError(f"{where}config key '{full}' expects a mapping, got {value!r}")
            kwargs[key] = _build(tp, value, where, f"{full}.")
        else:
            value = _coerce(full, value, tp, where)
            if full in _CHOICES and value not in _CHOICES[full]:
                raise ConfigError(
                    f"{where}config key '{full}' must be one of {', '.join(_CHOICES[full])}; got {value!r}"
                )
            kwargs[key] = value
    return cls(**kwargs)


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _set_dotted(d: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    for p in parts[:-1]:
        if not isinstance(d.get(p), dict):
            d[p] = {}
        d = d[p]
    d[parts[-1]] = value


def parse_override(item: str) -> tuple[str, Any]:
    """'a.b=[1,2]' -> ('a.b', [1, 2]); values are parsed as YAML scalars/lists."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' is not of the form key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def load_yaml(path: str | Path, *, kind: str = "config file", hint: str = "") -> dict:
    """Read a YAML mapping (config, search space, ...) with one-line errors for missing/broken files.

    kind names the file in messages; hint is appended to the not-found message.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{kind} '{p}' not found{hint}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{kind} '{p}'{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{kind} '{p}' must hold a mapping of key: value")
    return data


def make_config(
    yaml_path: str | Path | None = None,
    overrides: list[str] | dict | None = None,
    base: dict | None = None,
) -> Config:
    """Resolve defaults -> `base` dict -> YAML file -> overrides into a frozen Config.

    `overrides` is a list of "key=value" strings (dotted keys for nested fields) or a
    dict {dotted_key: value}. Raises ConfigError on any unknown key or wrong type.
    """
    values: dict = dict(base or {})
    if yaml_path:
        file_values = load_yaml(yaml_path)
        _build(Config, file_values, f"{yaml_path}: ")  # validate the file on its own first
        values = _merge(values, file_values)
    items = overrides.items() if isinstance(overrides, dict) else [parse_override(o) for o in overrides or []]
    over: dict = {}
    for key, value in items:
        _set_dotted(over, key, value)
    _build(Config, over, "override: ")
    values = _merge(values, over)
    cfg = _build(Config, values, "")
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Cross-field checks that do not need the data (imports no torch: the registries list names only)."""
    from trainer.features import FEATURES  # local imports: both registries import this module
    from trainer.models import MODELS

    if cfg.sequence_length < 1 and cfg.window_seconds <= 0:
        raise ConfigError("config key 'sequence_length' must be >= 1")
    if cfg.frame_gap < 1:
        raise ConfigError("config key 'frame_gap' must be >= 1")
    if cfg.batch_size < 1:
        raise ConfigError("config key 'batch_size' must be >= 1")
    if cfg.epochs < 1:
        raise ConfigError("config key 'epochs' must be >= 1")
    if not 1 <= cfg.fps <= 1000:  # same plausible range the readers enforce on files
        raise ConfigError(f"config key 'fps' must be in 1-1000 frames per second, got {cfg.fps:g}")
    if cfg.learning_rate <= 0:
        raise ConfigError("config key 'learning_rate' must be > 0")
    if cfg.threads < 0:
        raise ConfigError("config key 'threads' must be >= 0 (0 = torch's choice)")
    if cfg.grad_accum_steps < 1:
        raise ConfigError("config key 'grad_accum_steps' must be >= 1")
    if cfg.conv_kernel % 2 == 0:
        raise ConfigError("config key 'conv_kernel' must be odd so that frames stay aligned")
    for name in cfg.features:
        if name not in FEATURES:
            hint = did_you_mean(name, FEATURES, cutoff=0.6, list_valid=True)
            raise ConfigError(f"config key 'features': unknown feature '{name}'{hint}")
    if any((not isinstance(w, int | float)) or isinstance(w, bool) or not 0 <= w < float("inf") for w in cfg.class_weights):
        raise ConfigError(f"config key 'class_weights' must be non-negative numbers, got {cfg.class_weights}")
    if not 0 <= cfg.label_smoothing < 1:
        raise ConfigError("config key 'label_smoothing' must be in [0, 1)")
    if not 0 <= cfg.feature_dropout < 1:
        raise ConfigError("config key 'feature_dropout' must be in [0, 1)")
    if not 0 <= cfg.soft_f1_weight < float("inf"):
        raise ConfigError(f"config key 'soft_f1_weight' must be a non-negative number, got {cfg.soft_f1_weight}")
    if cfg.model_type not in MODELS:
        hint = did_you_mean(cfg.model_type, MODELS, cutoff=0.6, list_valid=True)
        raise ConfigError(f"config key 'model_type': unknown model '{cfg.model_type}'{hint}")
    if cfg.data.fold == -1 and cfg.data.split not in ("kfold", "by_time"):
        raise ConfigError(f"config key 'data.fold' is -1 (cross-validate) but data.split is '{cfg.data.split}'; "
                          "use data.split=kfold (folds of videos) or data.split=by_time (time blocks)")
    if cfg.data.fold < -1:
        raise ConfigError(f"config key 'data.fold' must be a fold index or -1 (all folds), got {cfg.data.fold}")
    if cfg.data.time_gap < 0:
        raise ConfigError("config key 'data.time_gap' must be >= 0 seconds")
    if not 2 <= cfg.data.synthetic.num_mice <= 4:
        raise ConfigError("config key 'data.synthetic.num_mice' must be 2, 3 or 4")


def config_to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def flat_dict(d: dict, prefix: str = "") -> dict:
    """{'data': {'format': 'x'}} -> {'data.format': 'x'} (for hparams and search spaces)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat_dict(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def all_keys() -> list[str]:
    """Every valid dotted config key (for search spaces and error messages)."""
    return _all_keys(Config)
