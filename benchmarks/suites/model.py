"""Suite `model`: per (model, batch, precision), the training it/s of a bare PyTorch step on tensors
already on the device, with memory, parameters and optimizer state; suite `params`: the parameter
count of each seed architecture at the seed's own input_dim."""

from __future__ import annotations

import torch

from benchmarks.measure import (
    MB,
    ROOT,
    PeakRSS,
    bare_step,
    cpu_bf16_flags,
    gpu_peak,
    optimizer_state_mb,
    tensor_mb,
    time_windows,
)
from benchmarks.suites.common import make_accelerator
from trainer.config import Config, make_config
from trainer.data.synthetic import generate_recording
from trainer.features import FeaturePipeline
from trainer.models import build_model, count_parameters

# the seeds' architectures, from their own YAML files (keys exactly as in the notes)
SEED_CONFIGS = {
    "conv_bilstm": ROOT / "configs" / "v4_conv_bilstm_a10g.yaml",
    "transformer": ROOT / "configs" / "v3_transformer_t4.yaml",
}
MIXED = {"fp32": "no", "fp16": "fp16", "bf16": "bf16"}  # our names -> Config.mixed_precision


def model_config(model: str, size: str, overrides: list[str]) -> Config:
    """The seed YAML of `model` (size=seed, when there is one) or the trainer defaults, plus overrides."""
    path = SEED_CONFIGS.get(model) if size == "seed" else None
    return make_config(path, [f"model_type={model}", *overrides])


def feature_dim(cfg: Config) -> int:
    """Width of the default feature pipeline on the synthetic data (what the model really sees)."""
    rec = generate_recording("probe", frames=300, seed=0)
    fp = FeaturePipeline(cfg.feature_names(), bodyparts=rec.bodyparts,
                         params=cfg.feature_params())
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
