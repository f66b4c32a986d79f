"""Helpers shared by the file readers: file listing, class lists, interval painting and runs.

The one rule every reader follows for multi-label annotations lives here
(`paint_intervals`): a `Recording` holds ONE class per frame and (agent, target) pair
(MABe submissions allow only one action per pair and frame anyway), so where two
annotated bouts of the same pair overlap, the bout that starts later wins the overlap;
for equal starts the shorter (nested) bout wins. The number of frames decided this way
is logged so that the choice is never silent.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from trainer.data.recording import UNLABELLED, DataError

log = logging.getLogger(__name__)

FPS_RANGE = (1.0, 1000.0)  # frames per second a behaviour video can plausibly have
# longest video a reader allocates for (93 h at 30 fps): bounds arrays sized from file contents
MAX_FRAMES = 10_000_000


def check_fps(fps: float, *, source: str | Path) -> float:
    """`fps` if it is within FPS_RANGE; else a DataError naming `source`."""
    lo, hi = FPS_RANGE
    if not lo <= fps <= hi:
        raise DataError(f"{source}: frame rate {fps:g} fps is outside the plausible range {lo:g}-{hi:g}; fix the file")
    return fps


def check_frame_count(num_frames: int, *, source: str | Path) -> int:
    """`num_frames` if an array of that many frames is plausible (<= MAX_FRAMES), before allocating it."""
    if num_frames > MAX_FRAMES:
        raise DataError(
            f"{source}: frame index {num_frames - 1} implies a video of {num_frames:,} frames "
            f"(more than {MAX_FRAMES:,}); the frame column is corrupt"
        )
    return num_frames


def list_files(path: str | Path, suffixes: tuple[str, ...], *, what: str) -> list[Path]:
    """Files under `path` (a file, or a directory searched recursively) ending in `suffixes`.

    Args:
        path: file or directory given by the user (config key `data.path`).
        suffixes: lower-case endings to keep, e.g. (".csv", ".h5").
        what: human name of the format for the error message.

    Returns:
        Sorted list of files. Raises DataError when `path` is missing or holds no such file.
    """
    p = Path(path)
    if not str(path):
        raise DataError(f"data.path is empty: set data.path to a {what} file or directory")
    if not p.exists():
        raise DataError(f"{p}: no such file or directory (check data.path)")
    if p.is_file():
        return [p]
    files = sorted(f for f in p.rglob("*") if f.is_file() and f.name.lower().endswith(suffixes))
    if not files:
        raise DataError(f"{p}: no {what} files ({', '.join(suffixes)}) found in this directory")
    return files


def class_list(found: Iterable[str], *, behaviors: list, background: str, unlabelled: Iterable[str] = ()) -> list[str]:
    """Class names with the background first: `[background] + behaviours`.

    Args:
        found: behaviour names seen in the annotation files.
        behaviors: the config's explicit list (`data.behaviors`); [] = use `found`, sorted.
        background: name of the background class (`data.background_class`).
        unlabelled: `data.unlabelled_behaviors`; with an explicit list, those found are appended
            (known to the reader, then made unlabelled by `drop_classes`), never an error.
    """
    found = {str(b) for b in found}
    if behaviors:
        explicit = [background] + [str(b) for b in behaviors if str(b) != background]
        return explicit + sorted((found & {str(u) for u in unlabelled}) - set(explicit))
    return [background] + sorted(found - {background})


def check_known(names: Iterable[str], class_names: list[str], *, source: str | Path) -> None:
    """DataError naming `source` if an annotated behaviour is not in `class_names`."""
    unknown = sorted({str(n) for n in names} - set(class_names))
    if unknown:
        raise DataError(
            f"{source}: unknown behaviour '{unknown[0]}' (classes: {', '.join(class_names)}); "
            "add it to data.behaviors or remove it from the annotations"
        )


def clip_intervals(
    intervals: list[tuple[int, int, int]], num_frames: int, *, source: str | Path
) -> list[tuple[int, int, int]]:
    """Clip [start, stop) intervals to [0, num_frames); warn about every clipped or dropped one.

    Over-long annotations are common (an annotator stream that runs past the last tracked
    frame), so they are clipped rather than rejected, but always reported. Times before
    the video's start (negative frames) are clipped to frame 0 the same way: a negative
    index would otherwise paint the end of the video.
    """
    out = []
    clipped = dropped = early = 0
    for start, stop, cls in intervals:
        if start >= num_frames or stop <= 0:
            dropped += 1
            early += stop <= 0
            continue
        if stop > num_frames:
            clipped += 1
            stop = num_frames
        if start < 0:
            clipped += 1
            early += 1
            start = 0
        out.append((start, stop, cls))
    if clipped or dropped:
        log.warning(
            "%s: %d annotation interval(s) clipped and %d dropped outside tracking (frames 0-%d; %d before the start)",
            source, clipped, dropped, num_frames - 1, early,
        )
    return out


def paint_intervals(
    num_frames: int, intervals: Iterable[tuple[int, int, int]], *, fill: int
) -> tuple[np.ndarray, int]:
    """Per-frame labels from [start, stop) class intervals (frames, stop exclusive).

    Args:
        num_frames: T, length of the output.
        intervals: (start, stop, class_index) triples, already inside [0, T).
        fill: label of frames no interval covers (background index, or -1 = unlabelled).

    Returns:
        (labels (T,) int64, number of frames covered by two or more different classes).
        Overlaps are resolved by the module rule: later start wins, then shorter bout.
    """
    labels = np.full(num_frames, fill, dtype=np.int64)
    ivs = [(int(s), int(e), int(c)) for s, e, c in intervals if e > s]
    if any(s < 0 for s, _, _ in ivs):  # a negative index would silently paint the end of the video
        raise ValueError("paint_intervals: negative start frame; clip_intervals first")
    if not ivs:
        return labels, 0
    # paint in order (start asc, stop desc): later starts and nested bouts are painted last
    ivs.sort(key=lambda iv: (iv[0], -iv[1]))
    cover = np.zeros((num_frames + 1,), dtype=np.int64)
    by_class: dict[int, np.ndarray] = {}
    for s, e, c in ivs:
        labels[s:e] = c
        m = by_class.setdefault(c, np.zeros(num_frames, dtype=bool))
        m[s:e] = True
    for m in by_class.values():
        cover[:-1] += m
    return labels, int((cover[:-1] > 1).sum())


def paint_pair(
    num_frames: int, intervals: list[tuple[int, int, int]], *, fill: int, source: str | Path, pair: str
) -> np.ndarray:
    """`paint_intervals` + a log line when overlapping bouts of different classes were resolved."""
    labels, n_overlap = paint_intervals(num_frames, intervals, fill=fill)
    if n_overlap:
        log.info(
            "%s: %s has %d frame(s) with two behaviours at once; the later-starting bout was kept",
            source, pair, n_overlap,
        )
    return labels


def runs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximal runs of equal values in (T,) labels: (starts, stops, values); stops exclusive."""
    y = np.asarray(labels)
    if y.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, y[:0]
    change = np.flatnonzero(y[1:] != y[:-1]) + 1
    starts = np.concatenate([[0], change])
    stops = np.concatenate([change, [len(y)]])
    return starts, stops, y[starts]


