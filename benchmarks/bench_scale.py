"""Data at scale: cold featurise, warm start-up, train()/predict peak RSS at 1x, 4x, 16x videos.

    OMP_NUM_THREADS=1 nice python benchmarks/bench_scale.py                       # 25/100/400 videos
    python benchmarks/bench_scale.py --scales 1,4 --frames 1000 --base-videos 25  # smaller

Data: synthetic 4-mouse videos (12 labelled pairs each). Generating a video takes seconds
(a Python simulation), so the benchmark simulates `--base-videos` distinct videos once
(cached under the work dir) and builds the Nx set by tiling them, each copy shifted by a
few pixels: every video has different keypoints, hence its own store entry and the full
featurisation cost, while the behaviour content repeats. The tiled set is read through a
registered reader (`bench_tiled`), so cold and warm paths are the real ones.

Every measurement runs in a fresh process (peak RSS = that process's ru_maxrss):
  featurise  cold `FeatureStore.ensure` over all videos with 1 and 2 workers: s, pair-frames/s;
             also the per-pair path (pair_pose per pair, as before the store, but with
             today's feature functions) at 1x; then,
             untimed, what `trainer.featurize` adds: manifest + fitted training statistics
  warm       reading -> first training step with a warm store (prepare_data + one batch), s
  train      one epoch of `train()` from the warm store: peak RSS, samples/s; windows start
             32 x scale frames apart, so every scale trains the same number of windows
  memory     at 1x also feature_store=none (features in RAM): samples/s and peak RSS, with the
             bench's per-frame MLP (data-bound) and with the default Conv1D-BiLSTM
  predict    `Predictor.probabilities` on the validation videos: peak RSS
Results: benchmarks/results/scale_cpu.json (--out), its plot next to it (scale_cpu.png).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import time

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MODEL = ["model_type=per_frame_mlp", "hidden_dim=64", "num_layers=1", "batch_size=256", "epochs=1",
         "log_every=1000", "data.synthetic.num_mice=4"]
# the project's default model (config defaults), for the store-vs-memory comparison where the model,
# not the data path, sets the pace as in real training
DEFAULT_MODEL = ["model_type=conv_bilstm", "hidden_dim=128", "num_layers=2", "batch_size=32"]
WINDOW_STRIDE = 32  # at 1x (= sequence_length // 2, the default); s x 32 at scale s


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------- tiled data set


def _base(work: Path, n: int, frames: int):
    """`n` simulated 4-mouse videos, cached as npz (keypoints, labels)."""
    from trainer.data.synthetic import generate_recording

    longer = [c for c in work.glob(f"base_{n}x*.npz") if int(c.stem.split("x")[1]) >= frames]
    if longer:  # a shorter set is the first frames of a longer one
        base = np.load(min(longer, key=lambda c: int(c.stem.split("x")[1])))
        return {k: base[k][:frames] for k in base.files}
    cache = work / f"base_{n}x{frames}.npz"
    if not cache.is_file():
        arrays = {}
        for i in range(n):
            r = generate_recording(f"b{i}", frames=frames, num_mice=4, seed=1000 + i)
            arrays[f"kp{i}"], arrays[f"y{i}"] = r.keypoints, r.labels
        np.savez(cache, **arrays)
    return np.load(cache)


def read_tiled(path: str, *, data, fps: float):
    """Reader: data.synthetic.num_videos videos tiled from the cached base set (see module doc)."""
    from trainer.data.recording import Recording
    from trainer.data.synthetic import CALMS21_BODYPARTS, CLASS_NAMES

    s = data.synthetic
    work = Path(os.environ["BENCH_SCALE_WORK"])
    n_base = int(os.environ["BENCH_SCALE_BASE"])
    base = _base(work, n_base, s.frames_per_video)
    pairs = [(a, t) for a in range(4) for t in range(4) if a != t]
    out = []
    for i in range(s.num_videos):
        b = i % n_base
        shift = np.float32(3.0 * (i // n_base))
        out.append(Recording(f"v{i:04d}", base[f"kp{b}"] + shift, s.fps, [f"mouse{k + 1}" for k in range(4)],
                             list(CALMS21_BODYPARTS), pairs, base[f"y{b}"], list(CLASS_NAMES), {"source": "bench"}))
    return out


def _config(work: Path, videos: int, frames: int, *extra):
    from trainer.config import make_config
    from trainer.data import register_reader

    register_reader("bench_tiled", "benchmarks.bench_scale:read_tiled")
    return make_config(None, [*MODEL, "data.format=bench_tiled", f"data.synthetic.num_videos={videos}",
                              f"data.synthetic.frames_per_video={frames}", f"output_dir={work / 'runs'}",
                              f"feature_store={work / 'store'}", *extra])


# ----------------------------------------------------------------------------- measurements (one per process)


def m_featurise(work, videos, frames, workers):
    from trainer.data import read_sides
    from trainer.store import FeatureStore, featurised_splits

    cfg = _config(work, videos, frames, f"featurize_workers={workers}")
    shutil.rmtree(work / "store", ignore_errors=True)
    recs, _ = read_sides(cfg)
    pair_frames = sum(r.num_frames * len(r.pairs) for r in recs)
    store = FeatureStore(work / "store")
    from trainer.features import FeaturePipeline

    fp = FeaturePipeline(cfg.feature_names(), bodyparts=recs[0].bodyparts,
                         params=cfg.feature_params())
    t0 = time.perf_counter()
    store.ensure(recs, fp, workers=workers)
    dt = time.perf_counter() - t0
    del recs
    # what `python -m trainer.featurize` does after featurising: the data-set manifest (warm runs
    # read no data) and the training set's fitted statistics (warm runs fit nothing)
    t1 = time.perf_counter()
    featurised_splits(cfg, names=cfg.feature_names(), params=fp.params).fit()
    fit_s = time.perf_counter() - t1
    size = sum(f.stat().st_size for f in (work / "store").rglob("*") if f.is_file())
    return {"seconds": dt, "pair_frames": pair_frames, "pair_frames_per_s": pair_frames / dt, "store_bytes": size,
            "manifest_and_fit_s": fit_s}


def m_reference(work, videos, frames):
    """Today's path before this store: per pair interpolate + every feature function, float64."""
    from trainer.data import read_sides
    from trainer.features import FEATURES, pair_pose

    cfg = _config(work, videos, frames)
    recs, _ = read_sides(cfg)
    recs = recs[: max(2, len(recs) // 8)]
    names = cfg.feature_names()
    params = cfg.feature_params()
    t0 = time.perf_counter()
    n = 0
    for r in recs:
        for p in range(len(r.pairs)):
            pose = pair_pose(r, p)
            for name in names:
                f = FEATURES[name]
                f.fn(pose=pose, fps=pose.fps, params=params, stats={})
            n += r.num_frames
    dt = time.perf_counter() - t0
    return {"seconds": dt, "pair_frames": n, "pair_frames_per_s": n / dt}


def m_warm(work, videos, frames):
    from torch.utils.data import DataLoader

    from trainer.build import prepare_data

    cfg = _config(work, videos, frames)
    t0 = time.perf_counter()
    data = prepare_data(cfg)
    next(iter(DataLoader(data.train_ds, batch_size=cfg.batch_size, shuffle=True)))
    return {"seconds": time.perf_counter() - t0}


def m_train(work, videos, frames, store, stride=0, model="mlp"):
    from trainer.run import train

    cfg = _config(work, videos, frames, f"name=t{videos}-{store}-{time.time_ns()}", f"window_stride={stride}",
                  *([] if store == "store" else ["feature_store=none"]), *(DEFAULT_MODEL if model == "default" else []))
    t0 = time.perf_counter()
    final = train(cfg)
    row = json.loads((Path(final["run_dir"]) / "metrics.jsonl").read_text().splitlines()[0])
    return {"seconds": time.perf_counter() - t0, "peak_rss_mb": _rss_mb(), "samples_per_s": row["samples_per_s"],
            "epoch_time_s": row["epoch_time_s"], "val_macro_f1": final["val_macro_f1"], "run_dir": final["run_dir"]}


def m_predict(work, videos, frames, run_dir):
    from trainer.data import read_sides, split_videos
    from trainer.predict import Predictor

    cfg = _config(work, videos, frames)
    pred = Predictor.load(run_dir)
    pred.cfg = cfg  # the bench reader + the same store
    recs, n = read_sides(cfg)
    _, val = split_videos(recs, n, cfg)
    del recs
    t0 = time.perf_counter()
    probs = pred.probabilities(val, batch_size=256)
    return {"seconds": time.perf_counter() - t0, "peak_rss_mb": _rss_mb(), "videos": len(val),
            "frames": int(sum(p.shape[0] for per in probs for p in per))}


MEASURES = {"featurise": m_featurise, "reference": m_reference, "warm": m_warm, "train": m_train,
            "predict": m_predict}


def run_child(kind: str, *args) -> dict:
    """One measurement in a fresh interpreter (own peak RSS); returns its JSON result."""
    env = dict(os.environ, TQDM_DISABLE="1")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, *map(str, args)]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} {args} failed:\n{out.stderr[-3000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"  {kind:<10} {args} -> {json.dumps({k: v for k, v in res.items() if k != 'run_dir'})}", flush=True)
    return res


def bench(scales: list[int], base_videos: int, frames_per_scale: list[int], work: Path, two_workers_max: int) -> dict:
    os.environ["BENCH_SCALE_WORK"], os.environ["BENCH_SCALE_BASE"] = str(work), str(base_videos)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for s, frames in zip(scales, frames_per_scale):
        v = base_videos * s
        row = {"scale": s, "videos": v, "frames_per_video": frames}
        print(f"scale {s}x: {v} videos x {frames} frames", flush=True)
        if s == min(scales):
            row["reference"] = run_child("reference", work, v, frames)
        if s <= two_workers_max:
            row["featurise_1"] = run_child("featurise", work, v, frames, 1)
        row["featurise_2"] = run_child("featurise", work, v, frames, 2)
        row["warm"] = run_child("warm", work, v, frames)
        # the same number of training windows per epoch at every scale (window starts s times
        # further apart): every video is still opened, indexed and in the fitted statistics
        row["window_stride"] = WINDOW_STRIDE * s
        row["train_store"] = run_child("train", work, v, frames, "store", row["window_stride"])
        if s == min(scales):
            row["train_memory"] = run_child("train", work, v, frames, "memory", row["window_stride"])
            for side in ("store", "memory"):
                row[f"train_{side}_default_model"] = run_child("train", work, v, frames, side, row["window_stride"],
                                                               "default")
        row["predict"] = run_child("predict", work, v, frames, row["train_store"]["run_dir"])
        rows.append(row)
        shutil.rmtree(work / "runs", ignore_errors=True)
    return {"host": platform.node(), "cpus": os.cpu_count(), "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "rows": rows, "targets": targets(rows)}


def targets(rows: list[dict]) -> dict:
    one, big = rows[0], rows[-1]
    out = {}
    out["note"] = "scales: " + ", ".join(f"{r['scale']}x = {r['videos']} videos x {r['frames_per_video']} frames"
                                         for r in rows)
    out["train_rss_ratio_largest_vs_1x"] = big["train_store"]["peak_rss_mb"] / one["train_store"]["peak_rss_mb"]
    out["train_rss_largest_mb"] = big["train_store"]["peak_rss_mb"]
    out["warm_vs_cold"] = max(r["warm"]["seconds"] / r["featurise_2"]["seconds"] for r in rows)
    both = [r for r in rows if "featurise_1" in r]
    out["two_vs_one_worker"] = min(r["featurise_1"]["seconds"] / r["featurise_2"]["seconds"] for r in both)
    # informational: the per-pair path runs today's (already faster) feature functions too
    out["one_worker_vs_per_pair_path"] = one["featurise_1"]["pair_frames_per_s"] / one["reference"]["pair_frames_per_s"]
    # the target's "today" is the code before the store: benchmarks/featurise_vs_prestore.py
    prestore = RESULTS / "featurise_vs_prestore.json"
    out["one_worker_vs_prestore"] = (json.loads(prestore.read_text())["store_vs_prestore"]
                                     if prestore.is_file() else None)
    out["store_vs_memory_samples_per_s"] = one["train_store"]["samples_per_s"] / one["train_memory"]["samples_per_s"]
    out["store_vs_memory_default_model"] = (one["train_store_default_model"]["samples_per_s"]
                                            / one["train_memory_default_model"]["samples_per_s"])
    out["met"] = {
        "train_rss_flat (<=1.25x, <=3 GB)": out["train_rss_ratio_largest_vs_1x"] <= 1.25 and out["train_rss_largest_mb"] <= 3072,
        "warm_startup (<=10% of cold)": out["warm_vs_cold"] <= 0.10,
        "two_workers (>=1.7x)": out["two_vs_one_worker"] >= 1.7,
        "one_worker_vs_today (>=2x, featurise_vs_prestore.json)": (
            "not measured" if out["one_worker_vs_prestore"] is None else out["one_worker_vs_prestore"] >= 2.0),
        "store_vs_memory (>=0.95x)": out["store_vs_memory_samples_per_s"] >= 0.95,
        "store_vs_memory, default model (>=0.95x)": out["store_vs_memory_default_model"] >= 0.95,
    }
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    rows = result["rows"]
    x = [r["videos"] for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ax[0].plot(x, [r["train_store"]["peak_rss_mb"] for r in rows], "o-", label="train() peak RSS")
    ax[0].plot(x, [r["predict"]["peak_rss_mb"] for r in rows], "s-", label="predict peak RSS (val videos)")
    ax[0].plot(x, [r["featurise_2"]["store_bytes"] / 2**20 for r in rows], "^--", label="store size")
    ax[0].set_xscale("log")
    ax[0].set_yscale("log")
    ax[0].set_xlabel("videos")
    ax[0].set_ylabel("MB")
    ax[0].legend()
    ax[1].plot(x, [r["featurise_2"]["seconds"] for r in rows], "o-", label="cold featurise (2 workers)")
    ax[1].plot([r["videos"] for r in rows if "featurise_1" in r],
               [r["featurise_1"]["seconds"] for r in rows if "featurise_1" in r], "s-", label="cold featurise (1 worker)")
    ax[1].plot(x, [r["warm"]["seconds"] for r in rows], "^-", label="warm start-up")
    ax[1].set_xscale("log")
    ax[1].set_yscale("log")
    ax[1].set_xlabel("videos")
    ax[1].set_ylabel("seconds")
    ax[1].legend()
    for a in ax:  # label the measured data-set sizes only
        a.set_xticks(x, [str(v) for v in x])
        a.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    fig.suptitle(f"feature store at scale ({result['host']}, {result['cpus']} CPUs)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scales", default="1,4,16")
    p.add_argument("--base-videos", type=int, default=25)
    p.add_argument("--frames", default="1000", help="frames per video; one value, or one per scale")
    p.add_argument("--two-workers-max", type=int, default=4, help="largest scale also featurised with 1 worker")
    p.add_argument("--work", default="/tmp/bench_scale")
    p.add_argument("--out", default=str(RESULTS / "scale_cpu.json"))
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        import logging

        logging.basicConfig(level=logging.WARNING)
        kind, work, *rest = args.child
        os.environ.setdefault("BENCH_SCALE_WORK", work)
        conv = [int(x) if x.isdigit() else x for x in rest]
        print(json.dumps(MEASURES[kind](Path(work), *conv)))
        return 0
    scales = [int(s) for s in args.scales.split(",")]
    frames = [int(f) for f in args.frames.split(",")]
    frames = frames * len(scales) if len(frames) == 1 else frames
    result = bench(scales, args.base_videos, frames, Path(args.work), args.two_workers_max)
    Path(args.out).write_text(json.dumps(result, indent=1))
    plot(result, Path(args.out).with_suffix(".png"))
    print(json.dumps(result["targets"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
