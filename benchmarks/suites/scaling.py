"""Suite `scaling`: train() wall time (features + 1 epoch + validation) on N and 2N videos."""

from __future__ import annotations

import statistics
import tempfile
import time

from benchmarks.suites.common import Pipeline, derived, train
from trainer.data import load_splits


def bench_scaling(pipe: Pipeline, opts) -> dict:
    """train() wall time for one epoch (features, training, validation, checkpoint) on N and 2N videos."""
    n = pipe.cfg.data.synthetic.num_videos
    sizes = {}
    for k in (n, 2 * n):
        cfg = derived(pipe.cfg, [f"data.synthetic.num_videos={k}"])
        sizes[k] = (cfg, load_splits(cfg))  # generating the videos is not part of the pipeline
    times, cpu = {n: [], 2 * n: []}, {n: [], 2 * n: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(opts.scaling_repeats):  # interleaved: machine load drifts hit both sizes
            for k in (n, 2 * n):
                cfg = derived(sizes[k][0], ["epochs=1", f"output_dir={tmp}", f"name=n{k}-r{r}", "save_freq=0"])
                t0, c0 = time.perf_counter(), time.process_time()
                train(cfg, recordings=sizes[k][1])
                times[k].append(time.perf_counter() - t0)
                cpu[k].append(time.process_time() - c0)
    t1, t2 = statistics.median(times[n]), statistics.median(times[2 * n])
    frames = sum(r.num_frames for rs in sizes[n][1] for r in rs)
    return pipe.describe() | {
        "suite": "scaling", "status": "ok", "videos": n, "frames": frames, "time_s": t1, "time_2x_s": t2,
        "time_s_windows": [round(x, 3) for x in times[n]], "time_2x_s_windows": [round(x, 3) for x in times[2 * n]],
        "scaling_ratio": t2 / t1, "windows": opts.scaling_repeats, "target": "<= 2.1",
        # in process CPU seconds: what the pipeline costs, whatever else the machine is doing
        "scaling_ratio_cpu": statistics.median(cpu[2 * n]) / statistics.median(cpu[n]),
        "what": "train(cfg, recordings) wall time, epochs=1: features + windows + 1 epoch + validation + checkpoint",
    }
