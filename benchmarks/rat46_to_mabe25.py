"""Lay out DeepLabCut + Caltech-annotator recordings (e.g. shared/data/rat46) as a Kaggle MABe-2025 folder.

    python benchmarks/rat46_to_mabe25.py --dlc ../shared/data/rat46/dlc --annot ../shared/data/rat46/annot \\
        --out /tmp/rat46_mabe

Reads the recordings with the project's own DLC reader (tracking + Caltech stream S1,
classes aggression / nonsocial / social, `base` the background), and writes under --out
(never inside this repository):

    train.csv                                   one row per video (Kaggle columns; fps 30)
    train_tracking/<lab>/<video>.parquet        video_frame, mouse_id, bodypart, x, y (pixels)
    train_annotation/<lab>/<video>.parquet      agent_id, target_id, action, start_frame, stop_frame

The first animal is the agent and the other the target (Caltech bouts carry no subject);
`behaviors_labeled` = "mouse1,mouse2,<class>" for the three classes. `base` (the period
before the animals interact) is unlabelled in the data's protocol, and MABe has no
unlabelled frames inside an annotated video, so each video is cropped to the span from its
first to its last labelled frame and re-indexed from 0 (`source_first_frame` in train.csv
keeps the offset); `--keep-base` keeps whole videos (base frames then count as negatives).
Then `data.format=mabe25 data.path=<out>` trains on it and `trainer.evaluate` scores it
with the MABe-2025 metric.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from trainer.config import DataConfig  # noqa: E402
from trainer.data import read_recordings  # noqa: E402
from trainer.data.common import frames_to_intervals  # noqa: E402
from trainer.data.recording import DataError, Recording  # noqa: E402
from trainer.kaggle_mabe import ANNOTATION_COLUMNS, triple_text  # noqa: E402

log = logging.getLogger("rat46_to_mabe25")
REPO = Path(__file__).resolve().parent.parent
CLASSES = ["aggression", "nonsocial", "social"]
MOUSE_COLUMNS = [f"mouse{m}_{k}" for m in range(1, 5) for k in ("strain", "color", "sex", "id", "age", "condition")]


def video_id_of(rec: Recording) -> str:
    """The leading number of the recording's name ("11DLC_..." -> "11"), else the name."""
    m = re.match(r"\d+", rec.video_id)
    return m.group(0) if m else re.sub(r"[^\w.-]", "_", rec.video_id)


def labelled_span(labels: np.ndarray, background: int, keep_base: bool) -> tuple[int, int]:
    """[first, last + 1) frames holding a class other than background/unlabelled (whole video if keep_base)."""
    if keep_base:
        return 0, len(labels)
    on = np.flatnonzero(labels > background)
    if len(on) == 0:
        return 0, 0
    return int(on[0]), int(on[-1]) + 1


def tracking_table(kp: np.ndarray, bodyparts: list[str]) -> pd.DataFrame:
    """(T, M, B, 2) pixels -> long table video_frame, mouse_id (1..M), bodypart, x, y; NaN rows dropped."""
    T, M, B, _ = kp.shape
    f, m, b = np.meshgrid(np.arange(T), np.arange(M), np.arange(B), indexing="ij")
    df = pd.DataFrame({
        "video_frame": f.ravel().astype(np.int64),
        "mouse_id": (m.ravel() + 1).astype(np.int64),
        "bodypart": np.asarray(bodyparts, dtype=object)[b.ravel()],
        "x": kp[..., 0].ravel().astype(np.float32),
        "y": kp[..., 1].ravel().astype(np.float32),
    })
    return df[~(df["x"].isna() | df["y"].isna())].reset_index(drop=True)


def annotation_table(labels: np.ndarray, class_names: list[str], background: int) -> pd.DataFrame:
    """(T,) labels of the agent->target pair -> agent_id, target_id, action, start_frame, stop_frame."""
    rows = [(1, 2, class_names[c], s, e) for c, s, e in frames_to_intervals(labels, background=background)]
    return pd.DataFrame(rows, columns=ANNOTATION_COLUMNS).astype(
        {"agent_id": np.int64, "target_id": np.int64, "start_frame": np.int64, "stop_frame": np.int64})


