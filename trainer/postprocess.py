"""From per-frame class probabilities to clean labels and intervals (and a Kaggle submission).

Typical chain for one (video, pair), probabilities (T, C) with the background at index 0:

    p = smooth_probs(p, window=5)                          # temporal smoothing
    y = apply_thresholds(p, thresholds, background=0)      # thresholds fitted on validation
    y = fill_gaps(y, max_gap=3, background=0)              # bridge short dropouts
    y = remove_short_bouts(y, min_length=3, background=0)  # drop flickers
    ivs = frames_to_intervals(y, background=0)             # [(class, start, stop)], stop exclusive

`postprocess_probs` runs the whole chain; `PostprocessSettings` holds its parameters (saved
as `postprocess.json` next to a checkpoint by `python -m trainer.evaluate --fit-postprocess`
and used by `python -m trainer.predict`). Numbers only: the Kaggle submission of the
labels is written by `trainer.kaggle_mabe.submission_frame`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from trainer.data.common import frames_to_intervals, paint_intervals, runs
from trainer.data.recording import UNLABELLED, DataError, Recording
from trainer.kaggle_mabe import solution_frame, submission_frame
from trainer.metrics import mabe_score

# --------------------------------------------------------------------------- intervals


def intervals_to_frames(
    intervals: list[tuple[int, int, int]], num_frames: int, *, background: int = 0
) -> np.ndarray:
    """[(class, start, stop)] -> (T,) int64 labels; uncovered frames = `background`.

    Overlaps follow the readers' rule (trainer/data/common.py): the later-starting bout wins.
    """
    ivs = [(max(0, s), min(num_frames, e), c) for c, s, e in intervals]
    return paint_intervals(num_frames, ivs, fill=background)[0]


# --------------------------------------------------------------------------- smoothing and thresholds


def smooth_probs(probs: np.ndarray, *, window: int, method: str = "mean") -> np.ndarray:
    """Centred moving mean or median over `window` frames of (T, C) probabilities.

    Edges use the nearest frame's value as padding, so the output keeps shape (T, C) and
    is not biased towards 0 at the ends. window <= 1 returns a copy.
    """
    p = np.asarray(probs, dtype=np.float64)
    w = int(window)
    if w <= 1 or len(p) == 0:
        return p.copy()
    lo, hi = (w - 1) // 2, w // 2
    padded = np.concatenate([np.repeat(p[:1], lo, axis=0), p, np.repeat(p[-1:], hi, axis=0)])
    if method == "mean":
        c = np.concatenate([np.zeros((1, p.shape[1])), np.cumsum(padded, axis=0)])
        return (c[w:] - c[:-w]) / w
    if method == "median":
        view = np.lib.stride_tricks.sliding_window_view(padded, w, axis=0)  # (T, C, w), no copy
        return np.stack([np.median(view[:, k], axis=-1) for k in range(p.shape[1])], axis=1)
    raise ValueError(f"smoothing method must be 'mean' or 'median', got {method!r}")


def fit_thresholds(
    probs: np.ndarray,
    y_true: np.ndarray,
    *,
    background: int = 0,
    grid: np.ndarray | None = None,
) -> np.ndarray:
    """Per-class probability thresholds that maximise each behaviour's frame F1 on validation.

    Args:
        probs: (N, C) predicted probabilities (validation frames, any pairs concatenated).
        y_true: (N,) true labels; -1 frames are ignored.
        background: background class index (its threshold is 0: never used).
        grid: candidate thresholds; default 0.05, 0.10, ..., 0.95.

    Returns:
        (C,) thresholds; a behaviour absent from `y_true` keeps 0.5.
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y_true)
    keep = y != UNLABELLED
    p, y = p[keep], y[keep]
    grid = np.arange(0.05, 0.951, 0.05) if grid is None else np.asarray(grid, dtype=np.float64)
    thr = np.full(p.shape[1], 0.5)
    thr[background] = 0.0
    for c in range(p.shape[1]):
        if c == background or not (y == c).any():
            continue
        pos = y == c
        pred = p[:, c][:, None] >= grid[None, :]  # (N, G)
        tp = (pred & pos[:, None]).sum(0)
        fp = (pred & ~pos[:, None]).sum(0)
        fn = pos.sum() - tp
        f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
        thr[c] = grid[int(np.argmax(f1))]  # first (lowest) threshold among ties
    return thr


