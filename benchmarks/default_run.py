"""The README's numbers: the default run (`python trainer/run.py`) measured on this machine.

    python benchmarks/default_run.py                   # default run + the per-frame MLP baseline
    python benchmarks/default_run.py --threads 1       # on a shared machine: one thread, steadier times
    python benchmarks/default_run.py --models conv_bilstm

Runs the README's command as a subprocess (so the wall time includes start-up and data
generation), once per model, into a temporary directory, and writes
benchmarks/results/default_run.json: date, machine, threads, versions, and per model the best
epoch, per-class F1, macro F1, wall time and peak memory. tests/test_readme.py checks that the
README quotes these numbers (`--markdown` prints the README's table from the file).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: benchmarks/ is sys.path[0], the repo root is not
    sys.path.insert(0, str(ROOT))
from benchmarks.machine import cpu_name  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "default_run.json"
SWEEP = ROOT / "benchmarks" / "results" / "tune_sweep_cpu.json"  # written by benchmarks/tune_sweep_cpu.py


def run_once(model: str, threads: int, tmp: Path) -> dict:
    """One `python trainer/run.py model_type=<model>`; its metrics.json and env.json, plus the wall time."""
    cmd = [sys.executable, "trainer/run.py", f"model_type={model}", f"output_dir={tmp}", f"name={model}"]
    if threads:
        cmd.append(f"threads={threads}")
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True)
    wall = time.perf_counter() - t0
    final = json.loads((tmp / model / "metrics.json").read_text())
    env = json.loads((tmp / model / "env.json").read_text())
    rows = [json.loads(line) for line in (tmp / model / "metrics.jsonl").read_text().splitlines()]
    return {
        "command": " ".join(["python", "trainer/run.py", *cmd[2:3], *cmd[5:]]),
        "best_epoch": final["best_epoch"],
        "epochs_run": final["epochs_run"],
        "val_macro_f1": round(final["val_macro_f1"], 4),
        "f1": {c: (None if v is None else round(v, 4)) for c, v in final["f1"].items()},
        "support": final["support"],
        "command_wall_s": round(wall, 1),
        "train_wall_s": round(final["wall_time_s"], 1),
        "peak_rss_mb": round(max(r["peak_mem_mb"] for r in rows)),
        "parameters": env["parameters"],
        "threads": env.get("threads"),
        "precision_used": env["precision_used"],
        "git_sha": env["git_sha"],
    }


def readme_table(result: dict, sweep: dict | None = None) -> str:
    """The README's table of measured numbers, from default_run.json (and tune_sweep_cpu.json)."""
    ref = result["runs"]["conv_bilstm"]
    m = result["machine"]
    threads = ref["threads"]
    f1 = ", ".join(f"{c} {v:.3f}" for c, v in ref["f1"].items() if v is not None)
    lines = [
        "| what | measured |",
        "|---|---|",
        f"| default run (`python trainer/run.py`): val macro F1 of the best epoch | **{ref['val_macro_f1']:.3f}** "
        f"(epoch {ref['best_epoch']} of {ref['epochs_run']}) |",
        f"| frame F1 per class | {f1} |",
        f"| wall time of the whole command / inside `train()`, peak memory | {ref['command_wall_s']:.0f} s / "
        f"{ref['train_wall_s']:.0f} s, {ref['peak_rss_mb'] / 1024:.2f} GB RSS |",
    ]
    if "per_frame_mlp" in result["runs"]:
        mlp = result["runs"]["per_frame_mlp"]
        lines.append(f"| per-frame MLP (no temporal context), same features and budget: val macro F1 | "
                     f"{mlp['val_macro_f1']:.3f} (vs {ref['val_macro_f1']:.3f}) |")
    if sweep is not None:
        sw, base, best = sweep["sweep"], sweep["default_config"], sweep["best_trial"]
        lines.append(f"| 8-trial ASHA sweep of the default config (`benchmarks/tune_sweep_cpu.py`, "
                     f"{sweep['machine']['cpus']} cores) | {sw['wall_time_s']:.0f} s wall, ASHA ran {sw['epochs_run']} "
                     f"of {sw['epochs_without_asha']} epochs; best sampled config {best['val_macro_f1']:.3f} vs "
                     f"the default config {base['val_macro_f1']:.3f} (that benchmark's own run, 2 threads) |")
    lines.append("")
    load = m.get("load_average_1min")
    busy = f", load average {load['before']:g}–{load['after']:g} from other jobs" if load else ""
    lines.append(f"Measured {result['date']} on {m['cpu']} ({m['cores']} cores, no GPU{busy}), "
                 f"{threads} torch thread{'s' if threads != 1 else ''}, {ref['precision_used']}, "
                 f"by `{result['generated_by']}` → `benchmarks/results/default_run.json`.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/default_run.py", description=__doc__.splitlines()[0])
    p.add_argument("--models", default="conv_bilstm,per_frame_mlp", help="model_type values, comma-separated")
    p.add_argument("--threads", type=int, default=0, help="the trainer's threads key (0: torch's choice)")
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--markdown", action="store_true", help="print the README's table from the saved results")
    args = p.parse_args(argv)
    if args.markdown:
        sweep = json.loads(SWEEP.read_text()) if SWEEP.is_file() else None
        print(readme_table(json.loads(Path(args.out).read_text()), sweep))
        return 0
    runs = {}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="default-run-") as tmp:
        for model in args.models.split(","):
            runs[model] = run_once(model, args.threads, Path(tmp))
    result = {
        "what": "the default run (python trainer/run.py: embedded synthetic data, 12 epochs) per model",
        "generated_by": "python benchmarks/default_run.py" + (f" --threads {args.threads}" if args.threads else ""),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    # other jobs on the machine slow the wall times down (not the scores)
                    "load_average_1min": {"before": round(load_before[0], 1), "after": round(os.getloadavg()[0], 1)}},
        "runs": runs,
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
