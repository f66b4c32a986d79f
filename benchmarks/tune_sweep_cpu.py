"""Measure a Ray Tune sweep on this machine: overhead, epochs ASHA saved, best vs default, reproduction.

    python benchmarks/tune_sweep_cpu.py                       # 8 ASHA trials of configs/default.yaml
    python benchmarks/tune_sweep_cpu.py --num-samples 4 epochs=6

Runs, one after the other: the default config (trainer/run.py), the sweep (tune.py over
search_spaces/default.yaml), and the sweep's best.yaml (trainer/run.py). Writes
benchmarks/results/tune_sweep_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(cmd: list[str]) -> float:
    """Run `cmd` from the repo root (output to the console); wall seconds. Fails loudly."""
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True)
    return time.perf_counter() - t0


def epochs_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/default.yaml")
    p.add_argument("--space", default="search_spaces/default.yaml")
    p.add_argument("--num-samples", type=int, default=8)
    p.add_argument("--out", default=str(ROOT / "runs" / "bench_tune"), help="scratch directory for the runs")
    p.add_argument("overrides", nargs="*", help="key=value overrides for all three (e.g. epochs=6)")
    args = p.parse_args()
    out = Path(args.out).resolve()
    name = time.strftime("%Y%m%d-%H%M%S")
    py = sys.executable
    load = {"before": os.getloadavg()}

    default_wall = timed([py, "trainer/run.py", "--config", args.config, *args.overrides,
                          f"output_dir={out}", f"name=default-{name}"])
    default = json.loads((out / f"default-{name}" / "metrics.json").read_text())
    load["after_default"] = os.getloadavg()

    sweep_wall = timed([py, "tune.py", "--config", args.config, "--space", args.space,
                        "--num-samples", str(args.num_samples), "--storage", str(out), "--name", f"sweep-{name}",
                        *args.overrides])
    sweep_dir = out / f"sweep-{name}"
    summary = json.loads((sweep_dir / "trials.json").read_text())
    trials = summary["trials"]
    sweep_cfg = json.loads((sweep_dir / "sweep.json").read_text())
    max_epochs = sweep_cfg["base"]["epochs"]
    load["after_sweep"] = os.getloadavg()

    rerun_wall = timed([py, "trainer/run.py", "--config", str(sweep_dir / "best.yaml"),
                        f"output_dir={out}", f"name=best-{name}"])
    rerun = json.loads((out / f"best-{name}" / "metrics.json").read_text())
    load["after_rerun"] = os.getloadavg()

    per_trial = []
    for t in trials:
        rows = epochs_of(Path(t["run_dir"])) if (Path(t["run_dir"]) / "metrics.jsonl").is_file() else []
        per_trial.append({**{k: t[k] for k in ("trial", "status", "epochs", "val_macro_f1", "time_s", "params")},
                          "train_time_s": sum(r["epoch_time_s"] for r in rows)})
    trial_s = sum(t["time_s"] or 0 for t in per_trial)
    epochs_run = sum(t["epochs"] for t in per_trial)
    cpus_per_trial = sweep_cfg["options"]["cpus_per_trial"]
    concurrency = max(1, int((os.cpu_count() or 1) // cpus_per_trial))
    best = trials[0]
    result = {
        "what": f"{args.num_samples}-trial ASHA sweep of {args.config} over {args.space} on {os.cpu_count()} CPU cores",
        "overrides": args.overrides,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average_1_5_15": load},
        "sweep": {
            "wall_time_s": round(sweep_wall, 1),  # tune.py process: Ray start, trials, table, best.yaml
            "tune_fit_wall_time_s": round(summary["wall_time_s"], 1),  # Tuner.fit() only
            "sum_of_trial_times_s": round(trial_s, 1),  # Ray time_total_s: worker setup + data + epochs
            "sum_of_trial_epoch_times_s": round(sum(t["train_time_s"] for t in per_trial), 1),
            "concurrent_trials": concurrency,
            "overhead_vs_ideal": round(sweep_wall / (trial_s / concurrency) - 1, 3),
            "epochs_run": epochs_run,
            "epochs_without_asha": max_epochs * len(trials),
            "epochs_saved_by_asha": max_epochs * len(trials) - epochs_run,
            "trials": per_trial,
        },
        "default_config": {"val_macro_f1": default["val_macro_f1"], "best_epoch": default["best_epoch"],
                           "wall_time_s": round(default_wall, 1)},
        "best_trial": {"trial": best["trial"], "val_macro_f1": best["val_macro_f1"], "params": best["params"]},
        "best_yaml_rerun": {"val_macro_f1": rerun["val_macro_f1"], "best_epoch": rerun["best_epoch"],
                            "wall_time_s": round(rerun_wall, 1)},
        "best_minus_default_f1": round(best["val_macro_f1"] - default["val_macro_f1"], 4),
        "rerun_minus_trial_f1": round(rerun["val_macro_f1"] - best["val_macro_f1"], 4),
    }
    path = ROOT / "benchmarks" / "results" / "tune_sweep_cpu.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "sweep"}, indent=1))
    print(json.dumps({k: v for k, v in result["sweep"].items() if k != "trials"}, indent=1))
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
