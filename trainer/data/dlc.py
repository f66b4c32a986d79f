"""DeepLabCut tracking (CSV, or H5 when pytables is installed) + BORIS / Caltech annotations.

Tracking: single-animal files have 3 header rows (`scorer` / `bodyparts` / `coords`),
multi-animal files 4 (`scorer` / `individuals` / `bodyparts` / `coords`); the first column
is the frame index; empty cells are missing detections. The header is parsed here and the
data rows are read with `header=None`, so a mostly empty first data row is never taken
for a header row (the `read_csv(header=[0, 1, 2, 3])` pitfall). maDLC's `single`
pseudo-individual (unique body parts) is dropped.

Annotations (`data.annotation_path`, a file or directory): BORIS CSV or Caltech annotator
(see trainer/data/annotations.py). Pairing: `data.annotation_pairs` ([[tracking,
annotation], ...]) when given, else by the tracking file's stem (rules and labels in
trainer/data/pairing.py, shared with the SLEAP reader). Without `annotation_path` every
file is read unlabelled (prediction). fps comes from the annotation file, else from the
config (`fps`).
"""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from trainer.data.annotations import Annotation
from trainer.data.common import check_frame_count, check_tracking, drop_low_likelihood, list_files
from trainer.data.pairing import (
    explicit_pairs,
    is_dlc_csv,
    label_recording,
    pair_by_name,
    read_annotations,
    unreadable,
)
from trainer.data.recording import DataError, Recording

log = logging.getLogger(__name__)


def read_dlc(path: str, *, data, fps: float) -> list[Recording]:
    """Read DeepLabCut tracking files, paired with annotations when `data.annotation_path` is set.

    Args:
        path: a DLC .csv/.h5 file or a directory of them (ignored when
            `data.annotation_pairs` lists the files).
        data: DataConfig (annotation_path, annotation_format, annotation_stream,
            annotation_pairs, background_class, behaviors, min_likelihood, pix_per_cm).
        fps: frame rate used when the annotation file does not state one.

    Returns:
        One Recording per tracking file: keypoints (T, M, B, 2) pixels, labels (T, P) or
        None without annotations.
    """
    pairs = pair_files(path, data)
    anns, classes = read_annotations({a: fps for _, a in pairs if a is not None}, data)
    recs = []
    for trk, a in pairs:
        recs.append(_recording(trk, anns.get(a) if a else None, classes, data, fps))
    ids = [r.video_id for r in recs]
    if len(set(ids)) != len(ids):  # video ids must be unique for the split by video
        for r, (trk, _) in zip(recs, pairs, strict=True):
            r.video_id = str(trk)
    log.info("dlc: read %d tracking file(s), %d with annotations", len(recs), len(anns))
    return recs


# --------------------------------------------------------------------------- pairing


def video_id_of(f: Path) -> str:
    """Video name of a DLC output file: the stem before DeepLabCut's `DLC_<network>` suffix."""
    m = re.match(r"^(.+?)DLC_", f.stem)
    return m.group(1).rstrip("_") if m else f.stem


def pair_files(path: str, data) -> list[tuple[Path, Path | None]]:
    """(tracking file, annotation file or None) pairs; see the module docstring for the rules."""
    explicit = explicit_pairs(data)
    if explicit:
        return list(explicit)
    tracking = list_files(path, (".csv", ".h5"), what="DeepLabCut")
    if len(tracking) > 1 or Path(path).is_dir():
        for f in tracking:
            why = unreadable(f)
            if why:
                log.warning("%s: skipped as a tracking file: %s", f, why)
        tracking = [f for f in tracking if not unreadable(f) and (f.suffix.lower() == ".h5" or is_dlc_csv(f))]
        if not tracking:
            raise DataError(f"{path}: no DeepLabCut tracking file (CSV whose first row starts with 'scorer') found")
    if not data.annotation_path:
        return [(f, None) for f in tracking]
    return pair_by_name(tracking, lambda f: [f.stem], data.annotation_path, source=path)


# --------------------------------------------------------------------------- tracking


