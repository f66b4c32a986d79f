"""Training it/s and peak memory vs batch size, per model, device and precision.

    python benchmarks/plot.py                                  # results/*.json -> results/throughput.png
    python benchmarks/plot.py --results results/cpu-*.json --out /tmp/cpu.png --include-quick

Top row: it/s (log scale); bottom row: peak memory (GPU: max allocated, solid; CPU: peak RSS,
dashed). One column per model; one line per (device, precision actually used, model size,
sequence length). The newest record of each point wins.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.check_claims import RESULTS, load_records  # noqa: E402


def series(records: list[dict], include_quick: bool = False) -> dict:
    """{model: {(device_name, precision, size, seq_len, threads): {batch: record}}}, newest record per point."""
    out: dict = {}
    for r in sorted(records, key=lambda r: r.get("timestamp", "")):
        if r.get("suite") != "model" or r.get("status") != "ok" or (r.get("quick") and not include_quick):
            continue
        threads = r.get("env", {}).get("torch_threads") if r.get("device") == "cpu" else None
        key = (r["device_name"], r["precision_used"], r.get("model_size", ""), r["seq_len"], threads)
        out.setdefault(r["model"], {}).setdefault(key, {})[r["batch_size"]] = r
    return out


def label(key) -> str:
    name, precision, size, seq_len, threads = key
    cpu = f", {threads} thr" if threads else ""
    return f"{name}{cpu} {precision} ({size}, T={seq_len})"


def plot(records: list[dict], out: Path, include_quick: bool = False) -> Path | None:
    data = series(records, include_quick)
    if not data:
        print("no model-suite records to plot (run benchmarks/bench_train.py first)")
        return None
    models = sorted(data)
    fig, axes = plt.subplots(2, len(models), figsize=(5.5 * len(models), 7.5), squeeze=False)
    for j, m in enumerate(models):
        top, bottom = axes[0][j], axes[1][j]
        for key, pts in sorted(data[m].items()):
            bs = sorted(pts)
            line = top.plot(bs, [pts[b]["it_per_s"] for b in bs], marker="o", label=label(key))[0]
            gpu = [b for b in bs if "peak_gpu_mem_allocated_mb" in pts[b]]
            if gpu:
                bottom.plot(gpu, [pts[b]["peak_gpu_mem_allocated_mb"] for b in gpu], marker="o", color=line.get_color())
            cpu = [b for b in bs if "peak_gpu_mem_allocated_mb" not in pts[b] and "peak_cpu_rss_mb" in pts[b]]
            if cpu:
                bottom.plot(cpu, [pts[b]["peak_cpu_rss_mb"] for b in cpu], marker="s", ls="--", color=line.get_color())
        for ax in (top, bottom):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("batch size (windows)")
            ax.grid(True, which="both", alpha=0.3)
        top.set_yscale("log")
        top.set_title(m)
        top.set_ylabel("training it/s (median)")
        bottom.set_ylabel("peak memory, MB (GPU alloc solid, CPU RSS dashed)")
        top.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/plot.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--results", nargs="*", help="result JSON files (default benchmarks/results/*.json)")
    p.add_argument("--out", default=str(RESULTS / "throughput.png"))
    p.add_argument("--include-quick", action="store_true", help="also plot --quick runs")
    args = p.parse_args(argv)
    path = plot(load_records(args.results), Path(args.out), args.include_quick)
    if path:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
