"""Training throughput, memory and whole-pipeline benchmarks.

    python benchmarks/bench_train.py --quick                                   # ~1 min on a CPU
    python benchmarks/bench_train.py --models conv_bilstm,transformer --batch-sizes 16,64,256 \
        --seq-len 100 --precision fp32,fp16,bf16 --device auto                 # the model matrix
    python benchmarks/bench_train.py --suite pipeline                          # trainer vs bare, loader, ...
    python benchmarks/bench_train.py --suite all --config configs/v4_conv_bilstm_a10g.yaml --set batch_size=16

Suites (`--suite`, comma-separated; `pipeline` = the last five, `all` = everything):
  model     per (model, batch, precision): training it/s of a bare PyTorch step on tensors already
            on the device (median over >= 5 timed windows after warm-up), samples/s, frames/s,
            peak GPU memory (allocated, reserved), peak CPU RSS, parameters, optimizer state.
            Also records the parameter count of each seed architecture at the seed's input_dim.
  overhead  the real trainer (`trainer.run.train`: Accelerate + DataLoader + features + frame_loss)
            vs the bare step on the same model and batch, epochs interleaved with bare windows so a
            busy machine slows both alike; ratio = trainer it/s / bare it/s (target >= 0.95).
  features  FeaturePipeline frames/s (fit on the training videos, transform per video).
  loader    the training DataLoader's windows/s vs the model's consumption (target >= 3x).
  predict   `trainer.predict.Predictor.probabilities` frames/s on one long video (features,
            overlapping windows, model, stitching), and the same on a video half as long.
  scaling   `train()` wall time (features + 1 epoch + validation) on N and 2N videos (target <= 2.1x).

Every record is appended to benchmarks/results/<device-slug>.json (`--out` to choose the file,
`--no-save` to only print). `run_benchmarks([...CLI args...])` does the same from Python and
returns the records (modal_cluster.py calls it inside a GPU container).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `trainer` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import dataclasses
import datetime
import importlib.metadata
import itertools
import json
import logging
import math
import os
import platform
import re
import statistics
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from benchmarks.machine import cpu_name
from trainer import checkpoint as ckpt_io
from trainer.build import EpochSampler, build_training, make_accelerator, prepare_data
from trainer.config import Config, make_config
from trainer.data import load_splits
from trainer.data.synthetic import generate_recording
from trainer.engine import train_one_epoch
from trainer.features import FeaturePipeline
from trainer.models import MODELS, build_model, count_parameters
from trainer.run import train

log = logging.getLogger("bench")

ROOT = Path(__file__).resolve().parent.parent

RESULTS_DIR = ROOT / "benchmarks" / "results"
# the seeds' architectures, from their own YAML files (keys exactly as in the notes)
SEED_CONFIGS = {
    "conv_bilstm": ROOT / "configs" / "v4_conv_bilstm_a10g.yaml",
    "transformer": ROOT / "configs" / "v3_transformer_t4.yaml",
}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
MIXED = {"fp32": "no", "fp16": "fp16", "bf16": "bf16"}  # our names -> Config.mixed_precision
SUITES = ("model", "overhead", "features", "loader", "predict", "scaling")
PIPELINE = SUITES[1:]
QUICK_DATA = ["data.synthetic.num_videos=5", "data.synthetic.frames_per_video=900"]
MB = 2**20


# ============================================================================ environment


def cpu_bf16_flags() -> list[str]:
    """Native bf16 instruction sets this CPU reports (avx512_bf16, amx_bf16); [] if none or unknown."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return sorted(f for f in line.split() if f in ("avx512_bf16", "amx_bf16"))
    except OSError:
        pass
    return []


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def device_slug(device: torch.device) -> str:
    """File-name-safe device id: cuda-nvidia-a10g, cpu-amd-epyc-2c (CPU results depend on the core count)."""
    name = re.sub(r"\(r\)|\(tm\)|cpu @.*|processor", "", device_name(device).lower())
    slug = re.sub(r"[^a-z0-9]+", "-", name).strip("-")
    if device.type == "cuda":
        return f"cuda-{slug}"
    return f"cpu-{slug}-{os.cpu_count()}c"


