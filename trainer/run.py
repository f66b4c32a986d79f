"""Train a per-frame behaviour classifier.

    python trainer/run.py                                    # default: synthetic data, CPU, minutes
    python trainer/run.py --config configs/v4_conv_bilstm_a10g.yaml epochs=3 batch_size=16
    python trainer/run.py --resume runs/<name>               # continue an interrupted run
    accelerate launch --multi_gpu --num_processes 2 trainer/run.py ...   # several processes / GPUs

`train(cfg, ...)` is the one training entry: tune.py, modal_cluster.py and benchmarks call it.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python/accelerate launch trainer/run.py)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import contextlib
import dataclasses
import importlib.metadata
import json
import logging
import math
import os
import platform
import resource
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import broadcast_object_list, set_seed
from safetensors import SafetensorError
from torch.utils.data import DataLoader, Sampler

from trainer import checkpoint as ckpt_io
from trainer import rundir
from trainer.config import Config, ConfigError, config_to_yaml, flat_dict, load_yaml, make_config
from trainer.data import load_splits
from trainer.data.calms21 import npy_consent
from trainer.data.recording import DataError, mirror_pairs
from trainer.data.windows import WindowDataset, make_sequences
from trainer.ema import FILE as EMA_FILE
from trainer.ema import WeightEMA
from trainer.engine import NonFiniteLossError, evaluate, train_one_epoch
from trainer.features import FeaturePipeline, raw_coordinate_count
from trainer.models import build_model, count_parameters, is_recurrent, model_trainer
from trainer.store import FeatureRows, featurised_splits

log = logging.getLogger("trainer")

USER_ERRORS = (ConfigError, DataError, NonFiniteLossError)


# ============================================================================ setup helpers


def _cpu_has_native_bf16() -> bool:
    """True on CPUs with bf16 instructions (AVX512-BF16/AMX), where oneDNN runs bf16 LSTMs fast.

    Measured (benchmarks/results): on a Zen 4 CPU bf16 made the Conv-BiLSTM step 1.2-1.9x
    faster; on CPUs without native bf16 the emulated LSTM is ~30x slower than fp32.
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def new_accelerator(**kwargs) -> Accelerator:
    """An Accelerator, also when one was already built in this process with other settings."""
    if AcceleratorState._shared_state and not torch.distributed.is_initialized():
        # a second train() in one process (tests, reused Ray Tune actors, predict after train):
        # Accelerate's state is a per-process singleton that refuses another mixed_precision
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    return Accelerator(**kwargs)


def make_accelerator(cfg: Config, run_dir: Path | None) -> tuple[Accelerator, str]:
    """Accelerator for the requested device/precision; returns it and the precision really used.

    cpu=True whenever there is no usable GPU: that is what makes
    `accelerate launch --multi_gpu --num_processes 2` a real (gloo) process group on a CPU box.
    """
    cuda = torch.cuda.is_available() and cfg.device != "cpu"
    if cfg.device == "cuda" and not torch.cuda.is_available():
        log.warning("device=cuda but no CUDA GPU is visible: training on the CPU")
    precision, why = cfg.mixed_precision, ""
    if precision == "fp16" and not cuda:
        precision, why = "no", "fp16 needs a CUDA GPU (Accelerate would silently train in fp32 on the CPU)"
    elif precision == "bf16" and not cuda and is_recurrent(cfg.model_type) and not _cpu_has_native_bf16():
        precision, why = "no", "this CPU has no native bf16: bf16 autocast of an LSTM is ~30x slower than fp32"
    elif precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        precision, why = "fp16", "this GPU has no bf16 support (e.g. T4)"
    try:
        accelerator = new_accelerator(
            cpu=not cuda,
            mixed_precision=precision,
            gradient_accumulation_steps=cfg.grad_accum_steps,
            log_with="tensorboard" if run_dir is not None else None,
            project_dir=str(run_dir) if run_dir is not None else None,
        )
    except ValueError as e:  # e.g. WORLD_SIZE set by hand without MASTER_ADDR
        raise ConfigError(f"Accelerate could not start the process group: {e}") from None
    if cuda:
        torch.backends.cudnn.benchmark = True  # fixed window length: let cuDNN pick the fastest LSTM/conv kernels
        torch.set_float32_matmul_precision("high")  # TF32 matmuls on Ampere+ (A10G, A100, H100)
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and accelerator.num_processes == 1:
        raise ConfigError(
            f"launched as {launched} processes but Accelerate is not distributed, so each would train alone; "
            "use `accelerate launch --multi_gpu --num_processes N` (CPU: it sets up gloo) or a single process"
        )
    if why and accelerator.is_main_process:
        log.warning("mixed_precision=%s requested: %s; training in %s", cfg.mixed_precision, why,
                    {"no": "fp32"}.get(precision, precision))
    return accelerator, {"no": "fp32"}.get(precision, precision)


