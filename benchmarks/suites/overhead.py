"""Suite `overhead`: the real trainer's step and epochs vs the bare PyTorch step on the same model and batch."""

from __future__ import annotations

import itertools
import math
import statistics
import tempfile
import time

import numpy as np

from benchmarks.measure import PeakRSS, summarise, sync
from benchmarks.suites.common import Pipeline, bare_for, derived, real_step_setup, train
from trainer.engine import train_one_epoch


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
