"""Round trip through every file format: synthetic videos -> files on disk -> reader -> train -> score.

    python benchmarks/formats_roundtrip.py --videos 8 --frames 3000 --epochs 6 --out /tmp/roundtrip

The embedded synthetic generator makes resident-intruder videos with a real behaviour
signal; this script writes the same videos as CalMS21 JSON, a MABe-2025 Kaggle layout,
DeepLabCut CSV + BORIS CSV and SimBA CSV, trains the same model on each (same seed, same
split by video) and scores the validation videos with `trainer.evaluate` (frame macro F1;
for mabe25 also the official MABe-2025 score) and `trainer.predict` (interval CSV,
Kaggle submission). Lossless readers give the synthetic baseline's numbers back (up to
float rounding of the text formats). Results go to <out>/results.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from trainer import predict  # noqa: E402
from trainer.config import make_config  # noqa: E402
from trainer.data import get_reader  # noqa: E402
from trainer.data.common import frames_to_intervals  # noqa: E402
from trainer.evaluate import evaluate_checkpoint  # noqa: E402
from trainer.run import train  # noqa: E402

log = logging.getLogger("roundtrip")
VOCAB = {"attack": 0, "investigation": 1, "mount": 2, "other": 3}


def export_calms21(recs, root: Path) -> dict:
    seqs = {}
    for r in recs:
        ann = [VOCAB[r.class_names[c]] for c in r.labels[:, 0]]
        seqs[r.video_id] = {"keypoints": r.keypoints.transpose(0, 1, 3, 2).tolist(), "annotations": ann,
                            "metadata": {"vocab": VOCAB}}
    path = root / "calms21.json"
    path.write_text(json.dumps({"annotator-id_0": seqs}))
    return {"data.format": "calms21", "data.path": str(path)}


def export_mabe25(recs, root: Path) -> dict:
    rows = []
    behaviours = [c for c in recs[0].class_names if c != "other"]
    for i, r in enumerate(recs):
        lab = "LabA" if i % 2 == 0 else "LabB"
        T, M, B, _ = r.keypoints.shape
        f, m, b = np.meshgrid(np.arange(T), np.arange(M), np.arange(B), indexing="ij")
        xy = r.keypoints.reshape(-1, 2)
        ok = np.isfinite(xy).all(1)
        trk = pd.DataFrame({"video_frame": f.ravel()[ok], "mouse_id": m.ravel()[ok] + 1,
                            "bodypart": np.asarray(r.bodyparts)[b.ravel()[ok]], "x": xy[ok, 0], "y": xy[ok, 1]})
        (root / "train_tracking" / lab).mkdir(parents=True, exist_ok=True)
        trk.to_parquet(root / "train_tracking" / lab / f"{r.video_id}.parquet", index=False)
        ivs = frames_to_intervals(r.labels[:, 0], background=0)
        ann = pd.DataFrame([(1, 2, r.class_names[c], s, e) for c, s, e in ivs],
                           columns=["agent_id", "target_id", "action", "start_frame", "stop_frame"])
        (root / "train_annotation" / lab).mkdir(parents=True, exist_ok=True)
        ann.to_parquet(root / "train_annotation" / lab / f"{r.video_id}.parquet", index=False)
        rows.append({"lab_id": lab, "video_id": r.video_id, "frames_per_second": r.fps, "pix_per_cm_approx": 10.0,
                     "video_duration_sec": T / r.fps, "body_parts_tracked": json.dumps(r.bodyparts),
                     "behaviors_labeled": json.dumps([f"mouse1,mouse2,{b}" for b in behaviours])})
    pd.DataFrame(rows).to_csv(root / "train.csv", index=False)
    return {"data.format": "mabe25", "data.path": str(root)}


def export_dlc(recs, root: Path) -> dict:
    (root / "tracking").mkdir(parents=True)
    (root / "boris").mkdir()
    for r in recs:
        T, M, B, _ = r.keypoints.shape
        cols = [(r.mouse_ids[m], r.bodyparts[b], c) for m in range(M) for b in range(B) for c in ("x", "y", "likelihood")]
        kp = r.keypoints
        vals = np.concatenate([kp, np.where(np.isnan(kp[..., :1]), np.nan, 1.0)], axis=-1).reshape(T, -1)
        head = [["scorer"] + ["DLC_resnet50_synthJan1shuffle1_1000"] * len(cols),
                ["individuals"] + [c[0] for c in cols], ["bodyparts"] + [c[1] for c in cols],
                ["coords"] + [c[2] for c in cols]]
        path = root / "tracking" / f"{r.video_id}DLC_resnet50_synthJan1shuffle1_1000.csv"
        with open(path, "w") as fh:
            fh.write("\n".join(",".join(h) for h in head) + "\n")
            body = pd.DataFrame(vals)
            body.insert(0, "frame", np.arange(T))
            body.to_csv(fh, header=False, index=False, na_rep="", float_format="%.4f")
        lines = [f"Observation id,{r.video_id}", "Observation date,2025-01-01", "Description,", "",
                 "Time,Media file path,Total length,FPS,Subject,Behavior,Behavioral category,Comment,Status"]
        for c, s, e in frames_to_intervals(r.labels[:, 0], background=0):
            for t, status in ((s, "START"), (e, "STOP")):
                lines.append(f"{t / r.fps!r},{r.video_id}.mp4,{T / r.fps},{r.fps},{r.mouse_ids[0]},"
                             f"{r.class_names[c]},social,,{status}")
        (root / "boris" / f"{r.video_id}.csv").write_text("\n".join(lines) + "\n")
    return {"data.format": "dlc", "data.path": str(root / "tracking"), "data.annotation_path": str(root / "boris")}


def export_simba(recs, root: Path) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    for r in recs:
        cols = {}
        for m in range(r.keypoints.shape[1]):
            for b, bp in enumerate(r.bodyparts):
                cols[f"{bp}_{m + 1}_x"] = r.keypoints[:, m, b, 0]
                cols[f"{bp}_{m + 1}_y"] = r.keypoints[:, m, b, 1]
                cols[f"{bp}_{m + 1}_p"] = np.where(np.isnan(r.keypoints[:, m, b, 0]), 0.0, 1.0)
        for c, name in enumerate(r.class_names):
            if name != "other":
                cols[name] = (r.labels[:, 0] == c).astype(int)
        pd.DataFrame(cols).to_csv(root / f"{r.video_id}.csv", float_format="%.4f")
    return {"data.format": "simba", "data.path": str(root), "data.behaviors": "[investigation,mount,attack]"}


EXPORTERS = {"calms21": export_calms21, "mabe25": export_mabe25, "dlc": export_dlc, "simba": export_simba}


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=8)
    p.add_argument("--frames", type=int, default=3000)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--out", default="/tmp/roundtrip")
    p.add_argument("--formats", default="synthetic,calms21,mabe25,dlc,simba")
    args = p.parse_args()
    out = Path(args.out)
    common = {"epochs": args.epochs, "conv_channels": "[32,32]", "lstm_hidden": 32, "lstm_layers": 1,
              "batch_size": 32, "learning_rate": 0.002, "sequence_length": 64, "seed": 0,
              "data.synthetic.num_videos": args.videos, "data.synthetic.frames_per_video": args.frames}
    syn_cfg = make_config(None, [f"{k}={v}" for k, v in common.items()])
    recs = get_reader("synthetic")("", data=syn_cfg.data, fps=syn_cfg.fps)
    for i, r in enumerate(recs):
        r.video_id = f"vid{i:02d}"  # the same sort order in every format: the same split
    results = {}
    for fmt in args.formats.split(","):
        keys = {}
        if fmt != "synthetic":
            root = out / "data" / fmt
            root.mkdir(parents=True, exist_ok=True)
            keys = EXPORTERS[fmt](recs, root)
            t = time.perf_counter()
            n = sum(x.num_frames for x in get_reader(fmt)(keys["data.path"], data=make_config(
                None, [f"{k}={v}" for k, v in keys.items()]).data, fps=30.0))
            read_fps = n / (time.perf_counter() - t)
        cfg = make_config(None, [f"{k}={v}" for k, v in {**common, **keys, "output_dir": str(out / "runs"),
                                                          "name": fmt}.items()])
        final = train(cfg, recordings=None)
        ck = out / "runs" / fmt / "checkpoints" / "best"
        ev = evaluate_checkpoint(ck)
        row = {"val_macro_f1": round(ev["raw"]["frames"]["macro_f1"], 4),
               "f1": {k: (None if v is None else round(v, 4)) for k, v in ev["raw"]["frames"]["f1"].items()},
               "train_time_s": round(final["train_time_s"], 1)}
        if fmt != "synthetic":
            row["read_frames_per_s"] = round(read_fps)
            preds = out / "preds" / fmt / "preds.csv"
            rc = predict.main(["--checkpoint", str(ck), "--input", keys["data.path"], "--format", fmt,
                               "--out", str(preds)])
            row["predict_ok"] = rc == 0
        if "mabe" in ev["raw"]:
            row["mabe_score"] = round(ev["raw"]["mabe"]["score"], 4)
            row["mabe_labs"] = {k: round(v["score"], 4) for k, v in ev["raw"]["mabe"]["labs"].items()}
        results[fmt] = row
        log.info("%-9s %s", fmt, json.dumps(row))
    (out / "results.json").write_text(json.dumps(results, indent=2))
    log.info("wrote %s", out / "results.json")


if __name__ == "__main__":
    main()
