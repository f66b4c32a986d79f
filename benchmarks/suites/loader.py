"""Suite `loader`: the training DataLoader's windows/s vs what the bare model step consumes."""

from __future__ import annotations

import time

from torch.utils.data import DataLoader

from benchmarks.measure import summarise, sync, time_windows
from benchmarks.suites.common import EpochSampler, Pipeline, bare_for, make_accelerator


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