class EpochSampler(Sampler):
    """Shuffles with a permutation that depends only on (seed, epoch): resumed runs see the same order.

    Yields `epoch * n + window` so the dataset knows the epoch even inside persistent
    DataLoader workers, which never see `set_epoch` calls made in the main process.
    """

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        perm = np.random.default_rng((self.seed, self.epoch)).permutation(self.n)
        return iter((perm + self.epoch * self.n).tolist())

    def __len__(self) -> int:
        return self.n


@dataclasses.dataclass
class Data:
    """Everything the loop needs from the data side."""

    pipeline: FeaturePipeline
    class_names: list[str]
    train_ds: WindowDataset
    val_ds: WindowDataset
    val_seqs: list
    length: int
    background: str


def window_length(cfg: Config, fps: float) -> int:
    """Frames per window: sequence_length, or window_seconds converted at the data's fps."""
    if cfg.window_seconds > 0:
        return max(2, round(cfg.window_seconds * fps / cfg.frame_gap))
    return cfg.sequence_length


def window_fps(cfg: Config, recs) -> float:
    """The one frame rate window_seconds is converted at; DataError when the videos disagree.

    One window length serves every video, so with window_seconds > 0 and videos of different
    frame rates the same seconds would be different frame counts (e.g. 30 and 120 fps).
    """
    rates: dict[float, list[str]] = {}
    for r in recs:
        rates.setdefault(round(float(r.fps), 2), []).append(r.video_id)
    if cfg.window_seconds > 0 and len(rates) > 1:
        listed = "; ".join(f"{f:g} fps: {len(v)} video(s), e.g. {v[0]}" for f, v in sorted(rates.items()))
        raise DataError(f"window_seconds={cfg.window_seconds:g} needs one frame rate, but the videos have "
                        f"{listed}; train one model per frame rate or set sequence_length (frames) instead")
    return float(recs[0].fps)


def prepare_data(cfg: Config, recordings=None) -> Data:
    """Read/split videos (or reuse the feature store), fit features on train only (streamed),
    build train/val window datasets that read stored features window by window."""
    if cfg.mirror_pairs:  # mirrored pairs are new feature rows: featurise the mirrored recordings (keyed by content)
        train_recs, val_recs = recordings if recordings is not None else load_splits(cfg)
        recordings = ([mirror_pairs(r) for r in train_recs], val_recs)
    feats = featurised_splits(
        cfg, names=cfg.feature_names(), recordings=recordings,
        params=cfg.feature_params(),
    )
    train_recs, val_recs = feats.train, feats.val
    if not train_recs or not val_recs:
        raise DataError("empty data: need at least one training and one validation video")
    class_names = list(train_recs[0].class_names)
    for r in train_recs + val_recs:
        if list(r.class_names) != class_names:
            raise DataError(f"{r.video_id}: classes {r.class_names} differ from {class_names}")
        if r.labels is None:
            raise DataError(f"{r.video_id}: has no labels; training and validation videos need annotations")
    if cfg.num_classes and cfg.num_classes != len(class_names):
        raise ConfigError(
            f"config key 'num_classes' is {cfg.num_classes} but the data has {len(class_names)} classes "
            f"({', '.join(class_names)}); set num_classes={len(class_names)} or 0"
        )
    if cfg.class_weights and len(cfg.class_weights) != len(class_names):
        raise ConfigError(
            f"config key 'class_weights' has {len(cfg.class_weights)} values but the data has "
            f"{len(class_names)} classes ({', '.join(class_names)})"
        )
    bodyparts = train_recs[0].bodyparts
    if cfg.input_dim and cfg.input_dim != raw_coordinate_count(bodyparts):
        raise ConfigError(
            f"config key 'input_dim' is {cfg.input_dim} but the data has {raw_coordinate_count(bodyparts)} raw "
            f"coordinates (2 mice x {len(bodyparts)} body parts x 2); set input_dim=0 or the right count"
        )
    pipeline = feats.fit()

    def seqs_of(recs):
        rows = [[FeatureRows(x, pipeline.finish) for x in feats.rows[r.video_id]] for r in recs]
        return make_sequences(recs, rows, len(class_names))

    train_seqs, val_seqs = seqs_of(train_recs), seqs_of(val_recs)
    length = window_length(cfg, window_fps(cfg, train_recs + val_recs))
    aug = cfg.use_augmentation
    train_ds = WindowDataset(
        train_seqs,
        length=length,
        gap=cfg.frame_gap,
        stride=cfg.window_stride or None,
        train=True,
        jitter=cfg.temporal_jitter if aug else 0,
        noise_std=cfg.noise_std if aug else 0.0,
        seed=cfg.seed,
    )
    val_ds = WindowDataset(val_seqs, length=length, gap=cfg.frame_gap)
    background = cfg.data.background_class if cfg.data.background_class in class_names else class_names[0]
    return Data(pipeline, class_names, train_ds, val_ds, val_seqs, length, background)


