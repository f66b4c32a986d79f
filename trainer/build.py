"""Everything a training run is built from, shared by train(), predict, evaluate, cv, gbdt and the benchmarks.

* Accelerator and precision policy: `new_accelerator`, `make_accelerator` (what precision a
  device really trains in, and why).
* Data: `prepare_data` (read/split, fit features on train only, window datasets), `EpochSampler`.
* Optimisation: `make_optimizer`, `make_schedulers` (`LinearWarmup`).
* `build_training(cfg, accelerator, precision)`: the model, optimizer, loaders, schedulers, EMA,
  loss arguments and checkpoint metadata of one run, as `train()` uses them (the benchmarks
  time the same objects).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, Sampler

from trainer.config import Config, ConfigError
from trainer.data import load_splits
from trainer.data.recording import DataError, mirror_pairs
from trainer.data.windows import WindowDataset, make_sequences, window_fps, window_length
from trainer.ema import WeightEMA
from trainer.features import FeaturePipeline, raw_coordinate_count
from trainer.models import build_model, is_recurrent
from trainer.store import FeatureRows, featurised_splits

log = logging.getLogger("trainer")


# ============================================================================ accelerator and precision


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


# ============================================================================ data


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
        feature_dropout=cfg.feature_dropout if aug else 0.0,
        seed=cfg.seed,
    )
    val_ds = WindowDataset(val_seqs, length=length, gap=cfg.frame_gap)
    background = cfg.data.background_class if cfg.data.background_class in class_names else class_names[0]
    return Data(pipeline, class_names, train_ds, val_ds, val_seqs, length, background)


# ============================================================================ optimisation


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
    """cfg.optimizer (adamw/adam/sgd) over the model's trainable parameters, at cfg.learning_rate."""
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



# ============================================================================ one run's training objects


@dataclasses.dataclass
class Setup:
    """What train()'s loop uses, built by `build_training` (model/optimizer/loaders already prepared)."""

    data: Data
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    sampler: EpochSampler
    train_loader: DataLoader
    val_loader: DataLoader
    steps_per_epoch: int  # optimizer steps (after gradient accumulation)
    step_sched: object | None  # per-step scheduler (LambdaLR, OneCycleLR, LinearWarmup) or None
    plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None
    objects: dict  # {name: scheduler/scaler} stored as JSON in the checkpoint
    ema: WeightEMA | None
    loss_kwargs: dict  # weight (C,) tensor on the device, label_smoothing, focal_gamma, soft_f1
    meta: dict  # the checkpoint's meta.json: everything predict needs


def checkpoint_meta(cfg: Config, data: Data, precision: str) -> dict:
    """meta.json of every checkpoint of this run: config, classes, feature statistics, window length."""
    return {
        "config": cfg.to_dict(),
        "class_names": data.class_names,
        "background": data.background,
        "features": data.pipeline.state_dict(),
        "input_dim": data.pipeline.dim,
        "num_classes": len(data.class_names),
        "window_length": data.length,
        "precision_used": precision,
    }


def build_training(cfg: Config, accelerator: Accelerator, precision: str, *, recordings=None,
                   data: Data | None = None) -> Setup:
    """Seed, data (unless given), model, optimizer, loaders, schedulers, EMA and loss arguments of one run.

    recordings: optional (train, val) lists of Recording for prepare_data; data: already prepared
    data (the benchmarks reuse one across measurements).
    """
    set_seed(cfg.seed)
    if data is None:
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
        "soft_f1": cfg.soft_f1_weight,
    }
    return Setup(data, model, optimizer, sampler, train_loader, val_loader, steps_per_epoch, step_sched, plateau,
                 objects, ema, loss_kwargs, checkpoint_meta(cfg, data, precision))
