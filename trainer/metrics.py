"""Frame-level scores: per-class F1, macro F1 over behaviours, confusion matrix.

Frames labelled -1 (unlabelled) are excluded everywhere. Macro F1 is the mean over the
behaviour classes, i.e. every class except the background class (CalMS21 convention);
accuracy is reported but never the headline.
"""

from __future__ import annotations

import numpy as np

from trainer.data.recording import UNLABELLED


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts, rows = true class, columns = predicted; -1 truths ignored."""
    y_true = np.asarray(y_true).ravel()
    y_pred = np.asarray(y_pred).ravel()
    keep = y_true != UNLABELLED
    idx = y_true[keep].astype(np.int64) * num_classes + y_pred[keep].astype(np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def f1_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Per-class F1 from a confusion matrix; a class absent from truth and prediction gets NaN."""
    tp = np.diag(cm).astype(np.float64)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    denom = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), np.nan)


def frame_scores(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    class_names: list[str],
    background: str | None = "other",
) -> dict:
    """Per-class F1, macro F1 over behaviours (all classes but `background`), accuracy, confusion.

    Returns a JSON-serialisable dict: {"f1": {name: f1}, "macro_f1", "accuracy",
    "confusion": [[...]], "support": {name: frames}, "frames": n}.
    """
    C = len(class_names)
    cm = confusion_matrix(y_true, y_pred, C)
    f1 = f1_from_confusion(cm)
    behaviours = [i for i, n in enumerate(class_names) if n != background] or list(range(C))
    # classes never present in truth nor prediction are left out of the mean (NaN)
    vals = [f1[i] for i in behaviours if not np.isnan(f1[i])]
    n = int(cm.sum())
    return {
        "f1": {name: (None if np.isnan(f1[i]) else float(f1[i])) for i, name in enumerate(class_names)},
        "macro_f1": float(np.mean(vals)) if vals else 0.0,
        "accuracy": float(np.trace(cm) / n) if n else 0.0,
        "confusion": cm.tolist(),
        "support": {name: int(cm[i].sum()) for i, name in enumerate(class_names)},
        "frames": n,
    }