def apply_thresholds(probs: np.ndarray, thresholds: np.ndarray, *, background: int = 0) -> np.ndarray:
    """(T, C) probabilities -> (T,) labels with per-class thresholds.

    A behaviour is a candidate on a frame when its probability reaches its threshold; the
    candidate with the largest probability / threshold ratio wins; no candidate means
    background. One label per frame, so a pair never gets two actions at once.
    """
    p = np.asarray(probs, dtype=np.float64)
    thr = np.asarray(thresholds, dtype=np.float64)
    ratio = p / np.maximum(thr, 1e-9)
    ok = p >= thr
    ok[:, background] = False
    ratio = np.where(ok, ratio, -np.inf)
    best = ratio.argmax(axis=1)
    return np.where(ok.any(axis=1), best, background).astype(np.int64)


def restrict_to_mask(probs: np.ndarray, class_mask: np.ndarray | None) -> np.ndarray:
    """Zero the probabilities of classes not annotated/allowed for this pair ((C,) bool mask).

    Used before thresholding for MABe-2025: predicting a non-whitelisted action would be
    dropped by the scorer anyway, and could hide a whitelisted one on the same frame.
    """
    p = np.asarray(probs, dtype=np.float64)
    if class_mask is None or not np.asarray(class_mask).any():
        return p.copy()
    return np.where(np.asarray(class_mask, dtype=bool)[None, :], p, 0.0)


# --------------------------------------------------------------------------- bout clean-up


def fill_gaps(labels: np.ndarray, *, max_gap: int, background: int = 0) -> np.ndarray:
    """Relabel background runs of <= max_gap frames lying between two runs of the same class."""
    y = np.asarray(labels).copy()
    if max_gap <= 0:
        return y
    starts, stops, values = runs(y)
    for i in range(1, len(values) - 1):
        if values[i] == background and stops[i] - starts[i] <= max_gap and values[i - 1] == values[i + 1] \
                and values[i - 1] not in (background, UNLABELLED):
            y[starts[i]:stops[i]] = values[i - 1]
    return y


def remove_short_bouts(labels: np.ndarray, *, min_length: int, background: int = 0) -> np.ndarray:
    """Relabel behaviour runs shorter than `min_length` frames as background (-1 frames stay)."""
    y = np.asarray(labels).copy()
    if min_length <= 1:
        return y
    starts, stops, values = runs(y)
    short = (stops - starts < min_length) & (values != background) & (values != UNLABELLED)
    for s, e in zip(starts[short], stops[short], strict=True):
        y[s:e] = background
    return y


def postprocess_probs(
    probs: np.ndarray,
    *,
    thresholds: np.ndarray | None = None,
    smooth_window: int = 1,
    smooth_method: str = "mean",
    max_gap: int = 0,
    min_bout: int = 1,
    background: int = 0,
    class_mask: np.ndarray | None = None,
) -> np.ndarray:
    """The full chain for one (video, pair): (T, C) probabilities -> (T,) labels.

    mask -> smooth -> thresholds (argmax when None) -> gap filling -> minimum bout length.
    """
    p = smooth_probs(restrict_to_mask(probs, class_mask), window=smooth_window, method=smooth_method)
    y = p.argmax(axis=1).astype(np.int64) if thresholds is None else apply_thresholds(p, thresholds, background=background)
    y = fill_gaps(y, max_gap=max_gap, background=background)
    return remove_short_bouts(y, min_length=min_bout, background=background)


# --------------------------------------------------------------------------- tables


