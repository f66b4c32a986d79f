"""Frame-level scores: per-class F1, macro F1 over behaviours, confusion matrix.

Frames labelled -1 (unlabelled) are excluded everywhere. Macro F1 is the mean over the
behaviour classes, i.e. every class except the background class (CalMS21 convention);
accuracy is reported but never the headline.

`mabe_score` is the MABe-2025 (Kaggle) interval score, equal to the host's metric including
its quirks (tests/test_mabe_host_equality.py checks it against a literal re-implementation):
per lab, per action, frames pooled over the lab's videos, only the triples a video's
`behaviors_labeled` whitelists, every predicted whitelisted action counted in its lab.
Its tables are read and checked as the host reads them by `trainer.kaggle_mabe.host_rows`;
the frame arithmetic is here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from trainer.data.recording import UNLABELLED
from trainer.kaggle_mabe import SubmissionError, describe_pair, host_rows, key_action


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
    return scores_from_confusion(confusion_matrix(y_true, y_pred, len(class_names)), class_names, background)


def scores_from_confusion(cm: np.ndarray, class_names: list[str], background: str | None = "other") -> dict:
    """`frame_scores` from (C, C) counts (accumulated video by video)."""
    C = len(class_names)
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


# --------------------------------------------------------------------------- MABe-2025 score


def _coverage(unit: np.ndarray, start: np.ndarray, stop: np.ndarray, channel: np.ndarray,
              n_units: int, n_channels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames covered per unit and channel by the union of [start, stop) ranges.

    Args:
        unit: (N,) int unit of each range (0..n_units-1); channel: (N,) int channel.
    Returns:
        (sweep positions (E,), unit per position (E,), coverage counts (E, n_channels) right
        after each position); segment i is [pos[i], pos[i+1]) when unit[i] == unit[i+1].
        Repeated frames of one unit/channel count once when the caller tests counts > 0.
    """
    keep = stop > start  # range(start, stop) is empty otherwise
    unit, start, stop, channel = unit[keep], start[keep], stop[keep], channel[keep]
    pos = np.concatenate([start, stop])
    u = np.concatenate([unit, unit])
    delta = np.zeros((len(pos), n_channels), dtype=np.int64)
    idx = np.arange(len(start))
    delta[idx, channel] = 1
    delta[idx + len(start), channel] = -1
    order = np.lexsort((pos, u))
    # every unit's deltas sum to 0, so a global cumulative sum is a per-unit one
    return pos[order], u[order], np.cumsum(delta[order], axis=0)


def _segments(pos: np.ndarray, u: np.ndarray) -> np.ndarray:
    """(E-1,) length of each sweep segment inside one unit (0 across unit boundaries)."""
    return np.where(u[1:] == u[:-1], np.diff(pos), 0)


def _check_one_action_per_frame(key_id, pair_id, start, stop, row_action, where) -> None:
    """Two different actions of one (lab, video, "agent,target") sharing a frame -> SubmissionError.

    Args:
        key_id: (N,) unit (key) of each kept submission row; pair_id: (n_keys,) pair of each
        key; start/stop: (N,) frames; row_action: (N,) action text; where: text per pair.
    """
    if len(start) == 0:
        return
    n_keys = int(key_id.max()) + 1
    pos, u, cnt = _coverage(key_id, start, stop, np.zeros_like(key_id), n_keys, 1)
    seg = _segments(pos, u)
    on = (seg > 0) & (cnt[:-1, 0] > 0)
    # disjoint pieces of each key's frame set, then count keys per frame within each pair
    p_key = u[:-1][on]
    p_start, p_stop = pos[:-1][on], pos[1:][on]
    p_pair = pair_id[p_key]
    n_pairs = int(pair_id.max()) + 1
    pos2, u2, cnt2 = _coverage(p_pair, p_start, p_stop, np.zeros_like(p_pair), n_pairs, 1)
    both = (_segments(pos2, u2) > 0) & (cnt2[:-1, 0] > 1)
    if both.any():
        i = int(np.argmax(both))
        frame, pair = int(pos2[i]), int(u2[i])
        on_frame = (pair_id[key_id] == pair) & (start <= frame) & (frame < stop)
        acts = " and ".join(sorted(set(row_action[on_frame]))) or "two actions"
        raise SubmissionError(f"{where[pair]}: actions {acts} both predicted on frame {frame} "
                              "(one action per agent/target and frame; the host rejects the submission)")