def environment(device: torch.device) -> dict:
    """Versions, hardware and machine load: what a number needs to be comparable."""
    from trainer.provenance import git_sha  # the run directory's provenance helper

    env = {
        "host": platform.node(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_bf16": cpu_bf16_flags(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "accelerate": importlib.metadata.version("accelerate"),
        "numpy": np.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "git_sha": git_sha(),
        "loadavg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_memory_mb=round(props.total_memory / MB), gpu_capability=f"{props.major}.{props.minor}",
                   bf16_supported=torch.cuda.is_bf16_supported(), tf32_matmul=torch.backends.cuda.matmul.allow_tf32)
    return env


def pick_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU is visible (torch.cuda.is_available() is False)")
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


# ============================================================================ measuring


@contextmanager
def quiet(*names: str):
    """Raise these loggers to WARNING for the block, then restore their levels."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock time covers it (CPU work is synchronous)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakRSS:
    """Peak resident memory of this process during a `with` block, in MB.

    Linux: resets the kernel's high-water mark (/proc/self/clear_refs "5") and reads VmHWM at
    the end; elsewhere a 10 ms psutil sampler. DataLoader workers are separate processes and
    are not included.
    """

    def __enter__(self):
        self.peak_mb, self.method = None, "vmhwm"
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.method = "psutil"
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._samples = [0]
            self._thread.start()
        return self

    def _sample(self):
        import psutil

        proc = psutil.Process()
        while not self._stop.is_set():
            self._samples.append(proc.memory_info().rss)
            self._stop.wait(0.01)

    def __exit__(self, *exc):
        if self.method == "vmhwm":
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_mb = int(line.split()[1]) / 1024
        else:
            self._stop.set()
            self._thread.join()
            self.peak_mb = max(self._samples) / MB
        return False


def time_windows(step, device: torch.device, *, warmup: int, windows: int, min_window_s: float) -> dict:
    """Run `step()` `warmup` times, then `windows` timed windows of k steps each.

    k is chosen from the fastest warm-up step so that a window lasts >= min_window_s (at least
    1 step). Returns the median it/s over windows plus every window's value.
    """
    fastest = math.inf
    for _ in range(max(1, warmup)):
        sync(device)
        t0 = time.perf_counter()
        step()
        sync(device)
        fastest = min(fastest, time.perf_counter() - t0)
    k = max(1, min(10_000, math.ceil(min_window_s / max(fastest, 1e-6))))
    rates, wall, cpu = [], 0.0, 0.0
    for _ in range(windows):
        sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(k):
            step()
        sync(device)
        dt = time.perf_counter() - t0
        wall, cpu = wall + dt, cpu + time.process_time() - c0
        rates.append(k / dt)
    return summarise(rates) | {"steps_per_window": k, "warmup_steps": max(1, warmup), "cpu_share": cpu / wall}


def summarise(rates: list[float]) -> dict:
    """Median it/s (the headline), every window's value, and the interquartile range."""
    q = np.percentile(rates, [25, 75]) if len(rates) > 1 else [rates[0], rates[0]]
    return {
        "it_per_s": statistics.median(rates),
        "it_per_s_windows": [round(r, 4) for r in rates],
        "it_per_s_iqr": [round(float(q[0]), 4), round(float(q[1]), 4)],
        "windows": len(rates),
    }


def bare_step(model, optimizer, batches, *, device: torch.device, precision: str, grad_clip: float,
              weight: torch.Tensor | None):
    """A plain PyTorch training step over in-memory batches: the comparison point for the trainer.

    batches: list of (x (B, T, F), y (B, T)) already on `device`, cycled. fp16 uses a GradScaler,
    bf16 plain autocast, fp32 no autocast. No .item(): nothing forces a GPU sync inside a step.
    """
    batches = itertools.cycle(batches)
    dtype = DTYPES[precision]
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()

    def step():
        x, y = next(batches)
        with torch.autocast(device.type, dtype=dtype, enabled=precision != "fp32"):
            logits = model(x)  # (B, T, C)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), weight=weight, ignore_index=-1)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        scaler.step(optimizer)
        scaler.update()

    return step


def tensor_mb(tensors) -> float:
    return sum(t.numel() * t.element_size() for t in tensors if torch.is_tensor(t)) / MB


def optimizer_state_mb(optimizer) -> float:
    return tensor_mb(t for s in optimizer.state.values() for t in s.values())


@contextmanager
def gpu_peak(device: torch.device, out: dict):
    """Fill `out` with peak allocated/reserved GPU memory (MB) over the block (CUDA only)."""
    if device.type != "cuda":
        yield
        return
    torch.cuda.empty_cache()
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    yield
    sync(device)
    out["peak_gpu_mem_allocated_mb"] = round(torch.cuda.max_memory_allocated(device) / MB, 1)
    out["peak_gpu_mem_reserved_mb"] = round(torch.cuda.max_memory_reserved(device) / MB, 1)


# ============================================================================ model suite


def model_config(model: str, size: str, overrides: list[str]) -> Config:
    """The seed YAML of `model` (size=seed, when there is one) or the trainer defaults, plus overrides."""
    path = SEED_CONFIGS.get(model) if size == "seed" else None
    return make_config(path, [f"model_type={model}", *overrides])


def feature_dim(cfg: Config) -> int:
    """Width of the default feature pipeline on the synthetic data (what the model really sees)."""
    rec = generate_recording("probe", frames=300, seed=0)
    fp = FeaturePipeline(cfg.feature_names(), bodyparts=rec.bodyparts,
                         params={"pca_components": cfg.pca_components, "temporal_windows": list(cfg.temporal_windows)})
    fp.fit_transform([rec])
    return fp.dim


def resolve_precision(cfg: Config, requested: str, measure_slow: bool) -> tuple[str | None, str, str]:
    """(precision to time or None to skip, precision the trainer would use, note).

    The trainer's own rules decide (trainer.build.make_accelerator): fp16 without CUDA -> fp32;
    bf16 + LSTM on a CPU -> fp32 (~30x slower otherwise); bf16 on a GPU without bf16 -> fp16.
    """
    _, used = make_accelerator(cfg, None)
    if used == requested:
        return requested, used, ""
    if requested == "bf16" and used == "fp32" and (measure_slow or cpu_bf16_flags()):
        why = "--measure-slow" if measure_slow else f"this CPU has native bf16 ({', '.join(cpu_bf16_flags())})"
        return "bf16", used, f"timed in bf16 ({why}); the trainer would fall back to fp32"
    if requested == "bf16" and used == "fp32":
        return None, used, ("skipped: the trainer trains an LSTM in fp32 on the CPU because bf16 autocast is "
                            "~30x slower without native bf16 (this CPU has none); --measure-slow times it anyway")
    return None, used, f"not timed: the trainer falls back to {used} here; see the {used} record of this run"


def bench_model(model_name: str, batch: int, seq_len: int, precision: str, opts, device: torch.device) -> dict:
    cfg = model_config(model_name, opts.model_size, [
        f"sequence_length={seq_len}", f"batch_size={batch}", f"mixed_precision={MIXED[precision]}",
        f"device={device.type}",
    ])
    rec = {"suite": "model", "model": model_name, "model_size": opts.model_size, "batch_size": batch,
           "seq_len": seq_len, "input_dim": opts.input_dim, "num_classes": opts.num_classes,
           "precision_requested": precision}
    timed, trainer_precision, note = resolve_precision(cfg, precision, opts.measure_slow)
    rec.update(precision_trainer=trainer_precision, precision_used=timed or trainer_precision, note=note)
    torch.manual_seed(0)
    model = build_model(cfg, input_dim=opts.input_dim, num_classes=opts.num_classes).to(device)
    rec.update(parameters=count_parameters(model), param_mb=round(tensor_mb(model.parameters()), 2))
    if timed is None:
        return rec | {"status": "skipped" if "skipped" in note else "fallback"}
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(batch, seq_len, opts.input_dim, generator=gen).to(device),
                torch.randint(0, opts.num_classes, (batch, seq_len), generator=gen).to(device)) for _ in range(4)]
    step = bare_step(model, optimizer, batches, device=device, precision=timed, grad_clip=cfg.grad_clip, weight=None)
    try:
        with PeakRSS() as rss, gpu_peak(device, rec):
            timing = time_windows(step, device, warmup=opts.warmup, windows=opts.windows, min_window_s=opts.min_window_s)
            if device.type == "cuda":  # params + grads + optimizer state + batches, between steps
                rec["gpu_mem_static_mb"] = round(torch.cuda.memory_allocated(device) / MB, 1)
    except torch.cuda.OutOfMemoryError as e:
        del model, optimizer, batches, step
        torch.cuda.empty_cache()
        return rec | {"status": "oom", "note": str(e).splitlines()[0]}
    rec.update(timing)
    if "gpu_mem_static_mb" in rec:
        rec["gpu_mem_activations_mb"] = round(rec["peak_gpu_mem_allocated_mb"] - rec["gpu_mem_static_mb"], 1)
    return rec | {
        "status": "ok",
        "samples_per_s": timing["it_per_s"] * batch,
        "frames_per_s": timing["it_per_s"] * batch * seq_len,
        "step_ms": 1000 / timing["it_per_s"],
        # steps per second of CPU time this process got: comparable across differently busy machines
        "it_per_cpu_s": timing["it_per_s"] / timing["cpu_share"] if device.type == "cpu" else None,
        "peak_cpu_rss_mb": round(rss.peak_mb, 1),
        "rss_method": rss.method,
        "optimizer_state_mb": round(optimizer_state_mb(optimizer), 2),
    }