class LinearWarmup:
    """Per-step linear warm-up to each group's base lr; after `steps` it stops touching the lr."""

    def __init__(self, optimizer, steps: int):
        self.optimizer, self.steps, self.n = optimizer, max(1, steps), 0
        self.base = [g["lr"] for g in optimizer.param_groups]
        self._apply()

    def _apply(self):
        if self.n <= self.steps:
            for g, b in zip(self.optimizer.param_groups, self.base):
                g["lr"] = b * min(1.0, (self.n + 1) / self.steps)

    def step(self):
        self.n += 1
        self._apply()

    def state_dict(self):
        return {"n": self.n, "base": self.base}

    def load_state_dict(self, state):
        self.n, self.base = state["n"], state["base"]


def make_optimizer(cfg: Config, model) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    factories = {
        "adamw": lambda: torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay),
        "adam": lambda: torch.optim.Adam(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay),
        "sgd": lambda: torch.optim.SGD(
            params, lr=cfg.learning_rate, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True
        ),
    }
    return factories[cfg.optimizer]()


def make_schedulers(cfg: Config, optimizer, steps_per_epoch: int):
    """(per-step scheduler or None, per-epoch plateau scheduler or None)."""
    total = max(1, steps_per_epoch * cfg.epochs)
    warm = int(round(cfg.warmup_epochs * steps_per_epoch))
    floor = min(1.0, cfg.min_lr / cfg.learning_rate)

    def cosine(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total - warm))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, cosine), None
    if cfg.scheduler == "onecycle":
        pct = min(0.9, max(0.01, warm / total)) if warm else 0.3
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.learning_rate, total_steps=total,
                                                   pct_start=pct), None
    step_sched = LinearWarmup(optimizer, warm) if warm else None
    if cfg.scheduler == "plateau":
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=cfg.scheduler_factor, patience=cfg.scheduler_patience, min_lr=cfg.min_lr
        )
        return step_sched, plateau
    return step_sched, None


# ============================================================================ run directory