def frames_to_intervals(labels: np.ndarray, *, background: int = 0) -> list[tuple[int, int, int]]:
    """(T,) int labels -> [(class, start_frame, stop_frame)] for every non-background run.

    Frames labelled `background` or -1 (unlabelled) produce no interval; stop is exclusive,
    as in the MABe-2025 format.
    """
    starts, stops, values = runs(labels)
    keep = (values != background) & (values != UNLABELLED)
    return [(int(v), int(s), int(e)) for s, e, v in zip(starts[keep], stops[keep], values[keep], strict=True)]


def drop_low_likelihood(keypoints: np.ndarray, likelihood: np.ndarray | None, threshold: float) -> np.ndarray:
    """Set keypoints (T, M, B, 2) to NaN where likelihood (T, M, B) < threshold (in place)."""
    if likelihood is not None and threshold > 0:
        keypoints[likelihood < threshold] = np.nan
    return keypoints


def check_tracking(keypoints: np.ndarray, mouse_ids: list[str], *, source: str | Path) -> None:
    """DataError for a video with no frames or a mouse whose keypoints are all NaN."""
    if keypoints.shape[0] == 0:
        raise DataError(f"{source}: video has no frames (empty tracking table)")
    if np.isinf(keypoints).any():
        raise DataError(f"{source}: tracking holds infinite coordinates; fix the file or mark missing points empty")
    finite = np.isfinite(keypoints).reshape(keypoints.shape[0], keypoints.shape[1], -1).any(axis=(0, 2))
    for m, ok in enumerate(finite):
        if not ok:
            raise DataError(
                f"{source}: mouse '{mouse_ids[m]}' has no valid keypoint in any frame (all NaN); "
                "remove this video or fix its tracking"
            )


__all__ = [
    "UNLABELLED",
    "check_fps",
    "check_frame_count",
    "check_known",
    "check_tracking",
    "class_list",
    "clip_intervals",
    "drop_low_likelihood",
    "frames_to_intervals",
    "list_files",
    "paint_intervals",
    "paint_pair",
    "runs",
]