def intervals_table(recs: list[Recording], labels: list[np.ndarray], *, background: int = 0) -> pd.DataFrame:
    """Interval table of every format: video_id, agent, target, action, start_frame, stop_frame.

    Args:
        recs: the recordings predicted.
        labels: per recording (T, P) int labels (one column per pair, as rec.pairs).
    """
    rows = []
    for rec, y in zip(recs, labels, strict=True):
        y = np.asarray(y).reshape(rec.num_frames, -1)
        for p, (a, t) in enumerate(rec.pairs):
            for c, s, e in frames_to_intervals(y[:, p], background=background):
                rows.append((rec.video_id, rec.mouse_ids[a], rec.mouse_ids[t], rec.class_names[c], s, e))
    return pd.DataFrame(rows, columns=["video_id", "agent", "target", "action", "start_frame", "stop_frame"])


# --------------------------------------------------------------------------- settings


@dataclass
class PostprocessSettings:
    """The post-processing of one model, saved as `postprocess.json` next to its checkpoint.

    thresholds: {class name: probability threshold} (empty = plain argmax);
    smooth_window / smooth_method: temporal smoothing of probabilities (frames; mean|median);
    max_gap: background gaps of <= max_gap frames inside a bout are filled;
    min_bout: bouts shorter than min_bout frames become background;
    lab_thresholds: {lab_id: {class name: threshold, or null = never predicted in that lab}}
    fitted on the MABe-2025 score (`fit_lab_thresholds`); a recording of a listed lab uses
    these instead of `thresholds`, other labs fall back to `thresholds`.
    """

    thresholds: dict = field(default_factory=dict)
    smooth_window: int = 1
    smooth_method: str = "mean"
    max_gap: int = 0
    min_bout: int = 1
    lab_thresholds: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> PostprocessSettings:
        try:
            raw = json.loads(Path(path).read_text())
            return cls(**raw)
        except (OSError, json.JSONDecodeError, TypeError) as e:
            raise DataError(f"{path}: not a valid postprocess.json ({type(e).__name__}: {e})") from None

    def save(self, path: str | Path) -> None:
        tmp = Path(path).with_name(f".{Path(path).name}.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    def threshold_array(self, class_names: list[str], lab: str | None = None) -> np.ndarray | None:
        """(C,) thresholds in class order (lab-specific when fitted for `lab`), or None for
        argmax; missing classes get 0.5, switched-off ones (null) infinity."""
        table = self.lab_thresholds.get(str(lab)) if lab is not None else None
        table = table if table is not None else self.thresholds
        if not table:
            return None
        return np.array([np.inf if table.get(c, 0.5) is None else float(table.get(c, 0.5)) for c in class_names])

    def apply(self, probs: np.ndarray, class_names: list[str], *, background: int = 0,
              class_mask: np.ndarray | None = None, lab: str | None = None) -> np.ndarray:
        """(T, C) probabilities of one (video, pair) of lab `lab` -> (T,) labels."""
        return postprocess_probs(
            probs, thresholds=self.threshold_array(class_names, lab), smooth_window=self.smooth_window,
            smooth_method=self.smooth_method, max_gap=self.max_gap, min_bout=self.min_bout,
            background=background, class_mask=class_mask,
        )


def fit_settings(
    probs: list[np.ndarray],
    y_true: list[np.ndarray],
    class_names: list[str],
    *,
    background: int = 0,
    smooth_window: int = 1,
    smooth_method: str = "mean",
    max_gap: int = 0,
    min_bout: int = 1,
) -> PostprocessSettings:
    """Fit per-class thresholds on validation sequences (after the given smoothing).

    Args:
        probs: per (video, pair) sequence, (T, C) probabilities.
        y_true: per sequence, (T,) true labels (-1 ignored).
    """
    smoothed = np.concatenate([smooth_probs(p, window=smooth_window, method=smooth_method) for p in probs])
    thr = fit_thresholds(smoothed, np.concatenate(y_true), background=background)
    return PostprocessSettings(
        thresholds={c: float(t) for i, (c, t) in enumerate(zip(class_names, thr, strict=True)) if i != background},
        smooth_window=smooth_window, smooth_method=smooth_method, max_gap=max_gap, min_bout=min_bout,
    )


# --------------------------------------------------------------------------- MABe-2025 thresholds


def lab_score_from_labels(y_pred: np.ndarray, y_true: np.ndarray, num_classes: int, *, background: int = 0) -> float:
    """The MABe-2025 lab score of frame labels (N,) pooled over a lab's (video, pair) frames.

    Mean F1 over the actions in the truth *plus every action predicted on at least one
    frame* (the host counts a predicted, whitelisted action the lab never shows, with F1
    0); frames with truth -1 are left out. 0 when there is no action at all.
    """
    keep = y_true != UNLABELLED
    t, p = y_true[keep].astype(np.int64), y_pred[keep].astype(np.int64)
    cm = np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)
    tp = np.diag(cm).astype(np.float64)
    in_truth, predicted = cm.sum(axis=1) > 0, cm.sum(axis=0) > 0
    fp, fn = cm.sum(axis=0) - tp, cm.sum(axis=1) - tp
    actions = (in_truth | predicted) & (np.arange(num_classes) != background)
    if not actions.any():
        return 0.0
    f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    return float(f1[actions].mean())