def _git_sha() -> str:
    try:
        root = Path(__file__).resolve().parent.parent
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "") if sha.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("torch", "accelerate", "numpy", "scikit-learn", "pandas", "tensorboard", "ray", "modal"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# Config keys that are not hyper-parameters: where a run lives, how it is logged, which hardware
# runs it. TensorBoard's HParams tab shows them first when they differ between runs (run names do).
NOT_HPARAMS = frozenset({
    "name", "output_dir", "resume", "device", "log_every", "train_data_dir", "val_data_dir", "num_workers",
    "threads", "input_dim", "num_classes", "checkpoint_dir", "save_freq", "modal_gpu", "modal_timeout",
    "mixed_precision",  # replaced by precision_used, the precision really trained in
})
# data.* keys that change what is learned from (format, split); the rest are paths and reader details
HPARAM_DATA_KEYS = frozenset({
    "data.format", "data.split", "data.val_fraction", "data.num_folds", "data.fold", "data.split_seed",
    "data.skeleton", "data.units", "data.min_likelihood",
})


def is_hparam(key: str) -> bool:
    """True for dotted config keys that are hyper-parameters (model, optimisation, loss, augmentation,
    window, features, data format/split)."""
    return key in HPARAM_DATA_KEYS if key.startswith("data.") else key not in NOT_HPARAMS


def hparams_of(cfg: Config, precision: str, keys: list[str] | None = None) -> dict:
    """Flat, TensorBoard-safe hyper-parameters: lists become one entry per element (class_weights_0, ...).

    keys: only these config keys (a sweep's swept keys); default: every hyper-parameter and the
    precision used.
    """
    wanted = set(keys) if keys is not None else None
    out = {}
    for k, v in flat_dict(cfg.to_dict()).items():
        if not (k in wanted if wanted is not None else is_hparam(k)):
            continue
        if isinstance(v, list):
            if k == "class_weights" or all(isinstance(x, int | float) for x in v):
                out.update({f"{k}_{i}": float(x) for i, x in enumerate(v)})
            else:
                out[k] = ",".join(map(str, v))
        elif isinstance(v, int | float | str | bool):
            out[k] = v
        else:
            out[k] = str(v)
    if wanted is None:
        out["precision_used"] = precision
    return out


def _auto_name(cfg: Config) -> str:
    return f"{cfg.model_type}-{time.strftime('%Y%m%d-%H%M%S')}"


def _latest_resumable(output_dir: Path, checkpoint_dir: str) -> Path | None:
    """Newest run under output_dir with an unfinished checkpoint; damaged ones are skipped, with a warning."""
    runs = []
    for d in output_dir.glob("*"):
        ck = ckpt_io.resolve(d, checkpoint_dir) if d.is_dir() else None
        try:
            if ck is not None and not ckpt_io.read_state(ck)["finished"]:
                runs.append(d)
        except ckpt_io.CheckpointError as e:
            log.warning("resume=auto skips %s: %s", d, e)
    return max(runs, key=lambda d: d.stat().st_mtime, default=None)


def resolve_run(cfg: Config) -> tuple[Path, Path | None]:
    """(run directory, checkpoint to resume or None) from name/output_dir/resume."""
    out = Path(cfg.output_dir)
    if cfg.name:
        rundir.check_name(cfg.name, "config key 'name'")
    rundir.check_name(cfg.checkpoint_dir, "config key 'checkpoint_dir'")
    if cfg.resume and cfg.resume != "auto":
        ck = ckpt_io.resolve(cfg.resume) or ckpt_io.resolve(cfg.resume, cfg.checkpoint_dir)
        if ck is None:
            raise ConfigError(f"resume: no complete checkpoint in '{cfg.resume}' (expected a run dir or checkpoint dir)")
        return ck.parent.parent, ck
    if cfg.resume == "auto":
        run = out / cfg.name if cfg.name else _latest_resumable(out, cfg.checkpoint_dir)
        if run is not None and (ck := ckpt_io.resolve(run, cfg.checkpoint_dir)) is not None:
            return run, ck
    run = out / (cfg.name or _auto_name(cfg))
    if not cfg.name:
        base, i = run, 1
        while run.exists():  # two runs started in the same second
            i += 1
            run = base.with_name(f"{base.name}-{i}")
    if rundir.has_checkpoints(run / cfg.checkpoint_dir):  # leftover .tmp-* dirs are no checkpoints
        raise ConfigError(
            f"run directory '{run}' already has checkpoints; pass resume=auto to continue it or choose another name"
        )
    return run, None


# ============================================================================ checkpoints


def save_checkpoint(accelerator, run_dir: Path, cfg: Config, epoch: int, state: dict, meta: dict,
                    improved: bool, model, optimizer, objects: dict, ema=None) -> Path:
    """Write checkpoints/last atomically; copy it to best/ (if improved) and epoch_NNNN/ (save_freq).

    objects: {name: scheduler/scaler} whose state_dict() goes into the checkpoint as JSON.
    ema: optional WeightEMA, written as ema.safetensors (what predict/evaluate then use).
    """
    root = run_dir / cfg.checkpoint_dir
    tmp = root / ".tmp-last"
    last = root / "last"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        try:
            root.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
            ckpt_io.save_training(tmp, accelerator.unwrap_model(model), optimizer, objects)
            ckpt_io.write_json(tmp / ckpt_io.META, meta)
            ckpt_io.write_json(tmp / ckpt_io.STATE, state)
            if ema is not None:
                ema.save(tmp)  # the averaged weights predict/evaluate use; model.safetensors stays the raw ones
            ckpt_io.write_manifest(tmp)
            ckpt_io.publish(tmp, last)
        except (OSError, SafetensorError) as e:  # disk full / read-only: the previous `last` is untouched
            rundir.remove_quietly(tmp)
            raise rundir.storage_error(e, tmp) or e from None
        if improved:
            ckpt_io.copy_checkpoint(last, root / "best")
        if cfg.save_freq and epoch % cfg.save_freq == 0:
            ckpt_io.copy_checkpoint(last, root / f"epoch_{epoch:04d}")
    accelerator.wait_for_everyone()
    return last


# ============================================================================ training


def train(
    cfg: Config,
    *,
    recordings=None,
    on_epoch_end: Callable[[dict], None] | None = None,
    on_checkpoint: Callable[[Path], None] | None = None,
    hparam_keys: list[str] | None = None,
) -> dict:
    """Train `cfg` to the end (or early stop) and return the final metrics dict.

    recordings: optional (train, val) lists of Recording (skips reading/splitting).
    on_epoch_end(metrics): called on the main process after every epoch (Ray Tune reports here).
    on_checkpoint(path): called after each checkpoint is published (Modal commits its volume here).
    hparam_keys: config keys shown in TensorBoard's HParams tab (a sweep's swept keys); default all
    hyper-parameters.
    Raises ConfigError / DataError / NonFiniteLossError for user-caused problems.
    """
    custom = model_trainer(cfg.model_type)  # e.g. gbdt: fitted by scikit-learn (trainer/gbdt.py)
    if custom is not None:
        return custom(cfg, recordings=recordings, on_epoch_end=on_epoch_end, on_checkpoint=on_checkpoint)
    t_start = time.perf_counter()
    if cfg.threads:  # a shared machine: torch's one-thread-per-core default stalls when another job holds a core
        torch.set_num_threads(cfg.threads)
    run_dir, resume_from = resolve_run(cfg)
    accelerator, precision = make_accelerator(cfg, run_dir)
    run_dir = Path(broadcast_object_list([str(run_dir)])[0])  # auto names use the clock: agree on one
    main_proc = accelerator.is_main_process
    if not main_proc:
        logging.getLogger().setLevel(logging.WARNING)
    lock = take_run_dir(accelerator, run_dir, cfg)
    try:
        return _train(cfg, accelerator, precision, run_dir, resume_from, t_start, recordings, on_epoch_end,
                      on_checkpoint, hparam_keys)
    finally:
        if lock is not None:
            lock.release()


def take_run_dir(accelerator, run_dir: Path, cfg: Config) -> rundir.RunLock | None:
    """Main process: lock the run directory for this run, then drop half-written leftovers of a killed one."""
    error = None
    lock = None
    if accelerator.is_main_process:
        try:
            lock = rundir.RunLock(run_dir).acquire()
            rundir.clean_temporaries(run_dir / cfg.checkpoint_dir)
        except ConfigError as e:
            error = str(e)
    error = broadcast_object_list([error])[0]  # every process stops, not only the main one
    if error is not None:
        raise rundir.RunLockedError(error)
    return lock


def _train(cfg, accelerator, precision, run_dir, resume_from, t_start, recordings, on_epoch_end,
           on_checkpoint, hparam_keys=None) -> dict:
    main_proc = accelerator.is_main_process

    set_seed(cfg.seed)
    data = prepare_data(cfg, recordings)
    C = len(data.class_names)
    model = build_model(cfg, input_dim=data.pipeline.dim, num_classes=C)
    optimizer = make_optimizer(cfg, model)
    sampler = EpochSampler(len(data.train_ds), cfg.seed)
    pin = accelerator.device.type == "cuda"
    train_loader = DataLoader(data.train_ds, batch_size=cfg.batch_size, sampler=sampler,
                              num_workers=cfg.num_workers, pin_memory=pin, persistent_workers=cfg.num_workers > 0)
    val_loader = DataLoader(data.val_ds, batch_size=cfg.batch_size * 2, shuffle=False,
                            num_workers=cfg.num_workers, pin_memory=pin)
    model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)
    steps_per_epoch = math.ceil(len(train_loader) / cfg.grad_accum_steps)
    step_sched, plateau = make_schedulers(cfg, optimizer, steps_per_epoch)
    # stored as JSON in the checkpoint (never Accelerate's pickled custom objects)
    objects = {k: v for k, v in {"step_scheduler": step_sched, "plateau": plateau,
                                 "grad_scaler": accelerator.scaler}.items() if v is not None}
    ema = WeightEMA(accelerator.unwrap_model(model), cfg.ema_decay) if cfg.ema_decay > 0 else None

    weights = torch.tensor(cfg.class_weights or [1.0] * C, dtype=torch.float32, device=accelerator.device)
    loss_kwargs = {
        "weight": weights,
        "label_smoothing": cfg.label_smoothing,
        "focal_gamma": cfg.focal_gamma if cfg.loss == "focal" else 0.0,
    }
    meta = {
        "config": cfg.to_dict(),
        "class_names": data.class_names,
        "background": data.background,
        "features": data.pipeline.state_dict(),
        "input_dim": data.pipeline.dim,
        "num_classes": C,
        "window_length": data.length,
        "precision_used": precision,
    }
    state = {"epoch": 0, "global_step": 0, "best_score": -1.0, "best_epoch": 0, "bad_epochs": 0,
             "best_scores": None, "finished": False, "early_stopped": False, "wall_time_s": 0.0}
    if resume_from is not None:
        if ema is not None and (resume_from / EMA_FILE).is_file():
            ema.load(resume_from)
        state = ckpt_io.read_state(resume_from)
        ckpt_io.load_training(resume_from, accelerator.unwrap_model(model), optimizer, objects)
        log.info("resuming %s from %s (epoch %d done)", run_dir, resume_from, state["epoch"])

    n_params = count_parameters(accelerator.unwrap_model(model))
    if main_proc:
        write_run_info(run_dir, cfg, precision, n_params, accelerator, data)
    # event files directly in the run directory: `tensorboard --logdir runs` names the run by its name
    accelerator.init_trackers("")
    writer = accelerator.get_tracker("tensorboard", unwrap=True) if main_proc else None
    if writer is not None and resume_from is None:
        write_hparams(writer, hparams_of(cfg, precision, hparam_keys))
    log.info("%s: %s params, %d train windows (%d steps/epoch), %d val frames, features %d, precision %s, %s",
             run_dir.name, f"{n_params:,}", len(data.train_ds), steps_per_epoch,
             sum(s.num_frames for s in data.val_seqs), data.pipeline.dim, precision, accelerator.device)

    # an early-stopped run stays stopped; a run that reached its last epoch continues only if epochs grew
    last_epoch = state["epoch"] if state.get("early_stopped") else cfg.epochs
    if resume_from is not None and state["epoch"] >= last_epoch:
        log.info("%s already finished at epoch %d; nothing to train", run_dir.name, state["epoch"])
    try:
        for epoch in range(state["epoch"] + 1, last_epoch + 1):
            set_seed(cfg.seed + epoch)  # dropout etc. depend on (seed, epoch) only: resume == uninterrupted
            train_loader.set_epoch(epoch)
            sampler.set_epoch(epoch)
            data.train_ds.set_epoch(epoch)
            if accelerator.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(accelerator.device)
            tr = train_one_epoch(
                model, train_loader, optimizer, accelerator, epoch=epoch, loss_kwargs=loss_kwargs,
                grad_clip=cfg.grad_clip, step_scheduler=step_sched, mixup_alpha=cfg.mixup_alpha if cfg.use_augmentation else 0.0,
                log_every=cfg.log_every, global_step=state["global_step"], seed=cfg.seed, total_epochs=cfg.epochs,
                ema=ema,
            )
            with ema.applied(accelerator.unwrap_model(model)) if ema is not None else contextlib.nullcontext():
                ev = evaluate(model, val_loader, accelerator, data.val_seqs, class_names=data.class_names,
                              background=data.background, gap=cfg.frame_gap, length=data.length)
            score = ev["macro_f1"]
            if plateau is not None and (step_sched is None or step_sched.n >= step_sched.steps):
                plateau.step(score)
            improved = score > state["best_score"]
            state.update(epoch=epoch, global_step=tr["global_step"], wall_time_s=state["wall_time_s"] + tr["time_s"])
            if improved:
                state.update(best_score=score, best_epoch=epoch, bad_epochs=0, best_scores=ev)
            else:
                state["bad_epochs"] += 1
            stop = bool(cfg.early_stopping_patience) and state["bad_epochs"] >= cfg.early_stopping_patience
            state.update(finished=stop or epoch == cfg.epochs, early_stopped=stop)
            row = epoch_row(epoch, tr, ev, optimizer, accelerator, data.class_names)
            state.setdefault("history", []).append(row)
            last = save_checkpoint(accelerator, run_dir, cfg, epoch, state, meta, improved, model, optimizer,
                                   objects, ema)
            if main_proc:
                log_epoch(accelerator, writer, run_dir, row, ev, data.class_names, best=state["best_score"])
                if on_checkpoint is not None:
                    on_checkpoint(last)
                if on_epoch_end is not None:
                    on_epoch_end(dict(row, best_val_macro_f1=state["best_score"], checkpoint=str(last)))
            if stop:
                log.info("early stopping: no val macro-F1 gain for %d epochs", state["bad_epochs"])
                break
    except KeyboardInterrupt:
        log.warning("interrupted; the last checkpoint is intact: continue with --resume %s", run_dir)
        raise
    finally:
        accelerator.end_training()

    final = final_metrics(state, data.class_names, precision, time.perf_counter() - t_start, run_dir,
                          run_dir / cfg.checkpoint_dir / "best")
    if main_proc:
        ckpt_io.write_json(run_dir / "metrics.json", final)
        report(accelerator, final)
    return final


