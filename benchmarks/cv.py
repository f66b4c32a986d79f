"""k-fold cross-validation by video of any config, through the project's own train(): mean +- std per class.

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/cv.py --config configs/rat46_base.yaml \
        --out benchmarks/results/rat46_cv_gbdt.json model_type=gbdt \
        data.path=../shared/data/rat46/dlc data.annotation_path=../shared/data/rat46/annot

Runs `trainer.run.train()` once per fold with `data.split=kfold data.num_folds=K
data.fold=i data.split_seed=S` (every video is validated exactly once), each into its own
run directory under --runs, and writes a JSON with every fold's per-class F1, macro F1,
fit/wall/CPU time (CPU time: this process's, a fairer measure on a shared
machine) and the mean +- std (sample std, ddof=1) over folds. Works for the networks
and the GBDT alike. With --evaluate the best checkpoint of each fold is also re-scored
through `trainer.evaluate` (the predict path) and both numbers are kept.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from trainer.config import make_config  # noqa: E402


def mean_std(values: list[float]) -> dict:
    vals = [v for v in values if v is not None]
    return {"mean": statistics.fmean(vals) if vals else None,
            "std": statistics.stdev(vals) if len(vals) > 1 else 0.0, "n": len(vals)}


def run_fold(config: str | None, overrides: list[str], *, folds: int, fold: int, seed: int, runs: Path,
             name: str, evaluate: bool) -> dict:
    """Train fold `fold` and return its scores (per-class F1, macro F1, times)."""
    from trainer.run import train

    cfg = make_config(config, [*overrides, "data.split=kfold", f"data.num_folds={folds}", f"data.fold={fold}",
                               f"data.split_seed={seed}", f"output_dir={runs}", f"name={name}-fold{fold}"])
    t0, c0 = time.perf_counter(), time.process_time()
    final = train(cfg)
    gbdt = final.get("gbdt") or {}
    row = {"fold": fold, "macro_f1": final["val_macro_f1"], "f1": final["f1"], "support": final["support"],
           "fit_time_s": gbdt.get("fit_time_s", final["train_time_s"]), "fit_cpu_s": gbdt.get("fit_cpu_s"),
           "wall_time_s": time.perf_counter() - t0, "cpu_time_s": time.process_time() - c0,
           "run_dir": final["run_dir"]}
    if evaluate:
        from trainer.evaluate import evaluate_checkpoint

        ev = evaluate_checkpoint(final["checkpoint"])["raw"]["frames"]
        row["evaluate"] = {"macro_f1": ev["macro_f1"], "f1": ev["f1"]}
    return row


def summarise(rows: list[dict], background: str) -> dict:
    classes = [c for c in rows[0]["f1"] if c != background and any(r["f1"][c] is not None for r in rows)]
    return {
        "macro_f1": mean_std([r["macro_f1"] for r in rows]),
        "f1": {c: mean_std([r["f1"][c] for r in rows]) for c in classes},
        "fit_time_s": mean_std([r["fit_time_s"] for r in rows]),
        "fit_cpu_s": mean_std([r["fit_cpu_s"] for r in rows]),
        "wall_time_s": mean_std([r["wall_time_s"] for r in rows]),
        "cpu_time_s": mean_std([r["cpu_time_s"] for r in rows]),
    }


def merge(paths: list[str], out: Path) -> int:
    """One result from several --only runs of the same config: folds concatenated, summary recomputed."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    keys = {json.dumps([r["config"], r["overrides"], r["folds"], r["split_seed"]]) for r in parts}
    if len(keys) != 1:
        raise SystemExit("error: --merge needs outputs of the same config, overrides, folds and split seed")
    rows = sorted((row for r in parts for row in r["per_fold"]), key=lambda row: row["fold"])
    if len({row["fold"] for row in rows}) != len(rows):
        raise SystemExit("error: --merge got the same fold twice")
    cfg = make_config(parts[0]["config"], parts[0]["overrides"])
    result = dict(parts[0], summary=summarise(rows, cfg.data.background_class), per_fold=rows,
                  command=[r["command"] for r in parts], env=[r["env"] for r in parts])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    log_summary(result["summary"], len(rows))
    return 0


def log_summary(s: dict, n: int) -> None:
    logging.info("macro F1 %.3f +- %.3f over %d folds; %s", s["macro_f1"]["mean"], s["macro_f1"]["std"], n,
                 "  ".join(f"{c} {v['mean']:.3f} +- {v['std']:.3f}" for c, v in s["f1"].items()))


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", help="YAML config (as for trainer/run.py)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--only", type=int, nargs="*", help="run only these folds (the JSON then holds only them)")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--runs", default=str(ROOT / "runs" / "cv"), help="parent of the per-fold run directories")
    p.add_argument("--name", default=time.strftime("cv-%Y%m%d-%H%M%S"), help="run name prefix")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--evaluate", action="store_true", help="also re-score each fold's checkpoint via trainer.evaluate")
    p.add_argument("--merge", nargs="+", metavar="JSON",
                   help="instead of training: merge the per-fold rows of these outputs (folds run as separate "
                        "processes with --only) into --out")
    p.add_argument("overrides", nargs="*", help="key=value config overrides (as for trainer/run.py)")
    args = p.parse_args(argv)
    if args.merge:
        return merge(args.merge, Path(args.out))
    cfg = make_config(args.config, args.overrides)  # fail on a bad key before any fold runs
    rows = []
    for fold in args.only if args.only is not None else range(args.folds):
        rows.append(run_fold(args.config, args.overrides, folds=args.folds, fold=fold, seed=args.split_seed,
                             runs=Path(args.runs), name=args.name, evaluate=args.evaluate))
        logging.info("fold %d: macro F1 %.3f  %s  (fit %.0f s)", fold, rows[-1]["macro_f1"],
                     " ".join(f"{c}={v:.3f}" for c, v in rows[-1]["f1"].items() if v is not None),
                     rows[-1]["fit_time_s"])
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]) if argv is None else " ".join(argv),
        "config": args.config, "overrides": args.overrides, "folds": args.folds, "split_seed": args.split_seed,
        "summary": summarise(rows, cfg.data.background_class), "per_fold": rows,
        "env": {"host": platform.node(), "cpu": platform.processor() or platform.machine(),
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "load_avg": os.getloadavg(),
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S")},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    log_summary(result["summary"], len(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
