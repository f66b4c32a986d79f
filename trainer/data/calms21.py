"""CalMS21 (Caltech Mouse Social, MABe 2021) task 1 reader: the JSON and the NPY variants.

JSON: `{annotator_id: {sequence_id: {"keypoints": (T, 2 mice, 2 [x, y], 7 parts),
"scores": (T, 2, 7), "annotations": (T,), "metadata": {"vocab": {...}}}}}`.
NPY (the dataset's own converter): a pickled dict `{"vocabulary": {...}, "sequences":
{name: {"keypoints": (T, 2, 2, 7), "annotations": (T,)}}}`.

Security: the NPY variant can only be read with `np.load(allow_pickle=True)`, and
unpickling runs code embedded in the file. It is read ONLY inside `npy_consent(True)`,
which the command-line entry points enter when the user typed `data.format=calms21`
(trainer/run.py) or `--format calms21` (predict, evaluate) on this command line; a
config file, a checkpoint's meta.json or a directory listing never gives consent, and
format auto-detection refuses .npy files. Only load .npy files from a source you trust.

Mouse 0 is the resident, mouse 1 the intruder; resident -> intruder is the one labelled
pair. Videos are 30 Hz.
"""

from __future__ import annotations

import contextlib
import json
import logging
from contextvars import ContextVar
from pathlib import Path

import numpy as np

from trainer.data.common import check_known, check_tracking, class_list, list_files
from trainer.data.recording import DataError, Recording

log = logging.getLogger(__name__)

FPS = 30.0  # CalMS21 videos are recorded at 30 Hz; the files do not store it
BODYPARTS = ["nose", "ear_left", "ear_right", "neck", "hip_left", "hip_right", "tail_base"]
MOUSE_IDS = ["resident", "intruder"]
DEFAULT_VOCAB = {"attack": 0, "investigation": 1, "mount": 2, "other": 3}
# True only while a command line on which the user typed the calms21 format is running
_NPY_CONSENT: ContextVar[bool] = ContextVar("calms21_npy_consent", default=False)


@contextlib.contextmanager
def npy_consent(given: bool):
    """Allow (given=True) or forbid unpickling CalMS21 .npy files inside this block."""
    token = _NPY_CONSENT.set(given)
    try:
        yield
    finally:
        _NPY_CONSENT.reset(token)


def read_calms21(path: str, *, data, fps: float) -> list[Recording]:
    """Read CalMS21 task-1 sequences from a .json/.npy file or a directory of them.

    Args:
        path: a CalMS21 .json or .npy file, or a directory holding such files.
        data: DataConfig (uses background_class, behaviors, pix_per_cm).
        fps: ignored (CalMS21 is 30 Hz).

    Returns:
        One Recording per sequence: keypoints (T, 2, 7, 2) pixels, pairs [(0, 1)],
        labels (T, 1) or None when the sequence has no annotations.
    """
    files = list_files(path, (".json", ".npy"), what="CalMS21")
    raw: list[tuple[str, dict, dict, Path]] = []  # (video_id, sequence dict, vocab, file)
    for f in files:
        raw += _read_json(f) if f.suffix.lower() == ".json" else _read_npy(f)
    vocabs = {tuple(sorted(v.items())) for _, _, v, _ in raw}
    names = {n for v in vocabs for n in dict(v)}
    classes = class_list(names, behaviors=list(data.behaviors), background=data.background_class,
                         unlabelled=getattr(data, "unlabelled_behaviors", ()))
    recs = [_to_recording(vid, seq, vocab, f, classes, data) for vid, seq, vocab, f in raw]
    log.info("calms21: read %d sequences from %d file(s)", len(recs), len(files))
    return recs


# --------------------------------------------------------------------------- helpers