# TensorBoard tags. The Scalars tab sorts groups by name and opens the first: validation first,
# per-epoch training next, per-step charts and throughput after (engine.py logs the per-step ones).
TAG_VAL, TAG_VAL_F1, TAG_TRAIN, TAG_PERF = "0_val", "1_val_f1", "2_train_epoch", "4_perf"
HPARAM_METRIC = f"{TAG_VAL}/best_macro_f1"  # the run's result so far: what checkpoints/best holds


def write_hparams(writer, hparams: dict) -> None:
    """HParams-plugin summary in the run's own event file, linked to the best-so-far val macro F1."""
    from torch.utils.tensorboard.summary import hparams as hp_summary

    exp, ssi, sei = hp_summary(hparams, {HPARAM_METRIC: 0.0, f"{TAG_VAL}/macro_f1": 0.0, f"{TAG_VAL}/loss": 0.0})
    for s in (exp, ssi, sei):
        writer.file_writer.add_summary(s)
    writer.flush()


def _process_cmdline(pid: int) -> list[str]:
    """argv of another process (Linux /proc); [] where unavailable."""
    try:
        return [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return []


def _launcher_args(argv: list[str]) -> list[str] | None:
    """Arguments after `accelerate launch` (or `python -m accelerate.commands.launch`) in argv, else None."""
    for i, a in enumerate(argv):
        if Path(a).name == "accelerate" and argv[i + 1:i + 2] == ["launch"]:
            return argv[i + 2:]
        if a == "accelerate.commands.launch":
            return argv[i + 1:]
    return None


def command_line(num_processes: int) -> str:
    """The command that started this run, as typed: the launcher's own when under `accelerate launch`.

    Accelerate's launchers export ACCELERATE_DYNAMO_BACKEND to the processes they start and
    run them as their children, so the parent's argv is the `accelerate launch ...` line.
    """
    own = shlex.join([Path(sys.executable).name, *sys.argv])
    if "ACCELERATE_DYNAMO_BACKEND" not in os.environ:
        return own
    launched = _launcher_args(_process_cmdline(os.getppid()))
    if launched is not None:
        return f"{shlex.join(['accelerate', 'launch', *launched])}   # accelerate launch, {num_processes} process(es)"
    return f"{own}   # under accelerate launch, {num_processes} process(es)"


def write_run_info(run_dir: Path, cfg: Config, precision: str, n_params: int, accelerator, data: Data) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(config_to_yaml(cfg))
    with open(run_dir / "command.txt", "a") as f:
        f.write(command_line(accelerator.num_processes) + "\n")
    ckpt_io.write_json(run_dir / "env.json", {
        "git_sha": _git_sha(),
        "versions": _versions(),
        "host": platform.node(),
        "device": str(accelerator.device),
        "device_name": torch.cuda.get_device_name(accelerator.device) if accelerator.device.type == "cuda" else platform.processor() or "cpu",
        "num_processes": accelerator.num_processes,
        "threads": torch.get_num_threads(),
        "precision_requested": cfg.mixed_precision,
        "precision_used": precision,
        "parameters": n_params,
        "input_dim": data.pipeline.dim,
        "class_names": data.class_names,
        "window_length": data.length,
    })


def epoch_row(epoch, tr, ev, optimizer, accelerator, class_names) -> dict:
    row = {
        "epoch": epoch,
        "train_loss": tr["train_loss"],
        "val_loss": ev["val_loss"],
        "val_macro_f1": ev["macro_f1"],
        "val_accuracy": ev["accuracy"],
        "lr": optimizer.param_groups[0]["lr"],
        "epoch_time_s": tr["time_s"],
        "it_per_s": tr["steps"] / max(tr["time_s"], 1e-9),
        "samples_per_s": tr["samples"] / max(tr["time_s"], 1e-9),
        "peak_mem_mb": _peak_memory_mb(accelerator.device),
    }
    row.update({f"val_f1_{c}": ev["f1"][c] for c in class_names})
    return row


def log_epoch(accelerator, writer, run_dir: Path, row: dict, ev: dict, class_names: list[str], *,
              best: float) -> None:
    """metrics.jsonl + TensorBoard scalars (best: best val macro F1 so far) and the confusion-matrix image."""
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    epoch = row["epoch"]
    scalars = {
        HPARAM_METRIC: best, f"{TAG_VAL}/macro_f1": row["val_macro_f1"],
        f"{TAG_VAL}/loss": row["val_loss"], f"{TAG_VAL}/accuracy": row["val_accuracy"],
        f"{TAG_TRAIN}/loss": row["train_loss"], f"{TAG_TRAIN}/lr": row["lr"],
        f"{TAG_PERF}/it_per_s": row["it_per_s"], f"{TAG_PERF}/samples_per_s": row["samples_per_s"],
        f"{TAG_PERF}/peak_mem_mb": row["peak_mem_mb"],
    }
    scalars.update({f"{TAG_VAL_F1}/{c}": ev["f1"][c] for c in class_names if ev["f1"][c] is not None})
    accelerator.log(scalars, step=epoch)
    if writer is not None:
        from trainer.plots import confusion_figure

        writer.add_figure(f"{TAG_VAL}/confusion", confusion_figure(ev["confusion"], class_names), epoch)
        writer.flush()
    f1 = " ".join(f"{c}={ev['f1'][c]:.3f}" for c in class_names if ev["f1"][c] is not None)
    log.info("epoch %d  train_loss %.4f  val_loss %.4f  val_macro_f1 %.4f  [%s]  %.1f it/s",
             epoch, row["train_loss"], row["val_loss"], row["val_macro_f1"], f1, row["it_per_s"])


def final_metrics(state: dict, class_names, precision: str, wall: float, run_dir: Path,
                  best_checkpoint: Path) -> dict:
    best = state.get("best_scores") or {}
    return {
        "run_dir": str(run_dir),
        "best_epoch": state["best_epoch"],
        "epochs_run": state["epoch"],
        "val_macro_f1": state["best_score"],
        "f1": best.get("f1"),
        "accuracy": best.get("accuracy"),
        "confusion": best.get("confusion"),
        "support": best.get("support"),
        "class_names": class_names,
        "precision_used": precision,
        "train_time_s": state["wall_time_s"],
        "wall_time_s": wall,
        "checkpoint": str(best_checkpoint),
    }


def report(accelerator, final: dict) -> None:
    lines = [f"\nvalidation (best epoch {final['best_epoch']} of {final['epochs_run']}), frame F1 per class:"]
    for c in final["class_names"]:
        v = (final["f1"] or {}).get(c)
        lines.append(f"  {c:<16s} {'n/a' if v is None else f'{v:.3f}'}   ({(final['support'] or {}).get(c, 0)} frames)")
    lines.append(f"  {'macro F1':<16s} {final['val_macro_f1']:.3f}   (behaviours, background excluded)")
    lines.append(f"run directory: {final['run_dir']}   ({final['wall_time_s']:.0f} s)")
    accelerator.print("\n".join(lines))


# ============================================================================ CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="trainer/run.py",
        description="Train a frame-by-frame mouse behaviour classifier (defaults: synthetic data, CPU).",
        epilog="Overrides: key=value, dotted for nested keys, e.g. epochs=3 model_type=transformer "
        "class_weights=[1,5,5,5] data.format=calms21 data.path=data/calms21_task1_train.json",
    )
    p.add_argument("--config", help="YAML file (keys as in trainer/config.py; see configs/)")
    p.add_argument("--resume", help="run directory or checkpoint to continue (or 'auto')")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    return p


