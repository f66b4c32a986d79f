"""Read speed of every file reader (frames/s) on one long generated video per format.

    python benchmarks/read_speed.py --frames 100000 --out /tmp/read_speed

Writes a video of `--frames` frames with 4 mice x 18 body parts (CalMS21: its fixed
2 mice x 7 parts) in each on-disk format, reads it twice with the trainer's reader and
reports the faster read. Results go to <out>/results.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from trainer.config import DataConfig  # noqa: E402
from trainer.data import get_reader  # noqa: E402

M, B = 4, 18


def write_mabe25(root: Path, T: int, rng) -> Path:
    bps = [f"bp{i}" for i in range(B)]
    f = np.repeat(np.arange(T), M * B)
    m = np.tile(np.repeat(np.arange(1, M + 1), B), T)
    b = np.tile(np.array(bps), T * M)
    df = pd.DataFrame({"video_frame": f, "mouse_id": m, "bodypart": b,
                       "x": rng.random(T * M * B, dtype=np.float32) * 500,
                       "y": rng.random(T * M * B, dtype=np.float32) * 500})
    df = df.sample(frac=0.97, random_state=0).sort_values(["video_frame", "mouse_id"])  # some frames missing
    (root / "train_tracking" / "lab").mkdir(parents=True, exist_ok=True)
    (root / "train_annotation" / "lab").mkdir(parents=True, exist_ok=True)
    df.to_parquet(root / "train_tracking" / "lab" / "1.parquet", index=False)
    pd.DataFrame({"agent_id": [1], "target_id": [2], "action": ["sniff"], "start_frame": [10], "stop_frame": [90]}) \
        .to_parquet(root / "train_annotation" / "lab" / "1.parquet", index=False)
    pd.DataFrame({"lab_id": ["lab"], "video_id": [1], "frames_per_second": [30.0],
                  "body_parts_tracked": [json.dumps(bps)],
                  "behaviors_labeled": [json.dumps(["mouse1,mouse2,sniff"])]}).to_csv(root / "train.csv", index=False)
    return root


def write_dlc(root: Path, T: int, rng) -> Path:
    cols = [(f"mouse{i + 1}", f"bp{j}", c) for i in range(M) for j in range(B) for c in ("x", "y", "likelihood")]
    vals = pd.DataFrame(rng.random((T, len(cols)), dtype=np.float32) * 500)
    vals.insert(0, "frame", np.arange(T))
    path = root / "video.csv"
    with open(path, "w") as fh:
        for k, name in enumerate(("scorer", "individuals", "bodyparts", "coords")):
            fh.write(name + "," + ",".join("DLC" if k == 0 else c[k - 1] for c in cols) + "\n")
        vals.to_csv(fh, header=False, index=False, float_format="%.3f")
    return path


def write_calms21(root: Path, T: int, rng) -> Path:
    seq = {"keypoints": (rng.random((T, 2, 2, 7)) * 500).round(2).tolist(), "annotations": rng.integers(0, 4, T).tolist()}
    path = root / "calms21.json"
    path.write_text(json.dumps({"annotator-id_0": {"seq": seq}}))
    return path


def write_simba(root: Path, T: int, rng) -> Path:
    cols = {f"Bp{b}_{a}_{c}": rng.random(T, dtype=np.float32) * 500
            for a in range(1, M + 1) for b in range(B) for c in "xyp"}
    cols["Attack"] = rng.integers(0, 2, T)
    path = root / "video.csv"
    pd.DataFrame(cols).to_csv(path, float_format="%.3f")
    return path


WRITERS = {"mabe25": write_mabe25, "dlc": write_dlc, "calms21": write_calms21, "simba": write_simba}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=100_000)
    p.add_argument("--out", default="/tmp/read_speed")
    args = p.parse_args()
    out = Path(args.out)
    results = {}
    for fmt, writer in WRITERS.items():
        root = out / fmt
        root.mkdir(parents=True, exist_ok=True)
        path = writer(root, args.frames, np.random.default_rng(0))
        best = float("inf")
        for _ in range(2):
            t = time.perf_counter()
            recs = get_reader(fmt)(str(path), data=DataConfig(), fps=30.0)
            best = min(best, time.perf_counter() - t)
        shape = list(recs[0].keypoints.shape)
        results[fmt] = {"shape": shape, "seconds": round(best, 3), "frames_per_s": round(shape[0] / best)}
        print(f"{fmt:8s} keypoints {tuple(shape)}  {best:6.2f} s  {shape[0] / best:>10,.0f} frames/s")
    (out / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
