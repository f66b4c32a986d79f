"""What the benchmark suites share: the machine's description, timers, memory probes, the bare
PyTorch step the trainer is compared with, and the results file.

`time_windows` (median it/s over timed windows after warm-up), `PeakRSS` / `gpu_peak` (peak
memory), `bare_step`, `environment` (versions, hardware and load, so numbers from different
machines can be compared) and `append_results` (the JSON file under benchmarks/results/).
"""

from __future__ import annotations

import importlib.metadata
import itertools
import json
import logging
import math
import os
import platform
import re
import statistics
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.machine import cpu_name
from trainer import checkpoint as ckpt_io

ROOT = Path(__file__).resolve().parent.parent

RESULTS_DIR = ROOT / "benchmarks" / "results"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
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



# ============================================================================ results


def append_results(records: list[dict], path: str | Path | None = None) -> Path:
    """Append records to `path` (default benchmarks/results/<device-slug>.json), atomically."""
    path = Path(path) if path else RESULTS_DIR / f"{records[0]['device_slug']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(path.read_text()) if path.is_file() else []
    ckpt_io.write_json(path, old + records)
    return path