def read_dlc_table(file: Path) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Read one DLC CSV/H5 table.

    Returns:
        (keypoints (T, M, B, 2) float32 pixels with NaN for missing detections,
        likelihood (T, M, B) float32 (NaN where absent), individuals (M,), body parts (B,)).
        Single-animal files have one individual, "mouse1". T = last frame index + 1.
    """
    if file.suffix.lower() == ".h5":
        columns, values, frames = _read_h5(file)
    else:
        columns, values, frames = _read_csv(file)
    return _assemble(file, columns, values, frames)


def _read_csv(file: Path) -> tuple[list[tuple[str, str, str]], np.ndarray, np.ndarray]:
    with open(file, newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.reader(fh)
        head = [row for _, row in zip(range(4), reader, strict=False)]
    first = [r[0].strip().lower() if r else "" for r in head]
    if not first or first[0] != "scorer":
        raise DataError(f"{file}: not a DeepLabCut CSV (the first header row must start with 'scorer')")
    if first[1:4] == ["individuals", "bodyparts", "coords"]:
        depth, ind_row, bp_row, co_row = 4, head[1], head[2], head[3]
    elif first[1:3] == ["bodyparts", "coords"]:
        depth, ind_row, bp_row, co_row = 3, None, head[1], head[2]
    else:
        raise DataError(
            f"{file}: header of the wrong depth: expected rows scorer/bodyparts/coords (3) or "
            f"scorer/individuals/bodyparts/coords (4), found {'/'.join(first)}"
        )
    width = len(head[0])
    if any(len(r) != width for r in head[1:depth]):
        raise DataError(f"{file}: the {depth} header rows have different numbers of columns")
    columns = [
        (ind_row[j].strip() if ind_row else "mouse1", bp_row[j].strip(), co_row[j].strip().lower())
        for j in range(1, width)
    ]
    # every column typed as float up front: no type guessing from a mostly empty first block
    names = [f"c{j}" for j in range(width)]
    types = {n: pa.float64() if j == 0 else pa.float32() for j, n in enumerate(names)}
    try:
        tab = pacsv.read_csv(
            file,
            read_options=pacsv.ReadOptions(skip_rows=depth, column_names=names),
            convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=True),
        )
    except pa.ArrowInvalid as e:
        raise DataError(f"{file}: malformed data row ({str(e).splitlines()[0][:200]})") from None
    if tab.num_rows == 0:
        raise DataError(f"{file}: video has no frames (no data rows after the header)")
    values = np.stack([tab.column(j).to_numpy(zero_copy_only=False) for j in range(1, width)], axis=1)
    return columns, values.astype(np.float32, copy=False), tab.column(0).to_numpy(zero_copy_only=False)


def _read_h5(file: Path) -> tuple[list[tuple[str, str, str]], np.ndarray, np.ndarray]:
    try:
        import tables  # noqa: F401 - pandas needs pytables for HDF5
    except ImportError:
        raise DataError(f"{file}: reading DeepLabCut .h5 needs pytables (pip install tables); or use the .csv") from None
    try:
        df = pd.read_hdf(file)
    except Exception as e:  # noqa: BLE001 - HDF5 errors come in many types
        raise DataError(f"{file}: cannot read as a DeepLabCut HDF5 table ({type(e).__name__}: {e})") from None
    if not isinstance(df, pd.DataFrame) or df.columns.nlevels not in (3, 4):
        raise DataError(f"{file}: expected a table with 3 or 4 column levels (scorer/[individuals/]bodyparts/coords)")
    if df.empty:
        raise DataError(f"{file}: video has no frames")
    if df.columns.nlevels == 4:
        columns = [(str(i), str(b), str(c).lower()) for _, i, b, c in df.columns]
    else:
        columns = [("mouse1", str(b), str(c).lower()) for _, b, c in df.columns]
    return columns, df.to_numpy(dtype=np.float32), np.asarray(df.index)


def _assemble(file: Path, columns, values: np.ndarray, frames: np.ndarray):
    frames = np.asarray(frames, dtype=np.float64)
    if np.isnan(frames).any() or (frames != np.round(frames)).any() or (frames < 0).any():
        raise DataError(f"{file}: the first column must be the frame index (0, 1, 2, ...)")
    frames = frames.astype(np.int64)
    uniq, counts = np.unique(frames, return_counts=True)
    if (counts > 1).any():  # the later row would silently overwrite the earlier one
        dup = int(uniq[counts > 1][0])
        raise DataError(f"{file}: frame index {dup} appears {int(counts[counts > 1][0])} times "
                        f"({int((counts > 1).sum())} duplicated frame(s)); each frame must have one row")
    check_frame_count(int(frames.max()) + 1, source=file)
    individuals = list(dict.fromkeys(i for i, _, _ in columns))
    if "single" in individuals and len(individuals) > 1:
        log.info("%s: dropping maDLC's 'single' (unique body parts) columns", file)
        individuals.remove("single")
    bodyparts = list(dict.fromkeys(b for i, b, _ in columns if i in individuals))
    seen: dict[tuple[str, str, str], int] = {}
    for j, key in enumerate(columns):
        if key in seen:
            raise DataError(f"{file}: column {key} appears twice in the header")
        seen[key] = j
    T = int(frames.max()) + 1
    kp = np.full((T, len(individuals), len(bodyparts), 2), np.nan, dtype=np.float32)
    lik = np.full((T, len(individuals), len(bodyparts)), np.nan, dtype=np.float32)
    for m, ind in enumerate(individuals):
        for b, bp in enumerate(bodyparts):
            jx, jy = seen.get((ind, bp, "x")), seen.get((ind, bp, "y"))
            if jx is None and jy is None:
                continue  # this individual does not track this part (e.g. maDLC subsets)
            if jx is None or jy is None:
                raise DataError(f"{file}: missing column {(ind, bp, 'x' if jx is None else 'y')} in the header")
            kp[frames, m, b, 0] = values[:, jx]
            kp[frames, m, b, 1] = values[:, jy]
            jl = seen.get((ind, bp, "likelihood"))
            if jl is not None:
                lik[frames, m, b] = values[:, jl]
    return kp, lik, individuals, bodyparts


# --------------------------------------------------------------------------- recording


def _recording(trk: Path, ann: Annotation | None, classes: list[str], data, fallback_fps: float) -> Recording:
    kp, lik, individuals, bodyparts = read_dlc_table(trk)
    drop_low_likelihood(kp, lik, float(getattr(data, "min_likelihood", 0.0) or 0.0))
    check_tracking(kp, individuals, source=trk)
    meta = {"format": "dlc", "source": str(trk), "pix_per_cm": float(getattr(data, "pix_per_cm", 0.0) or 0.0) or None}
    fps = (ann.fps if ann is not None else None) or float(fallback_fps)
    return label_recording(video_id_of(trk), kp, individuals, bodyparts, ann, classes, fps=fps, meta=meta)
