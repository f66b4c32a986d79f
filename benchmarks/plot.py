"""Training it/s and peak memory vs batch size, per model, device and precision.

    python benchmarks/plot.py                                  # results/*.json -> results/throughput.png
    python benchmarks/plot.py --results results/cpu-*.json --out /tmp/cpu.png --include-quick
    python benchmarks/plot.py --markdown                       # the same results as Markdown tables

Top row: it/s (log scale); bottom row: peak memory (GPU: max allocated, solid; CPU: peak RSS,
dashed; the axis label names only the kinds present). One column per model; one line per (device, precision actually used, model size,
sequence length). The newest record of each point wins.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullLocator  # noqa: E402

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import report  # noqa: E402
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
    size = {"seed": "preset size"}.get(size, size)  # bench_train's "seed": the two reference presets' sizes
    return f"{name}{cpu} {precision} ({size}, T={seq_len})"


def _plain_log_axis(axis, ticks: list[float] | None = None) -> None:
    """Log axis labelled with plain numbers (16, 64, 0.5) instead of 2^5 / 6x10^0, no unlabelled minor ticks.

    ticks: where to put them (the batch sizes measured); default 1-2-5 steps.
    """
    if ticks is not None:
        axis.set_major_locator(FixedLocator(ticks))
    else:
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_locator(NullLocator())


def memory_label(gpu: bool, cpu: bool) -> str:
    """Y label of a memory panel naming only the kinds of curve it holds."""
    kinds = [k for k, present in (("GPU max allocated, solid", gpu), ("CPU peak RSS, dashed", cpu)) if present]
    return f"peak memory, MB ({'; '.join(kinds)})"


def figure(records: list[dict], include_quick: bool = False):
    """Top row it/s, bottom row peak memory; one column per model. None without model-suite records."""
    data = series(records, include_quick)
    if not data:
        return None
    models = sorted(data)
    fig, axes = plt.subplots(2, len(models), figsize=(5.5 * len(models), 7.5), squeeze=False)
    for j, m in enumerate(models):
        top, bottom = axes[0][j], axes[1][j]
        has_gpu = has_cpu = False
        for key, pts in sorted(data[m].items()):
            bs = sorted(pts)
            line = top.plot(bs, [pts[b]["it_per_s"] for b in bs], marker="o", label=label(key))[0]
            gpu = [b for b in bs if "peak_gpu_mem_allocated_mb" in pts[b]]
            if gpu:
                bottom.plot(gpu, [pts[b]["peak_gpu_mem_allocated_mb"] for b in gpu], marker="o",
                            color=line.get_color(), label=f"{label(key)}, GPU")
            cpu = [b for b in bs if "peak_gpu_mem_allocated_mb" not in pts[b] and "peak_cpu_rss_mb" in pts[b]]
            if cpu:
                bottom.plot(cpu, [pts[b]["peak_cpu_rss_mb"] for b in cpu], marker="s", ls="--",
                            color=line.get_color(), label=f"{label(key)}, CPU RSS")
            has_gpu, has_cpu = has_gpu or bool(gpu), has_cpu or bool(cpu)
        batches = sorted({b for pts in data[m].values() for b in pts})
        for ax in (top, bottom):
            ax.set_xscale("log", base=2)
            _plain_log_axis(ax.xaxis, batches)
            ax.set_xlabel("batch size (windows)")
            ax.grid(True, which="major", alpha=0.3)
            ax.legend(fontsize=7)
        top.set_yscale("log")
        _plain_log_axis(top.yaxis)
        top.set_title(m)
        top.set_ylabel("training it/s (median)")
        bottom.set_ylabel(memory_label(has_gpu, has_cpu))
    fig.tight_layout()
    return fig


def plot(records: list[dict], out: Path, include_quick: bool = False) -> Path | None:
    fig = figure(records, include_quick)
    if fig is None:
        print("no model-suite records to plot (run benchmarks/bench_train.py first)")
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def markdown_tables(records: list[dict], include_quick: bool = False) -> str:
    """The newest model-suite point per series and the newest pipeline records, as Markdown tables."""
    lines = ["| device | threads | model | size | batch | T | precision | it/s | samples/s | frames/s | "
             "it/s per CPU-s | peak mem (MB) | params |", "|" + "---|" * 13]
    for m, by_key in sorted(series(records, include_quick).items()):
        for key, pts in sorted(by_key.items()):
            for b, r in sorted(pts.items()):
                cells = [key[0], key[4] or "-", m, key[2], b, key[3], key[1], *report.model_cells(r)]
                lines.append("| " + " | ".join(map(str, cells)) + " |")
    newest: dict = {}
    for r in sorted(records, key=lambda r: r.get("timestamp", "")):
        if r.get("suite") in report.RESULTS and (include_quick or not r.get("quick")):
            extra = r.get("num_workers") if r["suite"] == "loader" else r.get("video_frames")
            key = (r["device_name"], r.get("env", {}).get("torch_threads"), r["suite"], r.get("config"), extra)
            newest[key] = r
    lines += ["", "| device | threads | suite | config | result |", "|---|---|---|---|---|"]
    for (dev, thr, suite, cfg, _), r in sorted(newest.items(), key=lambda kv: [str(x) for x in kv[0]]):
        lines.append(f"| {dev} | {thr} | {suite} | {cfg} | {report.result(r, report.bold)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/plot.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--results", nargs="*", help="result JSON files (default benchmarks/results/*.json)")
    p.add_argument("--out", default=str(RESULTS / "throughput.png"))
    p.add_argument("--include-quick", action="store_true", help="also plot --quick runs")
    p.add_argument("--markdown", action="store_true", help="print the results as Markdown tables instead of plotting")
    args = p.parse_args(argv)
    if args.markdown:
        print(markdown_tables(load_records(args.results), args.include_quick))
        return 0
    path = plot(load_records(args.results), Path(args.out), args.include_quick)
    if path:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