def bench_params(model_name: str) -> dict:
    """Parameter count of a seed architecture at the seed's own input_dim (28 raw coordinates)."""
    cfg = model_config(model_name, "seed", [])
    model = build_model(cfg, input_dim=cfg.input_dim, num_classes=cfg.num_classes)
    return {"suite": "params", "model": model_name, "model_size": "seed", "input_dim": cfg.input_dim,
            "num_classes": cfg.num_classes, "parameters": count_parameters(model),
            "param_mb": round(tensor_mb(model.parameters()), 2), "status": "ok"}


# ============================================================================ pipeline suites


@dataclasses.dataclass
class Pipeline:
    """One training config with its synthetic data prepared the trainer's way."""

    cfg: Config
    recordings: tuple[list, list]
    data: object  # trainer.build.Data
    device: torch.device
    precision: str
    config_name: str
    bare_samples_per_s: float | None = None

    def describe(self) -> dict:
        c = self.cfg
        return {"model": c.model_type, "batch_size": c.batch_size, "seq_len": self.data.length,
                "input_dim": self.data.pipeline.dim, "num_workers": c.num_workers, "precision_used": self.precision,
                "videos": sum(map(len, self.recordings)), "frames_per_video": c.data.synthetic.frames_per_video,
                "config": self.config_name}


def make_pipeline(opts, device: torch.device) -> Pipeline:
    overrides = (QUICK_DATA if opts.quick else []) + [f"device={device.type}", *opts.set]
    cfg = make_config(opts.config, overrides)
    recordings = load_splits(cfg)
    data = prepare_data(cfg, recordings)
    _, precision = make_accelerator(cfg, None)
    name = " ".join([opts.config or "defaults", *(QUICK_DATA if opts.quick else []), *opts.set])
    return Pipeline(cfg, recordings, data, device, precision, name)


