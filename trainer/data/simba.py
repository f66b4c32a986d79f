"""SimBA project CSV reader (e.g. `project_folder/csv/targets_inserted/<video>.csv`).

One row per frame, one header row. Pose columns are `{bodypart}_{animal}_{x|y|p}` (e.g.
`Nose_1_x`, `Tail_base_2_p`; body-part names may contain `_`); behaviour (target)
columns hold 0/1 per frame; everything else (engineered features, an unnamed index
column) is ignored.

Behaviour columns: `data.behaviors` when given (each must exist); otherwise every
non-pose column whose filled cells are all 0 or 1. A blank cell in a behaviour column
makes that frame unlabelled (left out of loss and metric), reported with a warning: never
background, and never a reason to drop the column. Set `data.behaviors` explicitly if your
feature columns include binary flags. SimBA labels belong to the video, not to one
animal: the labelled pair is (animal 1, animal 2) (or (1, 1) with one animal). Frames
where no behaviour is 1 are background; frames where several are 1 keep the bout that
started later (trainer/data/common.py).

fps and pixels/mm come from `project_folder/logs/video_info.csv` when the CSV sits in a
SimBA project (searched up to three folders up), else from the config (`fps`,
`data.pix_per_cm`).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from trainer.data.common import (
    check_fps,
    check_tracking,
    class_list,
    drop_low_likelihood,
    list_files,
    paint_pair,
)
from trainer.data.recording import UNLABELLED, DataError, Recording

log = logging.getLogger(__name__)

POSE = re.compile(r"^(?P<bp>.+)_(?P<animal>[^_]+)_(?P<c>[xyp])$")


def read_simba(path: str, *, data, fps: float) -> list[Recording]:
    """Read SimBA CSVs (a file or a directory of them).

    Args:
        path: a SimBA CSV or a directory of them.
        data: DataConfig (behaviors, background_class, min_likelihood, pix_per_cm).
        fps: frame rate when no SimBA `logs/video_info.csv` lists the video.

    Returns:
        One Recording per CSV: keypoints (T, M, B, 2) pixels, pairs [(0, 1)] (or [(0, 0)]),
        labels (T, 1) (None when the CSV has no behaviour columns).
    """
    files = list_files(path, (".csv",), what="SimBA")
    tables = [(f, _read_table(f)) for f in files]
    explicit = [str(b) for b in data.behaviors if str(b) != data.background_class]
    found = []
    for f, df in tables:
        found += explicit or _binary_columns(df)
        for b in explicit:
            if b not in df.columns:
                raise DataError(f"{f}: missing behaviour column '{b}' (listed in data.behaviors)")
    classes = class_list(found, behaviors=list(data.behaviors), background=data.background_class,
                         unlabelled=getattr(data, "unlabelled_behaviors", ()))
    recs = [_recording(f, df, classes, data, fps) for f, df in tables]
    log.info("simba: read %d file(s); behaviours %s", len(recs), classes[1:])
    return recs


# --------------------------------------------------------------------------- helpers


def _read_table(f: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(f, low_memory=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{f}: empty file") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataError(f"{f}: malformed CSV ({str(e).splitlines()[0]})") from None
    if df.columns[0] == "" or str(df.columns[0]).startswith("Unnamed"):
        df = df.iloc[:, 1:]  # SimBA writes the frame index as an unnamed first column
    if not any(POSE.match(str(c)) for c in df.columns):
        raise DataError(f"{f}: no pose columns named <bodypart>_<animal>_x/_y (e.g. Nose_1_x); is this a SimBA CSV?")
    if df.empty:
        raise DataError(f"{f}: video has no frames (no data rows)")
    return df


def _binary_columns(df: pd.DataFrame) -> list[str]:
    """Non-pose columns whose filled cells are all 0/1 (blank cells allowed: they are unlabelled frames)."""
    out = []
    for c in df.columns:
        if POSE.match(str(c)) or not pd.api.types.is_numeric_dtype(df[c]):
            continue
        v = df[c].to_numpy()
        filled = v[~pd.isna(v)]
        if filled.size and np.isin(filled, (0, 1)).all():
            out.append(str(c))
    return out


def _pose(f: Path, df: pd.DataFrame):
    cols = {}
    for c in df.columns:
        m = POSE.match(str(c))
        if m:
            cols[(m["animal"], m["bp"], m["c"])] = c
    animals = list(dict.fromkeys(a for a, _, _ in cols))
    bodyparts = list(dict.fromkeys(b for _, b, _ in cols))
    T = len(df)
    kp = np.full((T, len(animals), len(bodyparts), 2), np.nan, dtype=np.float32)
    lik = np.full((T, len(animals), len(bodyparts)), np.nan, dtype=np.float32)
    for m, a in enumerate(animals):
        for b, bp in enumerate(bodyparts):
            cx, cy, cp = cols.get((a, bp, "x")), cols.get((a, bp, "y")), cols.get((a, bp, "p"))
            if cx is None and cy is None:
                continue
            if cx is None or cy is None:
                raise DataError(f"{f}: missing column '{bp}_{a}_{'x' if cx is None else 'y'}'")
            for k, c in ((0, cx), (1, cy)):
                v = pd.to_numeric(df[c], errors="coerce")
                if v.isna().any() and df[c].notna().to_numpy()[v.isna().to_numpy()].any():
                    raise DataError(f"{f}: column '{c}' holds non-numeric values")
                kp[:, m, b, k] = v.to_numpy(dtype=np.float32)
            if cp is not None:
                lik[:, m, b] = pd.to_numeric(df[cp], errors="coerce").to_numpy(dtype=np.float32)
    return kp, lik, [f"mouse{a}" if a.isdigit() else a for a in animals], bodyparts


def video_info(f: Path) -> dict:
    """fps and pix_per_cm of `f` from a SimBA `logs/video_info.csv` above it, or {}."""
    for parent in list(f.parents)[:4]:
        info = parent / "logs" / "video_info.csv"
        if info.is_file():
            try:
                tab = pd.read_csv(info)
            except (pd.errors.ParserError, pd.errors.EmptyDataError):
                raise DataError(f"{info}: malformed SimBA video_info.csv") from None
            if "Video" not in tab.columns:
                raise DataError(f"{info}: missing column 'Video'")
            row = tab[tab["Video"].astype(str) == f.stem]
            if row.empty:
                return {}
            out = {}
            if "fps" in tab.columns and float(row["fps"].iloc[0]) > 0:
                out["fps"] = check_fps(float(row["fps"].iloc[0]), source=f"{info} video {f.stem}")
            if "pixels/mm" in tab.columns and float(row["pixels/mm"].iloc[0]) > 0:
                out["pix_per_cm"] = 10.0 * float(row["pixels/mm"].iloc[0])
            return out
    return {}


def _recording(f: Path, df: pd.DataFrame, classes: list[str], data, fallback_fps: float) -> Recording:
    kp, lik, animals, bodyparts = _pose(f, df)
    drop_low_likelihood(kp, lik, float(getattr(data, "min_likelihood", 0.0) or 0.0))
    check_tracking(kp, animals, source=f)
    info = video_info(f)
    fps = info.get("fps", float(fallback_fps))
    T, M = kp.shape[0], kp.shape[1]
    pairs = [(0, 1 if M > 1 else 0)]
    labels = None
    behaviours = [c for c in classes[1:] if c in df.columns]
    if behaviours:
        ivs = []
        blank = np.zeros(T, dtype=bool)
        for b in behaviours:
            v = pd.to_numeric(df[b], errors="coerce").to_numpy(dtype=np.float64)
            empty = np.isnan(v) & df[b].isna().to_numpy()  # a blank cell, not text
            if not np.isin(v[~empty], (0, 1)).all():
                raise DataError(f"{f}: behaviour column '{b}' must hold only 0/1 (or blank for unlabelled)")
            if empty.any():
                log.warning("%s: behaviour column '%s' has %d blank cell(s) (first at row %d); those frames are "
                            "unlabelled, not background", f, b, int(empty.sum()), int(np.argmax(empty)))
            blank |= empty
            on = np.diff(np.concatenate([[0], np.where(empty, 0, v).astype(np.int8), [0]]))
            starts, stops = np.flatnonzero(on == 1), np.flatnonzero(on == -1)
            ivs += [(int(s), int(e), classes.index(b)) for s, e in zip(starts, stops, strict=True)]
        labels = paint_pair(T, ivs, fill=0, source=f, pair=f"{animals[0]}->{animals[pairs[0][1]]}")
        labels[blank] = UNLABELLED
        labels = labels[:, None]
    pix = info.get("pix_per_cm") or float(getattr(data, "pix_per_cm", 0.0) or 0.0) or None
    meta = {"format": "simba", "source": str(f), "pix_per_cm": pix}
    return Recording(f.stem, kp, fps, animals, bodyparts, pairs, labels, list(classes), meta)
