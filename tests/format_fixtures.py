"""Writers of tiny fixture files in the exact on-disk formats (shared by the format tests)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd


def calms_seq(T, seed, ann=True):
    rng = np.random.default_rng(seed)
    seq = {
        "keypoints": (rng.random((T, 2, 2, 7)) * 100).round(2).tolist(),
        "scores": np.ones((T, 2, 7)).tolist(),
        "metadata": {"vocab": {"attack": 0, "investigation": 1, "mount": 2, "other": 3}},
    }
    if ann:
        seq["annotations"] = (np.arange(T) % 4).tolist()
    return seq


def write_calms_json(path, seqs):
    path.write_text(json.dumps({"annotator-id_0": seqs}))
    return path


BPS = ["nose", "ear_left", "ear_right", "body_center", "tail_base"]


def write_tracking(path, T, mice, *, missing=(), bodyparts=BPS, seed=0):
    """Long-format tracking; `missing` = (mouse, frame) pairs without rows."""
    rng = np.random.default_rng(seed)
    f, m, b = np.meshgrid(np.arange(T), mice, np.arange(len(bodyparts)), indexing="ij")
    df = pd.DataFrame({"video_frame": f.ravel(), "mouse_id": m.ravel(), "bodypart": np.array(bodyparts)[b.ravel()]})
    drop = df.set_index(["mouse_id", "video_frame"]).index.isin(list(missing))
    df = df[~drop]
    df["x"] = rng.random(len(df)) * 100
    df["y"] = rng.random(len(df)) * 100
    path.parent.mkdir(parents=True, exist_ok=True)
    df.sample(frac=1.0, random_state=0).to_parquet(path, index=False)  # row order must not matter
    return df


def write_mabe(root, split="train", videos=None):
    """A 2-lab MABe-2025 layout; returns the video table."""
    videos = videos or [
        dict(lab_id="LabA", video_id=101, fps=30.0, pix=12.5, T=40, mice=[1, 2, 3],
             bl=["mouse1,mouse2,sniff", "mouse2,mouse1,attack", "mouse1,self,rear"],
             ann=[(1, 2, "sniff", 5, 15), (1, 2, "sniff", 30, 60), (2, 1, "attack", 10, 20),
                  (1, 1, "rear", 0, 4), (2, 1, "sniff", 12, 14)]),
        dict(lab_id="LabA", video_id=102, fps=25.0, pix=12.5, T=30, mice=[1, 2],
             bl=["mouse1,mouse2,sniff"], ann=[(1, 2, "sniff", 0, 10)]),
        dict(lab_id="LabB", video_id=201, fps=30.0, pix=None, T=20, mice=[1, 2],
             bl=["mouse1,mouse2,attack"], ann=[(1, 2, "attack", 3, 8)]),
        dict(lab_id="LabB", video_id=202, fps=30.0, pix=None, T=20, mice=[1, 2], bl=None, ann=None),
    ]
    rows = []
    for v in videos:
        write_tracking(root / f"{split}_tracking" / v["lab_id"] / f"{v['video_id']}.parquet", v["T"], v["mice"],
                       missing=v.get("missing", ()))
        if split == "train" and v["ann"] is not None:
            ann = pd.DataFrame(v["ann"], columns=["agent_id", "target_id", "action", "start_frame", "stop_frame"])
            p = root / "train_annotation" / v["lab_id"] / f"{v['video_id']}.parquet"
            p.parent.mkdir(parents=True, exist_ok=True)
            ann.to_parquet(p, index=False)
        rows.append({
            "lab_id": v["lab_id"], "video_id": v["video_id"], "mouse1_strain": "C57", "frames_per_second": v["fps"],
            "video_duration_sec": v["T"] / v["fps"], "pix_per_cm_approx": v["pix"],
            "body_parts_tracked": json.dumps(BPS[::-1]),
            "behaviors_labeled": json.dumps(v["bl"]) if v["bl"] is not None else None,
        })
    pd.DataFrame(rows).to_csv(root / f"{split}.csv", index=False)
    return videos


def write_dlc(path, T, individuals, bodyparts, *, first_row_empty=False, seed=0):
    """DLC CSV (3 header rows for one unnamed animal when individuals is None, else 4)."""
    rng = np.random.default_rng(seed)
    inds = individuals or [None]
    cols = [(i, b, c) for i in inds for b in bodyparts for c in ("x", "y", "likelihood")]
    vals = rng.random((T, len(cols))) * 100
    lines = ["scorer," + ",".join(["DLC_resnet50_projJan1shuffle1_1000"] * len(cols))]
    if individuals:
        lines.append("individuals," + ",".join(c[0] for c in cols))
    lines.append("bodyparts," + ",".join(c[1] for c in cols))
    lines.append("coords," + ",".join(c[2] for c in cols))
    for t in range(T):
        cells = [f"{v:.3f}" for v in vals[t]]
        if first_row_empty and t == 0:
            cells = [cells[0], cells[1], cells[2]] + [""] * (len(cells) - 3)  # one detection only
        lines.append(f"{t}," + ",".join(cells))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return vals


BORIS = """Observation id,session1
Observation date,2024-01-01 10:00:00
Description,
Time offset (s),0.000

Media file(s)

Player #1,/videos/session1.mp4

Time,Media file path,Total length,FPS,Subject,Behavior,Behavioral category,Comment,Status
0.5,/videos/session1.mp4,10,10,Resident,sniff,social,,START
1.0,/videos/session1.mp4,10,10,Resident,sniff,social,,STOP
1.2,/videos/session1.mp4,10,10,Intruder,attack,social,,START
1.5,/videos/session1.mp4,10,10,Intruder,attack,social,,STOP
2.0,/videos/session1.mp4,10,10,Resident,jump,,,POINT
2.5,/videos/session1.mp4,10,10,Resident,sniff,social,,START
9.0,/videos/session1.mp4,10,10,Resident,sniff,social,,STOP
"""


def write_simba(path, T, *, behaviours, seed=0):
    rng = np.random.default_rng(seed)
    data = {}
    for a in (1, 2):
        for bp in ("Nose", "Ear_left", "Tail_base"):
            data[f"{bp}_{a}_x"] = rng.random(T) * 100
            data[f"{bp}_{a}_y"] = rng.random(T) * 100
            data[f"{bp}_{a}_p"] = rng.random(T)
    data["Movement_mouse_1_centroid"] = rng.random(T)
    data["Low_prob_detections_0.1"] = rng.integers(0, 5, T)
    data.update(behaviours)
    df = pd.DataFrame(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path)  # SimBA keeps the frame index as an unnamed first column
    return df
