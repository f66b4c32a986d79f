"""Suite `features`: FeaturePipeline frames/s, fit on the training videos and transform per video."""

from __future__ import annotations

import itertools
import time

from benchmarks.measure import PeakRSS, summarise
from benchmarks.suites.common import Pipeline
from trainer.features import FeaturePipeline


def bench_features(pipe: Pipeline, opts) -> dict:
    """FeaturePipeline: fit (PCA + standardisation) on the training videos, then transform per video."""
    cfg, (train_recs, val_recs) = pipe.cfg, pipe.recordings
    fp = FeaturePipeline(cfg.feature_names(), bodyparts=train_recs[0].bodyparts,
                         params=cfg.feature_params())
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
