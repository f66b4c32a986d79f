"""Tracking ↔ annotation pairing and per-frame labels, shared by the DLC and SLEAP readers.

Pose files from DeepLabCut and SLEAP carry no behaviour labels; these come from separate
BORIS / Caltech annotator files (trainer/data/annotations.py). This module holds the one
set of rules both readers follow:

- Pairing (`pair_by_name`): the annotation whose stem (without `.csv`, `.annot`,
  `_annot.txt`, `.txt`) equals one of a recording's names or is its longest prefix
  (DeepLabCut appends `DLC_<network>...` to the video name, SLEAP `.predictions`); a
  prefix never ends inside a number (`5_annot.txt` is not `53DLC_...csv`'s).
  Recordings without a match are skipped with a warning (nothing to train on); unused
  annotation files are reported. `data.annotation_pairs` lists the pairs explicitly
  (`explicit_pairs`).
- Labels (`label_recording`): each annotated animal is an agent; its target is the other
  animal when there are exactly two, else itself. BORIS subjects are matched to animals
  by name (case, spaces, `_`/`-` ignored); bouts without a subject, and all Caltech bouts,
  belong to the first animal. Frames outside BORIS bouts are background; frames outside
  every Caltech interval are unlabelled (-1).
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

from trainer.data.annotations import Annotation, read_annotation
from trainer.data.common import check_known, class_list, clip_intervals, list_files, paint_pair
from trainer.data.recording import UNLABELLED, DataError, Recording

log = logging.getLogger(__name__)

ANNOTATION_SUFFIXES = (".csv", ".annot", ".txt")
K = TypeVar("K")


def is_dlc_csv(f: Path) -> bool:
    """True when the first CSV cell is `scorer` (a DeepLabCut tracking table, not an annotation)."""
    try:
        with open(f, newline="", encoding="utf-8", errors="replace") as fh:
            first = next(csv.reader(fh), [""])
    except OSError:
        return False
    return bool(first) and first[0].strip().lower() == "scorer"


def unreadable(f: Path) -> str | None:
    """Why `f` cannot be a tracking (or any text) file: empty or binary; None if it is text.

    Used when a directory is searched, so that a skipped file is named rather than silently
    ignored (binary content only counts against `.csv`; pose `.h5`/`.slp`/`.nwb` are binary).
    """
    try:
        with open(f, "rb") as fh:
            head = fh.read(4096)
    except OSError as e:
        return f"cannot read ({e.strerror})"
    if not head:
        return "the file is empty"
    if f.suffix.lower() == ".csv" and b"\0" in head:
        return "binary content, not a CSV"
    return None


def annotation_stem(f: Path) -> str:
    """Name an annotation file is paired by: the file name without its annotation suffix."""
    name = f.name
    for suffix in ("_annot.txt", ".annot", ".csv", ".h5", ".txt"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return f.stem


def names_match(name: str, stem: str) -> bool:
    """True when annotation `stem` is recording `name` or a prefix of it that does not end
    inside a number (video `53DLC_...` is not annotated by `5_annot.txt`)."""
    if not stem or not name.startswith(stem):
        return False
    rest = name[len(stem):]
    return not (rest and rest[0].isdigit() and stem[-1].isdigit())


def explicit_pairs(data) -> list[tuple[Path, Path]]:
    """`data.annotation_pairs` as (tracking file, annotation file) paths; [] when not set."""
    out = []
    for item in list(getattr(data, "annotation_pairs", []) or []):
        if not isinstance(item, list | tuple) or len(item) != 2:
            raise DataError(f"config key 'data.annotation_pairs': entry {item!r} is not [tracking_file, annotation_file]")
        trk, ann = Path(item[0]), Path(item[1])
        for f in (trk, ann):
            if not f.is_file():
                raise DataError(f"{f}: file not found (listed in data.annotation_pairs)")
        out.append((trk, ann))
    return out


def pair_by_name(
    items: Sequence[K], names: Callable[[K], list[str]], annotation_path: str, *, source: str
) -> list[tuple[K, Path]]:
    """Pair each item (a tracking file, or one video of a file) with its annotation file.

    Args:
        items: what is paired, in order.
        names: the names an item answers to (e.g. [file stem] or [video stem, file stem]).
        annotation_path: `data.annotation_path` (file or directory).
        source: the tracking path, for messages.

    Returns:
        (item, annotation file) for every item with a match (see the module docstring).
    """
    annots = list_files(annotation_path, ANNOTATION_SUFFIXES, what="annotation")
    annots = [a for a in annots if a.suffix.lower() != ".csv" or not is_dlc_csv(a)]
    if len(items) == 1 and len(annots) == 1:
        return [(items[0], annots[0])]
    out = []
    for item in items:
        cands = [(len(annotation_stem(a)), a) for a in annots
                 if any(names_match(n, annotation_stem(a)) for n in names(item))]
        if not cands:
            log.warning("%s: no annotation file with a matching name in %s; skipped", names(item)[0], annotation_path)
            continue
        best = max(n for n, _ in cands)
        top = sorted({a for n, a in cands if n == best})
        if len(top) > 1:
            raise DataError(
                f"{names(item)[0]}: several annotation files match ({', '.join(a.name for a in top)}); "
                "list the pairs in data.annotation_pairs"
            )
        out.append((item, top[0]))
    if not out:
        raise DataError(f"{annotation_path}: no annotation file matches a tracking file name in {source}")
    used = {a for _, a in out}
    for a in annots:
        if a not in used:
            log.warning("%s: no tracking file matches this annotation file; ignored", a)
    return out


def read_annotations(files: dict[Path, float], data) -> tuple[dict[Path, Annotation], list[str]]:
    """Read each annotation file once; class list from all of them.

    Args:
        files: annotation file -> frame rate used when the file states none.
        data: DataConfig (annotation_format, annotation_stream, behaviors, background_class).

    Returns:
        ({file: Annotation}, class names with the background first).
    """
    anns = {
        a: read_annotation(a, fmt=data.annotation_format, stream=data.annotation_stream, fallback_fps=fps)
        for a, fps in files.items()
    }
    names = [b for ann in anns.values() for b in ann.behaviours]
    return anns, class_list(names, behaviors=list(data.behaviors), background=data.background_class,
                            unlabelled=getattr(data, "unlabelled_behaviors", ()))


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]", "", str(name)).lower()


def _agent_index(subject: str | None, individuals: list[str], ann: Annotation) -> int:
    if subject is None or len(individuals) == 1:
        return 0
    by_name = {_norm(i): m for m, i in enumerate(individuals)}
    if _norm(subject) in by_name:
        return by_name[_norm(subject)]
    raise DataError(
        f"{ann.source}: subject '{subject}' matches no individual of the tracking ({', '.join(individuals)}); "
        "rename the BORIS subject or the tracked animal (DeepLabCut individual / SLEAP track)"
    )


def label_recording(
    video_id: str,
    keypoints: np.ndarray,
    individuals: list[str],
    bodyparts: list[str],
    ann: Annotation | None,
    classes: list[str],
    *,
    fps: float,
    meta: dict,
) -> Recording:
    """A Recording with labels painted from `ann` (None = unlabelled, every animal an agent).

    Args:
        keypoints: (T, M, B, 2) float32 pixels.
        individuals: M animal names (BORIS subjects are matched to them).
        ann: the paired annotation, or None.
        classes: class names (background first).
        fps: frame rate of the recording.
        meta: Recording.meta; `annotation_source` is added when labelled.
    """
    T, M = keypoints.shape[0], keypoints.shape[1]

    def target_of(a: int) -> int:
        return 1 - a if M == 2 else a

    if ann is None:
        pairs = [(a, target_of(a)) for a in range(M)]
        return Recording(video_id, keypoints, float(fps), individuals, bodyparts, pairs, None, list(classes), meta)
    check_known(ann.behaviours, classes, source=ann.source)
    by_agent: dict[int, list[tuple[int, int, int]]] = {}
    for subj, beh, s, e in ann.bouts:
        by_agent.setdefault(_agent_index(subj, individuals, ann), []).append((s, e, classes.index(beh)))
    agents = sorted(by_agent) or [0]
    pairs = [(a, target_of(a)) for a in agents]
    labels = np.empty((T, len(pairs)), dtype=np.int64)
    fill = UNLABELLED if ann.kind == "caltech" else 0
    for p, a in enumerate(agents):
        ivs = clip_intervals(by_agent.get(a, []), T, source=ann.source)
        labels[:, p] = paint_pair(T, ivs, fill=fill, source=ann.source, pair=individuals[a])
    meta = dict(meta, annotation_source=str(ann.source))
    return Recording(video_id, keypoints, float(fps), individuals, bodyparts, pairs, labels, list(classes), meta)