def fit_lab_thresholds(
    probs: np.ndarray,
    y_true: np.ndarray,
    class_names: list[str],
    *,
    background: int = 0,
    start: np.ndarray | None = None,
    grid: np.ndarray | None = None,
    rounds: int = 2,
) -> tuple[dict, float, float]:
    """Per-action thresholds of one lab that maximise its MABe-2025 score (coordinate ascent).

    Args:
        probs: (N, C) probabilities of the lab's frames (every labelled (video, pair)
            sequence concatenated), non-whitelisted classes already zeroed
            (`restrict_to_mask`).
        y_true: (N,) true labels, -1 ignored.
        start: (C,) starting thresholds (default 0.5).
        grid: candidate thresholds (default 0.05 ... 0.95); "off" (never predict the
            action in this lab) is always a candidate and wins ties: an action the lab's
            truth never shows costs a whole action in the host's mean when predicted.

    Returns:
        ({class name: threshold or None (= off)} for every non-background class, the lab
        score with the starting thresholds, the lab score with the fitted ones).
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y_true)
    C = p.shape[1]
    grid = np.arange(0.05, 0.951, 0.05) if grid is None else np.asarray(grid, dtype=np.float64)
    thr = np.full(C, 0.5) if start is None else np.asarray(start, dtype=np.float64).copy()
    thr[background] = 0.0

    def score(t):
        return lab_score_from_labels(apply_thresholds(p, t, background=background), y, C, background=background)

    before = best = score(thr)
    candidates = np.concatenate([[np.inf], grid])  # "off" first, so it wins ties
    for _ in range(rounds):
        changed = False
        for c in range(C):
            if c == background:
                continue
            trial = thr.copy()
            scores = []
            for v in candidates:
                trial[c] = v
                scores.append(score(trial))
            k = int(np.argmax(scores))
            if scores[k] > best + 1e-12:
                thr[c], best, changed = candidates[k], scores[k], True
        if not changed:
            break
    out = {name: (None if np.isinf(thr[c]) else float(thr[c])) for c, name in enumerate(class_names) if c != background}
    return out, before, best


def fit_mabe_settings(
    recs: list[Recording],
    probs: list[list[np.ndarray]],
    class_names: list[str],
    settings: PostprocessSettings,
    *,
    background: int = 0,
) -> tuple[PostprocessSettings, dict]:
    """`settings` plus per lab x action thresholds fitted on the MABe-2025 score.

    Args:
        recs: annotated mabe25 recordings (validation or out-of-fold: never the test set).
        probs: per recording, per pair, (T, C) probabilities of the model.
        settings: current settings; their smoothing is applied before fitting and their
            per-class `thresholds` are the starting point (and stay the fallback for labs
            not seen here). Gap filling / minimum bout are applied after the fitted
            thresholds at predict time but not modelled while fitting.

    Returns:
        (new settings, {lab: {"before": lab score, "after": lab score}}) - frame-based lab
        scores on these recordings, for the log.
    """
    per_lab: dict[str, tuple[list, list]] = {}
    for rec, per_pair in zip(recs, probs, strict=True):
        if rec.labels is None:
            continue
        lab = str(rec.meta.get("lab_id", ""))
        for k, pr in enumerate(per_pair):
            mask = rec.label_mask[k] if rec.label_mask is not None else None
            if mask is not None and not mask[np.arange(len(mask)) != background].any():
                continue  # nothing whitelisted for this pair: the scorer drops all its rows
            pr = smooth_probs(restrict_to_mask(pr, mask), window=settings.smooth_window, method=settings.smooth_method)
            ps, ys = per_lab.setdefault(lab, ([], []))
            ps.append(pr)
            ys.append(rec.labels[:, k])
    start = settings.threshold_array(class_names)
    lab_thr, report = {}, {}
    for lab in sorted(per_lab):
        ps, ys = per_lab[lab]
        lab_thr[lab], before, after = fit_lab_thresholds(np.concatenate(ps), np.concatenate(ys), class_names,
                                                         background=background, start=start)
        report[lab] = {"before": before, "after": after}
    fitted = PostprocessSettings(**{**asdict(settings), "lab_thresholds": lab_thr})
    return fitted, report


def postprocess_recordings(recs: list[Recording], probs: list[list[np.ndarray]], settings: PostprocessSettings,
                           class_names: list[str], *, background: int = 0) -> list[np.ndarray]:
    """Per recording (T, P) labels after `settings`: each pair's label mask, the thresholds
    of the recording's lab (meta["lab_id"]) where fitted, smoothing and bouts."""
    out = []
    for r, per_pair in zip(recs, probs, strict=True):
        cols = [settings.apply(pr, class_names, background=background, lab=r.meta.get("lab_id"),
                               class_mask=r.label_mask[p] if r.label_mask is not None else None)
                for p, pr in enumerate(per_pair)]
        out.append(np.stack(cols, axis=1))
    return out