def mabe_score_details(
    solution: pd.DataFrame,
    submission: pd.DataFrame,
    *,
    videos: pd.DataFrame | None = None,
    beta: float = 1.0,
) -> dict:
    """The MABe-2025 (Kaggle) score with its per-lab / per-action breakdown, equal to the host's.

    Rules (shared/FORMATS.md, docs/formats.md "Scoring"): ids are compared as text
    (str(value): "1" != "mouse1", a self target must read as in behaviors_labeled);
    intervals are frame sets range(start_frame, stop_frame) (negative starts allowed);
    submission rows of videos not in the solution are dropped; per lab and video,
    submission rows whose text "agent,target,action" is not in the video's
    behaviors_labeled are ignored; two different actions of one (video, agent, target)
    sharing a frame reject the submission; repeated frames of one key count once; TP/FP/FN
    are frame counts pooled per action over a lab's videos, actions being the text after
    the last "_" of the key "video_agent_target_action"; a lab's actions are those of its
    truth **plus those of every kept prediction, even a zero-length one** (the host's
    quirk: a predicted action the lab never shows enters its mean with F1 0); F1 is 0 when
    TP+FP+FN = 0; lab score = mean over its actions; final = mean over labs.

    Raises SubmissionError (a DataError/ValueError) where the host fails: empty solution or
    submission, missing columns, missing or unreadable behaviors_labeled, stop_frame <
    start_frame in any row, non-integer frames in a scored row, overlapping actions.

    Args:
        solution: truth intervals: video_id, agent_id, target_id, action, start_frame,
            stop_frame plus lab_id and behaviors_labeled (JSON text per row) unless
            `videos` supplies them.
        submission: predicted intervals with the same six columns (row_id optional).
        videos: optional train.csv-like table (video_id, lab_id, behaviors_labeled).
        beta: F-beta weight (1 = F1, the competition's setting).

    Returns:
        {"score": float, "labs": {lab_id: {"score", "f1": {action: f},
        "tp"/"fp"/"fn": {action: frames}}}}.
    """
    truth, pred = host_rows(solution, submission, videos=videos)
    # units = (lab, key); a unit's action is read from its key, as the host does
    n_sol = len(truth.key)
    unit_lab = np.concatenate([truth.lab, pred.lab])
    unit_key = np.concatenate([truth.key, pred.key])
    codes, uniq = pd.factorize(unit_lab + "\x1f" + unit_key)
    codes = codes.astype(np.int64)
    n_units = len(uniq)
    first = np.zeros(n_units, dtype=np.int64)
    first[codes[::-1]] = np.arange(len(codes))[::-1]
    u_lab = unit_lab[first]
    u_action = key_action(unit_key[first])

    if len(pred.key):
        pair_id, pair_uniq = pd.factorize(pred.pair)
        key_pair = np.zeros(n_units, dtype=np.int64)
        key_pair[codes[n_sol:]] = pair_id
        _check_one_action_per_frame(codes[n_sol:], key_pair, pred.start, pred.stop, pred.action,
                                    [describe_pair(p) for p in pair_uniq])

    start = np.concatenate([truth.start, pred.start])
    stop = np.concatenate([truth.stop, pred.stop])
    channel = np.concatenate([np.zeros(n_sol, dtype=np.int64), np.ones(len(pred.key), dtype=np.int64)])
    pos, u, cnt = _coverage(codes, start, stop, channel, n_units, 2)
    seg = _segments(pos, u)
    t_on, p_on = cnt[:-1, 0] > 0, cnt[:-1, 1] > 0
    n_true = np.bincount(u[:-1], weights=seg * t_on, minlength=n_units).astype(np.int64)
    n_pred = np.bincount(u[:-1], weights=seg * p_on, minlength=n_units).astype(np.int64)
    n_tp = np.bincount(u[:-1], weights=seg * (t_on & p_on), minlength=n_units).astype(np.int64)

    counts: dict[str, dict[str, list]] = {}
    for lab, act, tp_, pr, tr in zip(u_lab, u_action, n_tp, n_pred, n_true, strict=True):
        c = counts.setdefault(str(lab), {}).setdefault(act, [0, 0, 0])
        c[0] += int(tp_)
        c[1] += int(pr - tp_)
        c[2] += int(tr - tp_)
    b2 = beta * beta
    labs_out = {}
    for lab in sorted(counts):
        acts = sorted(counts[lab])
        f1 = {}
        for act in acts:
            tp_, fp_, fn_ = counts[lab][act]
            denom = (1 + b2) * tp_ + b2 * fn_ + fp_
            f1[act] = float((1 + b2) * tp_ / denom) if denom else 0.0
        labs_out[lab] = {"score": float(np.mean(list(f1.values()))), "f1": f1,
                         **{name: {a: counts[lab][a][j] for a in acts} for j, name in enumerate(("tp", "fp", "fn"))}}
    return {"score": float(np.mean([v["score"] for v in labs_out.values()])), "labs": labs_out}


def mabe_score(
    solution: pd.DataFrame,
    submission: pd.DataFrame,
    *,
    videos: pd.DataFrame | None = None,
    beta: float = 1.0,
) -> float:
    """The official MABe-2025 score (mean over labs of the mean F1 over actions); see
    `mabe_score_details` for the rules and the argument formats."""
    return mabe_score_details(solution, submission, videos=videos, beta=beta)["score"]