def derived(cfg: Config, overrides: list[str]) -> Config:
    """`cfg` with a few keys changed, through the config machinery (validated)."""
    return make_config(None, overrides, base=cfg.to_dict())


def bare_for(pipe: Pipeline, n_batches: int = 4):
    """A bare step on the pipeline's model/batch, fed with real training windows kept on the device."""
    cfg, ds, dev = pipe.cfg, pipe.data.train_ds, pipe.device
    C = len(pipe.data.class_names)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, input_dim=pipe.data.pipeline.dim, num_classes=C).to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    batches = []
    for b in range(n_batches):
        items = [ds[(b * cfg.batch_size + i) % len(ds)] for i in range(cfg.batch_size)]
        batches.append((torch.stack([it["x"] for it in items]).to(dev), torch.stack([it["y"] for it in items]).to(dev)))
    weight = torch.tensor(cfg.class_weights or [1.0] * C, dtype=torch.float32, device=dev)
    return bare_step(model, optimizer, batches, device=dev, precision=pipe.precision, grad_clip=cfg.grad_clip,
                     weight=weight)


class Batches:
    """Endless batches from the real (Accelerate-prepared) training loader, epoch after epoch, handed
    out k at a time: `train_one_epoch(model, batches.take(k), ...)` runs k real steps."""

    def __init__(self, loader, sampler, dataset):
        self.loader, self.sampler, self.dataset, self.epoch, self.it = loader, sampler, dataset, 0, iter(())

    def next(self):
        try:
            return next(self.it)
        except StopIteration:
            self.epoch += 1
            for obj in (self.loader, self.sampler, self.dataset):
                obj.set_epoch(self.epoch)
            self.it = iter(self.loader)
            return next(self.it)

    def take(self, k: int):
        source = self

        class Chunk:
            def __len__(self):
                return k

            def __iter__(self):
                return (source.next() for _ in range(k))

        return Chunk()


def real_step_setup(pipe: Pipeline):
    """Model, optimizer, loader and loss arguments built by `trainer.build.build_training`, as `trainer.run.train` builds them."""
    accelerator, precision = make_accelerator(pipe.cfg, None)
    s = build_training(pipe.cfg, accelerator, precision, data=pipe.data)
    return accelerator, s.model, s.optimizer, Batches(s.train_loader, s.sampler, s.data.train_ds), s.loss_kwargs


def bench_overhead(pipe: Pipeline, opts) -> dict:
    """The real training step vs the bare step, in alternating chunks of k steps each.

    Real: `trainer.engine.train_one_epoch` (Accelerate, frame_loss, clip, step, tqdm) over the
    Accelerate-prepared DataLoader over WindowDataset (features, jitter, noise, collate).
    Bare: `bare_step` on batches already on the device. Chunks alternate AB BA AB ... so load
    drifts on a shared machine hit both; the ratio is the median of per-pair ratios.
    Then `epoch_overhead` repeats the comparison with whole `train()` epochs.
    """
    cfg = pipe.cfg
    accelerator, model, optimizer, batches, loss_kwargs = real_step_setup(pipe)
    bare = bare_for(pipe)
    counter = itertools.count(1)

    def real(k):
        train_one_epoch(model, batches.take(k), optimizer, accelerator, epoch=next(counter), loss_kwargs=loss_kwargs,
                        grad_clip=cfg.grad_clip, log_every=cfg.log_every, seed=cfg.seed)

    def timed(fn, k):
        sync(pipe.device)
        t0, c0 = time.perf_counter(), time.process_time()
        fn(k)
        sync(pipe.device)
        return k / (time.perf_counter() - t0), (time.process_time() - c0) / k

    def bare_k(k):
        for _ in range(k):
            bare()

    for _ in range(max(1, opts.warmup)):
        timed(real, 1)
    k = max(1, math.ceil(opts.min_window_s / 2 / (1 / timed(bare_k, 2)[0])))  # ~half a window per chunk
    pairs = []
    with PeakRSS() as rss:
        for i in range(opts.overhead_pairs):
            order = (real, bare_k) if i % 2 == 0 else (bare_k, real)
            got = {fn: timed(fn, k) for fn in order}
            pairs.append((got[real], got[bare_k]))
    real_rate = summarise([r[0] for r, _ in pairs])
    bare_rate = summarise([b[0] for _, b in pairs])
    ratio = [r[0] / b[0] for r, b in pairs]
    ratio_cpu = [b[1] / r[1] for r, b in pairs]
    pipe.bare_samples_per_s = bare_rate["it_per_s"] * cfg.batch_size
    rec = pipe.describe() | {
        "suite": "overhead", "status": "ok", "steps_per_chunk": k, "windows": len(pairs),
        "trainer_it_per_s": real_rate["it_per_s"], "trainer_it_per_s_windows": real_rate["it_per_s_windows"],
        "bare_it_per_s": bare_rate["it_per_s"], "bare_it_per_s_windows": bare_rate["it_per_s_windows"],
        "overhead_ratio": statistics.median(ratio), "overhead_ratio_windows": [round(x, 4) for x in ratio],
        "overhead_ratio_iqr": [round(float(x), 4) for x in np.percentile(ratio, [25, 75])],
        # the same in process CPU seconds per step: insensitive to other load on the machine
        # (DataLoader workers are other processes: only meaningful for num_workers=0)
        "overhead_ratio_cpu": statistics.median(ratio_cpu), "overhead_ratio_cpu_windows": [round(x, 4) for x in ratio_cpu],
        "trainer_cpu_ms_per_step": 1000 * statistics.median(r[1] for r, _ in pairs),
        "bare_cpu_ms_per_step": 1000 * statistics.median(b[1] for _, b in pairs),
        "cpu_share": statistics.median(r[0] * r[1] for r, _ in pairs),
        "trainer_samples_per_s": real_rate["it_per_s"] * cfg.batch_size,
        "peak_cpu_rss_mb": round(rss.peak_mb, 1), "target": ">= 0.95",
    }
    if opts.epochs_check:
        rec |= epoch_overhead(pipe, opts)
    return rec