def search_mabe_settings(
    recs: list[Recording],
    probs: list[list[np.ndarray]],
    class_names: list[str],
    settings: PostprocessSettings,
    *,
    background: int = 0,
    smooth_windows: tuple = (1, 5, 15),
    min_bouts: tuple = (1, 5, 15),
) -> tuple[PostprocessSettings, float, list[dict]]:
    """Smoothing window x minimum bout chosen by the MABe-2025 score, lab thresholds fitted for each.

    For every (smooth_window, min_bout) of the grids, `fit_mabe_settings` fits the per lab x
    action thresholds after that smoothing, and the whole chain is scored with the host-equal
    `mabe_score` on these recordings (their `solution_frame`); the best wins (ties: the
    smaller window, then the smaller bout). Fit on validation / out-of-fold recordings.

    Returns:
        (best settings, its score, [{"smooth_window", "min_bout", "score"} per grid point]).
    """
    solution = solution_frame(recs)
    best, best_score, table = None, -1.0, []
    for w in sorted(set(smooth_windows)):
        # the threshold fit does not model min_bout: one fit per smoothing window serves every min_bout
        trial = PostprocessSettings(**{**asdict(settings), "smooth_window": int(w)})
        fitted_w, _ = fit_mabe_settings(recs, probs, class_names, trial, background=background)
        for b in sorted(set(min_bouts)):
            fitted = PostprocessSettings(**{**asdict(fitted_w), "min_bout": int(b)})
            sub = submission_frame(recs, postprocess_recordings(recs, probs, fitted, class_names, background=background),
                                  background=background)
            score = mabe_score(solution, sub) if len(solution) and len(sub) else 0.0
            table.append({"smooth_window": int(w), "min_bout": int(b), "score": score})
            if score > best_score + 1e-12:
                best, best_score = fitted, score
    return best, best_score, table
