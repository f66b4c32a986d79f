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

Layout: this file is the CLI; each suite is benchmarks/suites/<suite>.py (the pipeline suites share
benchmarks/suites/common.py), timers and the results file are benchmarks/measure.py, and the
console lines share benchmarks/report.py with `benchmarks/plot.py --markdown`.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `trainer` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import datetime
import itertools
import logging
import os
import uuid

import torch

from benchmarks.measure import (
    DTYPES,
    append_results,
    device_name,
    device_slug,
    environment,
    pick_device,
    quiet,
)
from benchmarks.report import summary_line
from benchmarks.suites.common import make_pipeline
from benchmarks.suites.features import bench_features
from benchmarks.suites.loader import bench_loader
from benchmarks.suites.model import SEED_CONFIGS, bench_model, bench_params, feature_dim
from benchmarks.suites.overhead import bench_overhead
from benchmarks.suites.predict import bench_predict
from benchmarks.suites.scaling import bench_scaling
from trainer.config import make_config
from trainer.models import MODELS

__all__ = ["append_results", "build_parser", "main", "run_benchmarks"]  # append_results: modal_cluster.py, docs

# the suites that share one prepared training config, in the order they run
PIPELINE_SUITES = {"overhead": bench_overhead, "features": bench_features, "loader": bench_loader,
                   "predict": bench_predict, "scaling": bench_scaling}
SUITES = ("model", *PIPELINE_SUITES)
PIPELINE = SUITES[1:]


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
        for s in opts.suite:
            if s in PIPELINE_SUITES:
                out = PIPELINE_SUITES[s](pipe, opts)
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