def epoch_overhead(pipe: Pipeline, opts) -> dict:
    """Whole `train()` epochs, each followed (in on_epoch_end) by a bare window of as many steps.

    Epoch 1 is warm-up. Adds what chunks do not see: epoch start-up, validation, checkpoints.
    """
    steps = math.ceil(len(pipe.data.train_ds) / pipe.cfg.batch_size)
    bare = bare_for(pipe)
    rows, bare_rates, walls = [], [], []
    last = [time.perf_counter()]

    def on_epoch_end(row):
        walls.append(time.perf_counter() - last[0])
        rows.append(row)
        sync(pipe.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            bare()
        sync(pipe.device)
        bare_rates.append(steps / (time.perf_counter() - t0))
        last[0] = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        cfg = derived(pipe.cfg, [f"epochs={opts.windows + 1}", f"output_dir={tmp}", "name=bench", "save_freq=0",
                                 "early_stopping_patience=0"])
        train(cfg, recordings=pipe.recordings, on_epoch_end=on_epoch_end)
    paired = [r["it_per_s"] / b for r, b in zip(rows[1:], bare_rates[1:])]
    return {
        "epoch_overhead_ratio": statistics.median(paired), "epoch_overhead_ratio_windows": [round(x, 4) for x in paired],
        "epoch_trainer_it_per_s": statistics.median(r["it_per_s"] for r in rows[1:]),
        "epoch_bare_it_per_s": statistics.median(bare_rates[1:]),
        "steps_per_epoch": steps,
        "epoch_train_s": statistics.median(r["epoch_time_s"] for r in rows[1:]),
        "epoch_wall_s": statistics.median(walls[1:]),  # train + validation + checkpoint
    }


def bench_features(pipe: Pipeline, opts) -> dict:
    """FeaturePipeline: fit (PCA + standardisation) on the training videos, then transform per video."""
    cfg, (train_recs, val_recs) = pipe.cfg, pipe.recordings
    fp = FeaturePipeline(cfg.feature_names(), bodyparts=train_recs[0].bodyparts,
                         params={"pca_components": cfg.pca_components, "temporal_windows": list(cfg.temporal_windows)})
    fit_frames = sum(r.num_frames * len(r.pairs) for r in train_recs)
    t0 = time.perf_counter()
    fp.fit_transform(train_recs)
    fit_s = time.perf_counter() - t0
    recs = list(itertools.islice(itertools.cycle(train_recs + val_recs), max(opts.windows, len(train_recs + val_recs))))
    rates = []
    with PeakRSS() as rss:
        for r in recs:
            t0 = time.perf_counter()
            fp.transform(r)
            rates.append(r.num_frames * len(r.pairs) / (time.perf_counter() - t0))
    s = summarise(rates)
    return pipe.describe() | {
        "suite": "features", "status": "ok", "features": fp.names, "feature_dim": fp.dim,
        "frames_per_s": s["it_per_s"], "frames_per_s_windows": s["it_per_s_windows"], "windows": s["windows"],
        "fit_frames_per_s": fit_frames / fit_s, "fit_frames": fit_frames, "peak_cpu_rss_mb": round(rss.peak_mb, 1),
        "unit": "pair-frames/s (one (agent, target) pair of one frame)",
    }


def bench_loader(pipe: Pipeline, opts) -> list[dict]:
    """Windows/s of the training DataLoader built as train() builds it, Accelerate-prepared
    (so batches land on the device), compared with what the bare model step consumes."""
    if pipe.bare_samples_per_s is None:
        timing = time_windows(bare_for(pipe), pipe.device, warmup=opts.warmup, windows=opts.windows,
                              min_window_s=opts.min_window_s)
        pipe.bare_samples_per_s = timing["it_per_s"] * pipe.cfg.batch_size
    cfg, ds = pipe.cfg, pipe.data.train_ds
    out = []
    for workers in opts.loader_workers or [cfg.num_workers]:
        accelerator, _ = make_accelerator(cfg, None)
        sampler = EpochSampler(len(ds), cfg.seed)
        loader = accelerator.prepare(DataLoader(ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=workers,
                                                pin_memory=pipe.device.type == "cuda"))
        rates = []
        for epoch in range(opts.windows + 1):  # epoch 0: warm-up
            loader.set_epoch(epoch)
            sampler.set_epoch(epoch)
            ds.set_epoch(epoch)
            n = 0
            t0 = time.perf_counter()
            for batch in loader:
                n += batch["x"].shape[0]
            sync(pipe.device)
            rates.append(n / (time.perf_counter() - t0))
        s = summarise(rates[1:])
        out.append(pipe.describe() | {
            "suite": "loader", "status": "ok", "num_workers": workers, "windows_per_s": s["it_per_s"],
            "windows_per_s_windows": s["it_per_s_windows"], "windows": s["windows"],
            "model_samples_per_s": pipe.bare_samples_per_s, "loader_ratio": s["it_per_s"] / pipe.bare_samples_per_s,
            "target": ">= 3",
        })
    return out


def bench_predict(pipe: Pipeline, opts) -> list[dict]:
    """Predictor.probabilities on one long synthetic video and on one half as long (scaling)."""
    from trainer.predict import Predictor

    cfg, data = pipe.cfg, pipe.data
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, input_dim=data.pipeline.dim, num_classes=len(data.class_names))  # untrained: speed only
    pred = Predictor(model, cfg, data.pipeline, data.class_names, data.length, Path("untrained"))
    out = []
    repeats = 3 if opts.quick else opts.windows
    for frames in (opts.predict_frames, opts.predict_frames // 2):
        rec = generate_recording("bench_long", frames=frames, seed=1, fps=cfg.data.synthetic.fps)
        pred.probabilities([rec], batch_size=opts.predict_batch)  # warm-up
        total, feats, cpu = [], [], []
        with PeakRSS() as rss:
            for _ in range(repeats):
                t0 = time.perf_counter()
                data.pipeline.transform(rec)
                feats.append(time.perf_counter() - t0)
                t0, c0 = time.perf_counter(), time.process_time()
                pred.probabilities([rec], batch_size=opts.predict_batch)
                sync(pipe.device)
                total.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
        t, f = statistics.median(total), statistics.median(feats)
        out.append(pipe.describe() | {
            "suite": "predict", "status": "ok", "video_frames": frames, "video_minutes": frames / rec.fps / 60,
            "predict_batch": opts.predict_batch, "frames_per_s": frames / t, "time_s": t,
            "time_s_windows": [round(x, 4) for x in total], "windows": repeats,
            "feature_s": f, "model_and_stitch_s": t - f, "peak_cpu_rss_mb": round(rss.peak_mb, 1),
            "cpu_s": statistics.median(cpu),
        })
    long, short = out
    long["scaling_ratio"] = long["time_s"] / short["time_s"]  # 2x frames -> this x time
    long["scaling_ratio_cpu"] = long["cpu_s"] / short["cpu_s"]
    return out


def bench_scaling(pipe: Pipeline, opts) -> dict:
    """train() wall time for one epoch (features, training, validation, checkpoint) on N and 2N videos."""
    n = pipe.cfg.data.synthetic.num_videos
    sizes = {}
    for k in (n, 2 * n):
        cfg = derived(pipe.cfg, [f"data.synthetic.num_videos={k}"])
        sizes[k] = (cfg, load_splits(cfg))  # generating the videos is not part of the pipeline
    times, cpu = {n: [], 2 * n: []}, {n: [], 2 * n: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(opts.scaling_repeats):  # interleaved: machine load drifts hit both sizes
            for k in (n, 2 * n):
                cfg = derived(sizes[k][0], ["epochs=1", f"output_dir={tmp}", f"name=n{k}-r{r}", "save_freq=0"])
                t0, c0 = time.perf_counter(), time.process_time()
                train(cfg, recordings=sizes[k][1])
                times[k].append(time.perf_counter() - t0)
                cpu[k].append(time.process_time() - c0)
    t1, t2 = statistics.median(times[n]), statistics.median(times[2 * n])
    frames = sum(r.num_frames for rs in sizes[n][1] for r in rs)
    return pipe.describe() | {
        "suite": "scaling", "status": "ok", "videos": n, "frames": frames, "time_s": t1, "time_2x_s": t2,
        "time_s_windows": [round(x, 3) for x in times[n]], "time_2x_s_windows": [round(x, 3) for x in times[2 * n]],
        "scaling_ratio": t2 / t1, "windows": opts.scaling_repeats, "target": "<= 2.1",
        # in process CPU seconds: what the pipeline costs, whatever else the machine is doing
        "scaling_ratio_cpu": statistics.median(cpu[2 * n]) / statistics.median(cpu[n]),
        "what": "train(cfg, recordings) wall time, epochs=1: features + windows + 1 epoch + validation + checkpoint",
    }


# ============================================================================ results


def append_results(records: list[dict], path: str | Path | None = None) -> Path:
    """Append records to `path` (default benchmarks/results/<device-slug>.json), atomically."""
    path = Path(path) if path else RESULTS_DIR / f"{records[0]['device_slug']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(path.read_text()) if path.is_file() else []
    ckpt_io.write_json(path, old + records)
    return path


def summary_line(r: dict) -> str:
    s = r["suite"]
    if r.get("status") != "ok":
        return f"{s:9s} {r.get('model', '')} b{r.get('batch_size', '')} {r.get('precision_requested', '')}: {r['status']} {r.get('note', '')}"
    if s == "model":
        mem = (f"gpu {r['peak_gpu_mem_allocated_mb']:.0f}/{r['peak_gpu_mem_reserved_mb']:.0f} MB alloc/res"
               if "peak_gpu_mem_allocated_mb" in r else f"rss {r['peak_cpu_rss_mb']:.0f} MB")
        return (f"model     {r['model']:12s} b{r['batch_size']:<4d} T{r['seq_len']} {r['precision_used']:5s} "
                f"{r['it_per_s']:8.2f} it/s {r['samples_per_s']:9.1f} samples/s {r['frames_per_s']:10.0f} frames/s  "
                f"{mem}  {r['parameters']:,} params")
    if s == "params":
        return f"params    {r['model']:12s} seed architecture, input {r['input_dim']}: {r['parameters']:,} parameters"
    if s == "overhead":
        return (f"overhead  {r['model']} b{r['batch_size']}: trainer {r['trainer_it_per_s']:.2f} it/s, bare "
                f"{r['bare_it_per_s']:.2f} it/s -> ratio {r['overhead_ratio']:.3f} (target >= 0.95); "
                f"in CPU time {r['overhead_ratio_cpu']:.3f}")
    if s == "features":
        return f"features  {r['frames_per_s']:,.0f} pair-frames/s transform, {r['fit_frames_per_s']:,.0f} fit ({r['feature_dim']} features)"
    if s == "loader":
        return (f"loader    workers={r['num_workers']}: {r['windows_per_s']:,.0f} windows/s vs model "
                f"{r['model_samples_per_s']:,.0f}/s -> ratio {r['loader_ratio']:.1f} (target >= 3)")
    if s == "predict":
        extra = f", 2x frames -> {r['scaling_ratio']:.2f}x time" if "scaling_ratio" in r else ""
        return f"predict   {r['video_frames']} frames: {r['frames_per_s']:,.0f} frames/s ({r['feature_s']:.2f} s features){extra}"
    if s == "scaling":
        return (f"scaling   {r['videos']} -> {2 * r['videos']} videos: {r['time_s']:.1f} s -> {r['time_2x_s']:.1f} s, "
                f"ratio {r['scaling_ratio']:.2f} (target <= 2.1); in CPU time {r['scaling_ratio_cpu']:.2f}")
    return json.dumps(r)


# ============================================================================ CLI


def csv(cast):
    return lambda s: [cast(x) for x in s.split(",") if x]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/bench_train.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:3]))
    p.add_argument("--suite", type=csv(str), default=None, help="model | overhead,features,loader,predict,scaling | pipeline | all (default: model; --quick: all)")
    p.add_argument("--models", type=csv(str), default=None, help=f"comma list of {', '.join(MODELS)} (default conv_bilstm,transformer)")
    p.add_argument("--batch-sizes", type=csv(int), default=None, help="comma list (default 16,64; --quick 8)")
    p.add_argument("--seq-len", type=csv(int), default=None, help="frames per window, comma list (default 100; --quick 32)")
    p.add_argument("--precision", type=csv(str), default=["fp32"], help="comma list of fp32, fp16, bf16")
    p.add_argument("--model-size", choices=["seed", "default"], default=None,
                   help="seed: the V3/V4 YAML architectures; default: trainer defaults (default: seed; --quick: default)")
    p.add_argument("--input-dim", type=int, default=0, help="model input width (0 = the default feature pipeline's)")
    p.add_argument("--num-classes", type=int, default=4)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--threads", type=int, default=0,
                   help="torch intra-op CPU threads (0 = torch's default, one per core); recorded in env")
    p.add_argument("--quick", action="store_true", help="small sizes and data: about a minute on a CPU")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps before timing (default 3; --quick 1)")
    p.add_argument("--windows", type=int, default=5, help="timed windows (median reported; >= 5)")
    p.add_argument("--min-window-s", type=float, default=None, help="min seconds per timed window (default 2; --quick 0.2)")
    p.add_argument("--measure-slow", action="store_true", help="also time what the trainer avoids: bf16 LSTM on a CPU without native bf16 (~30x slower)")
    p.add_argument("--cudnn-benchmark", action=argparse.BooleanOptionalAction, default=True,
                   help="torch.backends.cudnn.benchmark during the run (CUDA)")
    p.add_argument("--config", default=None, help="pipeline suites: YAML config (default: trainer defaults)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="pipeline suites: config overrides")
    p.add_argument("--overhead-pairs", type=int, default=None, help="overhead suite: alternating chunk pairs (default 20; --quick 6)")
    p.add_argument("--epochs-check", action=argparse.BooleanOptionalAction, default=True,
                   help="overhead suite: also compare whole train() epochs (adds validation/checkpoint time)")
    p.add_argument("--loader-workers", type=csv(int), default=None, help="loader suite: num_workers values (default: config's)")
    p.add_argument("--predict-frames", type=int, default=None, help="predict suite: video length (default 18000 = 10 min; --quick 3000)")
    p.add_argument("--predict-batch", type=int, default=64)
    p.add_argument("--scaling-repeats", type=int, default=None, help="scaling suite: repeats per size (default 3; --quick 1)")
    p.add_argument("--tag", default="", help="free text stored in every record")
    p.add_argument("--out", default=None, help="results file (default benchmarks/results/<device-slug>.json)")
    p.add_argument("--no-save", action="store_true", help="print and return the records without writing them")
    return p


def resolve_options(opts: argparse.Namespace) -> argparse.Namespace:
    q = opts.quick
    suites = opts.suite or (["all"] if q else ["model"])
    expanded = []
    for s in suites:
        expanded += list(SUITES) if s == "all" else list(PIPELINE) if s == "pipeline" else [s]
    bad = [s for s in expanded if s not in SUITES]
    if bad:
        raise SystemExit(f"--suite: unknown {bad}; choose from {', '.join(SUITES)}, pipeline, all")
    opts.suite = [s for s in SUITES if s in expanded]
    opts.models = opts.models or (["conv_bilstm", "transformer"])
    unknown = [m for m in opts.models if m not in MODELS]
    if unknown:
        raise SystemExit(f"--models: unknown {unknown}; choose from {', '.join(MODELS)}")
    bad = [p for p in opts.precision if p not in DTYPES]
    if bad:
        raise SystemExit(f"--precision: unknown {bad}; choose from fp32, fp16, bf16")
    opts.batch_sizes = opts.batch_sizes or ([8] if q else [16, 64])
    opts.seq_len = opts.seq_len or ([32] if q else [100])
    opts.model_size = opts.model_size or ("default" if q else "seed")
    opts.warmup = opts.warmup if opts.warmup is not None else (1 if q else 3)
    opts.min_window_s = opts.min_window_s if opts.min_window_s is not None else (0.2 if q else 2.0)
    opts.predict_frames = opts.predict_frames or (3000 if q else 18000)
    opts.scaling_repeats = opts.scaling_repeats or (1 if q else 3)
    opts.overhead_pairs = opts.overhead_pairs or (6 if q else 20)
    opts.windows = max(1, opts.windows)
    return opts


def run_suites(opts, device: torch.device, emit) -> None:
    """Every selected suite, in order; emit(record) for each result."""
    if opts.input_dim <= 0 and "model" in opts.suite:
        opts.input_dim = feature_dim(make_config(None, []))
    if "model" in opts.suite:
        for m in opts.models:
            if m in SEED_CONFIGS:
                emit(bench_params(m))
        for m, t, b, p in itertools.product(opts.models, opts.seq_len, opts.batch_sizes, opts.precision):
            emit(bench_model(m, b, t, p, opts, device))
    if any(s in PIPELINE for s in opts.suite):
        pipe = make_pipeline(opts, device)
        suites = {"overhead": bench_overhead, "features": bench_features, "loader": bench_loader,
                  "predict": bench_predict, "scaling": bench_scaling}
        for s in opts.suite:
            if s in suites:
                out = suites[s](pipe, opts)
                for rec in out if isinstance(out, list) else [out]:
                    emit(rec)


def run_benchmarks(args: list[str] | dict | argparse.Namespace | None = None) -> list[dict]:
    """Run the benchmarks described by CLI-style `args` (or a dict of option names) and return
    the records; they are also appended to the results file unless `--no-save`/no_save=True.

    modal_cluster.py: `run_benchmarks(["--device", "cuda", "--no-save", ...])` in the container,
    then `append_results(records)` where the results directory is (locally).
    """
    parser = build_parser()
    if isinstance(args, argparse.Namespace):
        opts = args
    elif isinstance(args, dict):
        opts = parser.parse_args([])
        for k, v in args.items():
            if not hasattr(opts, k):
                raise SystemExit(f"run_benchmarks: unknown option '{k}'")
            setattr(opts, k, v)
    else:
        opts = parser.parse_args(args)
    opts = resolve_options(opts)
    device = pick_device(opts.device)
    saved = torch.get_num_threads(), torch.backends.cudnn.benchmark  # restored at the end
    if opts.threads > 0:
        torch.set_num_threads(opts.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = opts.cudnn_benchmark
    run = {"run_id": uuid.uuid4().hex[:12], "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "device": device.type, "device_name": device_name(device), "device_slug": device_slug(device),
           "quick": bool(opts.quick), "tag": opts.tag, "command": " ".join(["benchmarks/bench_train.py", *sys.argv[1:]])
           if args is None else repr(args)}
    env = environment(device)
    records: list[dict] = []

    def emit(rec: dict) -> None:
        rec = run | rec | {"env": env | {"loadavg_1m_end": round(os.getloadavg()[0], 2)}}
        records.append(rec)
        print(summary_line(rec), flush=True)

    try:
        with quiet("accelerate", "trainer"):  # the trainer's per-run INFO lines would drown the results
            run_suites(opts, device, emit)
    finally:
        torch.set_num_threads(saved[0])
        torch.backends.cudnn.benchmark = saved[1]
    if records and not opts.no_save:
        path = append_results(records, opts.out)
        print(f"appended {len(records)} records to {path}", flush=True)
    return records


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    run_benchmarks(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