def _read_json(f: Path) -> list[tuple[str, dict, dict, Path]]:
    try:
        with open(f) as fh:
            doc = json.load(fh)
    except json.JSONDecodeError as e:
        raise DataError(f"{f}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except UnicodeDecodeError:
        raise DataError(f"{f}: not a text file (binary content); expected CalMS21 JSON") from None
    if not isinstance(doc, dict) or not doc:
        raise DataError(f"{f}: expected {{annotator_id: {{sequence_id: {{keypoints, annotations}}}}}}")
    out = []
    multi = len(doc) > 1
    for annotator, seqs in doc.items():
        if not isinstance(seqs, dict):
            raise DataError(f"{f}: key '{annotator}' should map sequence ids to sequences")
        for sid, seq in seqs.items():
            if not isinstance(seq, dict) or "keypoints" not in seq:
                raise DataError(f"{f}: sequence '{sid}' has no 'keypoints' key")
            meta = seq.get("metadata") if isinstance(seq.get("metadata"), dict) else {}
            vocab = _check_vocab(meta.get("vocab") or DEFAULT_VOCAB, f)
            out.append((f"{annotator}/{sid}" if multi else str(sid), seq, vocab, f))
    return out


def _read_npy(f: Path) -> list[tuple[str, dict, dict, Path]]:
    # The converter's files are pickled dicts: allow_pickle is unavoidable here, so it is
    # reached only with the user's consent on this command line (see module docstring).
    if not _NPY_CONSENT.get():
        raise DataError(
            f"{f}: a CalMS21 .npy file is a pickle (loading it can run code) and is read only when you type "
            "data.format=calms21 (training) or --format calms21 (predict/evaluate) on the command line; "
            "a config, checkpoint or directory never enables it"
        )
    try:
        doc = np.load(f, allow_pickle=True)
        doc = doc.item() if isinstance(doc, np.ndarray) and doc.dtype == object and doc.shape == () else doc
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad user file
        raise DataError(f"{f}: cannot load as a CalMS21 .npy file ({type(e).__name__}: {e})") from None
    if not isinstance(doc, dict) or "sequences" not in doc:
        raise DataError(f"{f}: expected a dict with 'vocabulary' and 'sequences' (CalMS21 NPY variant)")
    vocab = _check_vocab(doc.get("vocabulary") or DEFAULT_VOCAB, f)
    out = []
    for sid, seq in doc["sequences"].items():
        if not isinstance(seq, dict) or "keypoints" not in seq:
            raise DataError(f"{f}: sequence '{sid}' has no 'keypoints' key")
        out.append((str(sid), seq, vocab, f))
    return out


MAX_VOCAB_ID = 1000  # class ids index a lookup table: bound it before allocating


def _check_vocab(vocab, f: Path) -> dict:
    """{class name: integer id in [0, MAX_VOCAB_ID)} or a DataError naming the file."""
    if not isinstance(vocab, dict):
        raise DataError(f"{f}: the vocabulary must map class names to integer ids, got {type(vocab).__name__}")
    for name, i in vocab.items():
        if isinstance(i, bool) or not isinstance(i, int | np.integer) or not 0 <= i < MAX_VOCAB_ID:
            raise DataError(f"{f}: vocabulary id of '{name}' must be an integer in [0, {MAX_VOCAB_ID}), got {i!r}")
    return vocab


def _to_recording(vid: str, seq: dict, vocab: dict, f: Path, classes: list[str], data) -> Recording:
    where = f"{f} sequence '{vid}'"
    try:
        kp = np.asarray(seq["keypoints"], dtype=np.float32)
    except (ValueError, TypeError):
        raise DataError(f"{where}: 'keypoints' is not a numeric array") from None
    if kp.ndim != 4 or kp.shape[1:] != (2, 2, 7):
        raise DataError(f"{where}: 'keypoints' has shape {kp.shape}, expected (T, 2 mice, 2 [x, y], 7 body parts)")
    kp = np.ascontiguousarray(kp.transpose(0, 1, 3, 2))  # (T, mice, xy, parts) -> (T, mice, parts, xy)
    check_tracking(kp, MOUSE_IDS, source=where)
    labels = None
    ann = seq.get("annotations")
    if ann is not None and len(ann):
        try:
            ann = np.asarray(ann, dtype=np.int64).ravel()
        except (ValueError, TypeError):
            raise DataError(f"{where}: 'annotations' must be integers (one per frame)") from None
        if ann.shape[0] != kp.shape[0]:
            raise DataError(f"{where}: {ann.shape[0]} annotations for {kp.shape[0]} frames; expected one per frame")
        id_to_name = {int(i): str(n) for n, i in vocab.items()}
        bad = np.setdiff1d(np.unique(ann), list(id_to_name))
        if bad.size:
            raise DataError(f"{where}: annotation value {int(bad[0])} is not in the vocabulary {vocab}")
        check_known(id_to_name.values(), classes, source=where)
        lut = np.full(max(id_to_name) + 1, -1, dtype=np.int64)
        for i, n in id_to_name.items():
            lut[i] = classes.index(n)
        labels = lut[ann][:, None]
    pix = float(getattr(data, "pix_per_cm", 0.0) or 0.0)
    return Recording(
        video_id=vid,
        keypoints=kp,
        fps=FPS,
        mouse_ids=list(MOUSE_IDS),
        bodyparts=list(BODYPARTS),
        pairs=[(0, 1)],
        labels=labels,
        class_names=list(classes),
        meta={"source": str(f), "pix_per_cm": pix or None, "format": "calms21"},
    )