def convert(dlc: str, annot: str, out: Path, *, lab: str = "rat46", fps: float = 30.0,
            keep_base: bool = False, stream: str = "S1") -> pd.DataFrame:
    """Write the MABe-2025 layout of the DLC + Caltech recordings to `out`; returns train.csv's table."""
    data = DataConfig(format="dlc", path=dlc, annotation_path=annot, annotation_stream=stream,
                      annotation_format="caltech", behaviors=list(CLASSES), background_class="base")
    recs = read_recordings("dlc", dlc, data=data, fps=fps)
    rows = []
    for rec in sorted(recs, key=lambda r: (len(video_id_of(r)), video_id_of(r))):
        if rec.labels is None or len(rec.mouse_ids) != 2 or rec.pairs != [(0, 1)]:
            raise DataError(f"{rec.meta.get('source', rec.video_id)}: expected two animals with annotations "
                            "(first animal -> second animal)")
        vid = video_id_of(rec)
        y = rec.labels[:, 0]
        lo, hi = labelled_span(y, 0, keep_base)
        if hi <= lo:
            log.warning("%s: no frame of %s; skipped", rec.video_id, "/".join(CLASSES))
            continue
        y = np.where(y < 0, 0, y)[lo:hi]  # unannotated frames inside the span: negatives
        gaps = int((y == 0).sum())
        if gaps and not keep_base:
            log.warning("%s: %d base/unannotated frame(s) between labelled frames become negatives", vid, gaps)
        track = tracking_table(rec.keypoints[lo:hi], list(rec.bodyparts))
        ann = annotation_table(y, rec.class_names, 0)
        for sub, table in (("train_tracking", track), ("train_annotation", ann)):
            p = out / sub / lab / f"{vid}.parquet"
            p.parent.mkdir(parents=True, exist_ok=True)
            table.to_parquet(p, index=False)
        finite = rec.keypoints[lo:hi][np.isfinite(rec.keypoints[lo:hi]).all(axis=-1)]
        row = dict.fromkeys(MOUSE_COLUMNS, None)
        row.update({
            "lab_id": lab, "video_id": vid, "frames_per_second": fps, "video_duration_sec": (hi - lo) / fps,
            "pix_per_cm_approx": None,
            "video_width_pix": float(np.ceil(finite[:, 0].max())) if len(finite) else None,
            "video_height_pix": float(np.ceil(finite[:, 1].max())) if len(finite) else None,
            "arena_width_cm": None, "arena_height_cm": None, "arena_shape": None, "arena_type": None,
            "body_parts_tracked": json.dumps(list(rec.bodyparts)),
            "behaviors_labeled": json.dumps([triple_text(1, 2, c) for c in CLASSES]),
            "tracking_method": "DeepLabCut", "source_first_frame": lo,
        })
        rows.append(row)
        log.info("%s: frames %d..%d, %d bouts", vid, lo, hi, len(ann))
    if not rows:
        raise DataError(f"{annot}: no annotated video to write")
    first = ["lab_id", "video_id"]
    table = pd.DataFrame(rows)
    table = table[first + [c for c in table.columns if c not in first]]
    table.to_csv(out / "train.csv", index=False)
    return table


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dlc", required=True, help="DeepLabCut CSV file or directory")
    p.add_argument("--annot", required=True, help="Caltech annotator file or directory")
    p.add_argument("--out", required=True, help="new directory for the MABe-2025 layout (outside the repository)")
    p.add_argument("--lab", default="rat46", help="lab_id of every video")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate (DLC files do not store it)")
    p.add_argument("--stream", default="S1", help="Caltech stream to read")
    p.add_argument("--keep-base", action="store_true", help="keep whole videos (base frames become negatives)")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    if out == REPO or REPO in out.parents:
        log.error("error: --out %s is inside the repository; choose a directory outside it", out)
        return 2
    if out.exists() and any(out.iterdir()):
        log.error("error: --out %s exists and is not empty; choose a new directory", out)
        return 2
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        table = convert(args.dlc, args.annot, tmp, lab=args.lab, fps=args.fps, keep_base=args.keep_base,
                        stream=args.stream)
    except DataError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        log.error("error: %s", e)
        return 2
    if out.exists():
        out.rmdir()  # empty, checked above
    tmp.replace(out)  # a crash never leaves a half-written layout under the final name
    log.info("wrote %d video(s) of lab %s to %s", len(table), args.lab, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