def resolve_config(args: argparse.Namespace) -> Config:
    """Config from --config/--resume/overrides; resuming a run starts from that run's saved config."""
    base = None
    overrides = list(args.overrides)
    if args.resume:
        overrides.append(f"resume={args.resume}")
        if args.resume != "auto" and (Path(args.resume) / "folds.json").is_file():  # a cross-validation (trainer/cv.py)
            base = load_yaml(Path(args.resume) / "config.yaml")
        elif args.resume != "auto":
            ck = ckpt_io.resolve(args.resume)
            if ck is None:
                raise ConfigError(f"--resume: no complete checkpoint in '{args.resume}'")
            run = ck.parent.parent
            base = load_yaml(run / "config.yaml") if (run / "config.yaml").is_file() else None
            overrides += [f"name={run.name}", f"output_dir={run.parent}"]
    return make_config(args.config, overrides, base=base)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # its per-file save/load chatter
    args = build_parser().parse_args(argv)
    # CalMS21 .npy files are pickles: read only if the user typed the format on this command line
    typed_calms21 = any(o.replace(" ", "") == "data.format=calms21" for o in args.overrides)
    try:
        cfg = resolve_config(args)
        with npy_consent(typed_calms21):
            if cfg.data.fold == -1:  # every fold of data.split=kfold/by_time: trainer/cv.py (it imports this module)
                from trainer.cv import cross_validate

                cross_validate(cfg)
            else:
                train(cfg)
    except USER_ERRORS as e:
        logging.getLogger("trainer").error("error: %s", e)
        return 1 if isinstance(e, NonFiniteLossError) else 2
    except OSError as e:  # a full or read-only disk is the user's to fix: one line; other OSErrors stay loud
        err = rundir.storage_error(e)
        if err is None:
            raise
        logging.getLogger("trainer").error("error: %s", err)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
