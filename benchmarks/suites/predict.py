"""Suite `predict`: Predictor.probabilities frames/s on one long video and on one half as long."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from benchmarks.measure import PeakRSS, sync
from benchmarks.suites.common import Pipeline
from trainer.data.synthetic import generate_recording
from trainer.models import build_model


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
