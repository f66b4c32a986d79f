"""How a benchmark record reads: one formatter per suite, shared by the harness's console lines
(benchmarks/bench_train.py) and the Markdown tables (`benchmarks/plot.py --markdown`).

A formatter takes the record and `em`, which marks the headline number: `bold` in Markdown,
`plain` on the console. Records are the dicts benchmarks/suites/*.py return (keys in
docs/benchmarks.md).
"""

from __future__ import annotations

import json


def plain(text: str) -> str:
    return text


def bold(text: str) -> str:
    return f"**{text}**"


# ---------------------------------------------------------------------------- model suite


def memory(r: dict) -> str:
    """Peak memory of a model-suite record in MB: GPU allocated / reserved when measured, else CPU RSS."""
    mem = r.get("peak_gpu_mem_allocated_mb")
    return f"{mem:,.0f} GPU alloc / {r['peak_gpu_mem_reserved_mb']:,.0f} res" if mem else f"{r['peak_cpu_rss_mb']:,.0f} RSS"


def model_cells(r: dict) -> list[str]:
    """it/s, samples/s, frames/s, it/s per CPU-second (CPU only), peak memory (MB), parameters."""
    per_cpu = r.get("it_per_cpu_s") or (r["it_per_s"] / r["cpu_share"] if r.get("device") == "cpu" else None)
    return [f"{r['it_per_s']:.3g}", f"{r['samples_per_s']:.3g}", f"{r['frames_per_s']:,.0f}",
            f"{per_cpu:.3g}" if per_cpu else "-", memory(r), f"{r['parameters']:,}"]


def model_line(r: dict) -> str:
    """One aligned console row per timed (model, batch, precision)."""
    mem = (f"gpu {r['peak_gpu_mem_allocated_mb']:.0f}/{r['peak_gpu_mem_reserved_mb']:.0f} MB alloc/res"
           if "peak_gpu_mem_allocated_mb" in r else f"rss {r['peak_cpu_rss_mb']:.0f} MB")
    return (f"{r['model']:12s} b{r['batch_size']:<4d} T{r['seq_len']} {r['precision_used']:5s} "
            f"{r['it_per_s']:8.2f} it/s {r['samples_per_s']:9.1f} samples/s {r['frames_per_s']:10.0f} frames/s  "
            f"{mem}  {r['parameters']:,} params")


def params_line(r: dict) -> str:
    return f"{r['model']:12s} seed architecture, input {r['input_dim']}: {r['parameters']:,} parameters"


# ---------------------------------------------------------------------------- pipeline suites


def overhead(r: dict, em=plain) -> str:
    return (f"trainer {r['trainer_it_per_s']:.3g} it/s vs bare {r['bare_it_per_s']:.3g} it/s: ratio "
            f"{em(format(r['overhead_ratio'], '.3f'))} (IQR {r['overhead_ratio_iqr'][0]:.2f}-{r['overhead_ratio_iqr'][1]:.2f}; "
            f"CPU-time {r['overhead_ratio_cpu']:.3f}), batch {r['batch_size']}, workers {r['num_workers']}")


def loader(r: dict, em=plain) -> str:
    return (f"{r['windows_per_s']:,.0f} windows/s vs model {r['model_samples_per_s']:,.0f}/s: ratio "
            f"{em(format(r['loader_ratio'], '.1f'))}, workers {r['num_workers']}")


def features(r: dict, em=plain) -> str:
    return (f"{em(format(r['frames_per_s'], ',.0f'))} pair-frames/s (transform), {r['fit_frames_per_s']:,.0f} (fit), "
            f"{r['feature_dim']} features")


def predict(r: dict, em=plain) -> str:
    ratio = f"; 2x frames -> {em(format(r['scaling_ratio'], '.2f') + 'x')} time" if "scaling_ratio" in r else ""
    return (f"{r['video_frames']} frames: {em(format(r['frames_per_s'], ',.0f'))} frames/s ({r['feature_s']:.2f} s of "
            f"{r['time_s']:.2f} s features){ratio}")


def scaling(r: dict, em=plain) -> str:
    cpu = f" (CPU-time {r['scaling_ratio_cpu']:.2f})" if "scaling_ratio_cpu" in r else ""
    return (f"{r['videos']} -> {2 * r['videos']} videos: {r['time_s']:.1f} s -> {r['time_2x_s']:.1f} s, "
            f"ratio {em(format(r['scaling_ratio'], '.2f'))}{cpu}")


# suite -> its result in words (the Markdown table's "result" column, the console line's body)
RESULTS = {"overhead": overhead, "loader": loader, "features": features, "predict": predict, "scaling": scaling}
# suites whose console line has its own layout
LINES = {"model": model_line, "params": params_line}


def result(r: dict, em=plain) -> str:
    """A pipeline-suite record's result in words; "" for a suite without one."""
    fmt = RESULTS.get(r["suite"])
    return fmt(r, em) if fmt else ""


def summary_line(r: dict) -> str:
    """The harness's one console line per record: the suite name, then what it measured."""
    s = r["suite"]
    if r.get("status") != "ok":
        return f"{s:9s} {r.get('model', '')} b{r.get('batch_size', '')} {r.get('precision_requested', '')}: {r['status']} {r.get('note', '')}"
    if s in LINES:
        return f"{s:9s} {LINES[s](r)}"
    if s in RESULTS:
        target = f", target {r['target']}" if "target" in r else ""
        return f"{s:9s} {result(r)}{target}"
    return json.dumps(r)
