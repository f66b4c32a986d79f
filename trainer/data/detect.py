"""Guess the data format from the files (`data.format=auto`).

Only unambiguous layouts are recognised; anything else is a one-line DataError asking
for `data.format`. CalMS21 `.npy` files are never auto-detected: loading them unpickles
code, so that format must be chosen explicitly (`data.format=calms21`).
"""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

from trainer.data.recording import DataError, Recording

log = logging.getLogger(__name__)

_SIMBA_POSE = re.compile(r"^.+_[^_]+_[xyp]$")


def _csv_kind(f: Path) -> str | None:
    try:
        with open(f, newline="", encoding="utf-8", errors="replace") as fh:
            first = next(csv.reader(fh), [])
    except OSError:
        return None
    if first and first[0].strip().lower() == "scorer":
        return "dlc"
    if f.name in ("train.csv", "test.csv") and {"lab_id", "video_id"} <= set(first):
        return "mabe25"
    pose = [c for c in first if _SIMBA_POSE.match(c)]
    if len(pose) >= 2 and any(c.endswith("_x") for c in pose):
        return "simba"
    return None


def _json_kind(f: Path) -> str | None:
    with open(f, encoding="utf-8", errors="replace") as fh:
        head = fh.read(65536)
    return "calms21" if '"keypoints"' in head else None


def _file_kind(f: Path) -> str | None:
    suffix = f.suffix.lower()
    if suffix == ".npy":
        raise DataError(
            f"{f}: .npy files are not auto-detected (loading them runs pickled code); "
            "set data.format=calms21 if you trust this file"
        )
    if suffix == ".csv":
        return _csv_kind(f)
    if suffix == ".json":
        return _json_kind(f)
    if suffix == ".h5":  # SLEAP analysis / JABS pose files have their own groups (needs h5py)
        from trainer.data.sleap import h5_kind

        return "sleap" if h5_kind(f) else "dlc"
    if suffix in (".slp", ".nwb"):
        return "sleap"
    if suffix == ".parquet" and re.fullmatch(r"\w+_tracking", f.parent.parent.name):
        return "mabe25"
    return None


def detect_format(path: str | Path) -> str:
    """Reader name for `path` (file or directory): calms21 | mabe25 | dlc | simba | sleap.

    Raises DataError when the path is missing, holds no recognisable file, or mixes
    formats.
    """
    p = Path(path)
    if not str(path) or not p.exists():
        raise DataError(f"{p}: no such file or directory (check data.path)")
    if p.is_file():
        kind = _file_kind(p)
        if kind is None:
            raise DataError(f"{p}: cannot tell the data format from this file; set data.format")
        return kind
    if any((p / f"{s}.csv").is_file() and (p / f"{s}_tracking").is_dir() for s in ("train", "test")):
        return "mabe25"
    kinds = set()
    for f in sorted(p.rglob("*")):
        if f.is_file() and f.suffix.lower() in (".csv", ".json", ".h5", ".npy", ".slp", ".nwb"):
            kind = _file_kind(f)
            if kind:
                kinds.add(kind)
    if len(kinds) == 1:
        return kinds.pop()
    if not kinds:
        raise DataError(f"{p}: no file of a known format (CalMS21 json, MABe-2025, DeepLabCut, SimBA, SLEAP/NWB/JABS) found")
    raise DataError(f"{p}: files of several formats ({', '.join(sorted(kinds))}); set data.format")


def read_auto(path: str, *, data, fps: float) -> list[Recording]:
    """Reader for `data.format=auto`: detect the format of `path`, then use its reader."""
    from trainer.data import get_reader

    fmt = detect_format(path)
    log.info("data.format=auto: %s looks like '%s'", path, fmt)
    return get_reader(fmt)(path, data=data, fps=fps)
