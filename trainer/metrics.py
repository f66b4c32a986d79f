"""Frame-level scores: per-class F1, macro F1 over behaviours, confusion matrix.

Frames labelled -1 (unlabelled) are excluded everywhere. Macro F1 is the mean over the
behaviour classes, i.e. every class except the background class (CalMS21 convention);
accuracy is reported but never the headline.

`mabe_score` is the exact MABe-2025 (Kaggle) interval score: per lab, per action, frames
pooled over the lab's videos, only the triples a video's `behaviors_labeled` whitelists.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd

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

MABE_COLUMNS = ["video_id", "agent_id", "target_id", "action", "start_frame", "stop_frame"]


class SubmissionError(ValueError):
    """The submission breaks a rule for which the official scorer rejects it (one line)."""


def _mouse_ids(values: pd.Series, *, agents: pd.Series | None, what: str) -> np.ndarray:
    """Mouse numbers from 1 / "1" / "mouse1" (and "self" = the agent, for targets)."""
    uniq = pd.unique(values.astype(str).str.strip())
    lut = {}
    for u in uniq:
        m = re.fullmatch(r"(?:mouse)?(\d+)", u)
        if m:
            lut[u] = int(m.group(1))
        elif u == "self" and agents is not None:
            lut[u] = -1
        else:
            raise ValueError(f"{what}: id '{u}' is not a mouse number, 'mouse<N>' or 'self'")
    out = values.astype(str).str.strip().map(lut).to_numpy(dtype=np.int64)
    if agents is not None:
        out = np.where(out == -1, agents, out)
    return out


def _frames(values: pd.Series, what: str) -> np.ndarray:
    v = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    if np.isnan(v).any() or (v != np.round(v)).any():
        raise ValueError(f"{what}: start_frame/stop_frame must be whole numbers")
    if (v < 0).any():
        raise ValueError(f"{what}: start_frame/stop_frame must be >= 0")
    return v.astype(np.int64)


def _normalise(df: pd.DataFrame, what: str) -> pd.DataFrame:
    """video_id as text, agent/target as mouse numbers (self -> agent), integer frames."""
    missing = [c for c in MABE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing column '{missing[0]}' (needs {', '.join(MABE_COLUMNS)})")
    out = pd.DataFrame({"video_id": df["video_id"].astype(str).to_numpy()})
    out["agent"] = _mouse_ids(df["agent_id"], agents=None, what=what)
    out["target"] = _mouse_ids(df["target_id"], agents=out["agent"].to_numpy(), what=what)
    out["action"] = df["action"].astype(str).to_numpy()
    out["start"] = _frames(df["start_frame"], what)
    out["stop"] = _frames(df["stop_frame"], what)
    return out


def _whitelist(value) -> set[tuple[int, int, str]]:
    """behaviors_labeled (JSON text or list of "agent,target,action") -> {(agent, target, action)}."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return set()
    items = json.loads(value) if isinstance(value, str) else list(value)
    out = set()
    for item in items:
        a, t, act = (s.strip() for s in str(item).split(","))
        an = int(re.sub(r"^mouse", "", a))
        out.add((an, an if t == "self" else int(re.sub(r"^mouse", "", t)), act))
    return out


def _coverage(starts: np.ndarray, stops: np.ndarray, length: int) -> np.ndarray:
    """(length,) bool union of the frame ranges [start, stop); repeated frames count once."""
    d = np.zeros(length + 1, dtype=np.int64)
    keep = stops > starts  # range(start, stop) is empty otherwise, as in the official scorer
    np.add.at(d, starts[keep], 1)
    np.add.at(d, stops[keep], -1)
    return np.cumsum(d[:-1]) > 0


def mabe_score_details(
    solution: pd.DataFrame,
    submission: pd.DataFrame,
    *,
    videos: pd.DataFrame | None = None,
    beta: float = 1.0,
) -> dict:
    """The MABe-2025 (Kaggle) score with its per-lab / per-action breakdown.

    Rules (shared/FORMATS.md): intervals are frame sets range(start_frame, stop_frame);
    per video, submission rows whose "agent,target,action" is not in the video's
    behaviors_labeled are ignored; two different actions of one (video, agent, target)
    sharing a frame reject the submission (SubmissionError); repeated/overlapping frames of
    one (video, agent, target, action) count once; TP/FP/FN are frame counts pooled per
    action over a lab's videos; a lab's score is the mean F-beta over the actions in that
    lab's ground truth (never predicted = 0; actions absent from its truth are ignored);
    the final score is the mean over labs. Submission rows of videos not in the solution
    are dropped.

    Args:
        solution: truth intervals: video_id, agent_id, target_id, action, start_frame,
            stop_frame (ids as 1 / "mouse1", target "self" allowed) plus lab_id and
            behaviors_labeled (JSON list per row) unless `videos` supplies them.
        submission: predicted intervals with the same six columns (row_id optional).
        videos: optional train.csv-like table (video_id, lab_id, behaviors_labeled).
        beta: F-beta weight (1 = F1, the competition's setting).

    Returns:
        {"score": float, "labs": {lab_id: {"score", "f1": {action: f},
        "tp"/"fp"/"fn": {action: frames}}}}.
    """
    if solution is None or len(solution) == 0:
        raise ValueError("empty solution: nothing to score against")
    if submission is None or len(submission) == 0:
        raise ValueError("empty submission: no predicted intervals")
    sol = _normalise(solution, "solution")
    sub = _normalise(submission, "submission")
    if videos is not None:
        info = videos.assign(video_id=videos["video_id"].astype(str)).drop_duplicates("video_id")
        info = info.set_index("video_id")
        unknown = sorted(set(sol["video_id"]) - set(info.index))
        if unknown:
            raise ValueError(f"solution video {unknown[0]} has no row in the videos table")
        sol["lab_id"] = info.loc[sol["video_id"], "lab_id"].astype(str).to_numpy()
        bl = info.loc[sol["video_id"], "behaviors_labeled"].to_numpy()
    else:
        for col in ("lab_id", "behaviors_labeled"):
            if col not in solution.columns:
                raise ValueError(f"solution: missing column '{col}' (or pass videos=train.csv table)")
        sol["lab_id"] = solution["lab_id"].astype(str).to_numpy()
        bl = solution["behaviors_labeled"].to_numpy()
    whitelist: dict[str, set] = {}
    for vid, value in zip(sol["video_id"], bl, strict=True):
        if vid not in whitelist:
            whitelist[vid] = _whitelist(value)
    sub = sub[sub["video_id"].isin(set(sol["video_id"]))]
    allowed = [(a, t, act) in whitelist[v] for v, a, t, act in
               zip(sub["video_id"], sub["agent"], sub["target"], sub["action"], strict=True)]
    sub = sub[np.asarray(allowed, dtype=bool)] if len(sub) else sub

    labs = {}
    for lab, lab_sol in sol.groupby("lab_id", sort=True):
        actions = sorted(set(lab_sol["action"]))
        tp = dict.fromkeys(actions, 0)
        fp = dict.fromkeys(actions, 0)
        fn = dict.fromkeys(actions, 0)
        lab_sub = sub[sub["video_id"].isin(set(lab_sol["video_id"]))]
        sub_by_video = dict(tuple(lab_sub.groupby("video_id", sort=False)))
        for vid, vsol in lab_sol.groupby("video_id", sort=False):
            vsub = sub_by_video.get(vid, sub.iloc[:0])
            length = int(max(vsol["stop"].max(), vsub["stop"].max() if len(vsub) else 0))
            truth = {k: _coverage(g["start"].to_numpy(), g["stop"].to_numpy(), length)
                     for k, g in vsol.groupby(["agent", "target", "action"], sort=False)}
            pred = {}
            for (a, t), g in vsub.groupby(["agent", "target"], sort=False):
                per_action = {act: _coverage(h["start"].to_numpy(), h["stop"].to_numpy(), length)
                              for act, h in g.groupby("action", sort=False)}
                if len(per_action) > 1:
                    stacked = np.sum(list(per_action.values()), axis=0)
                    if (stacked > 1).any():
                        f = int(np.argmax(stacked > 1))
                        both = sorted(act for act, m in per_action.items() if m[f])
                        raise SubmissionError(
                            f"video {vid}, agent mouse{a}, target {'self' if a == t else f'mouse{t}'}: "
                            f"actions {both[0]} and {both[1]} both predicted on frame {f} (submission rejected)"
                        )
                for act, m in per_action.items():
                    pred[(a, t, act)] = m
            for key in set(truth) | set(pred):
                act = key[2]
                if act not in tp:
                    continue  # false positives of an action absent from this lab's truth change nothing
                tm, pm = truth.get(key), pred.get(key)
                if tm is None:
                    fp[act] += int(pm.sum())
                elif pm is None:
                    fn[act] += int(tm.sum())
                else:
                    tp[act] += int((tm & pm).sum())
                    fp[act] += int((pm & ~tm).sum())
                    fn[act] += int((tm & ~pm).sum())
        b2 = beta * beta
        f1 = {}
        for act in actions:
            denom = (1 + b2) * tp[act] + b2 * fn[act] + fp[act]
            f1[act] = float((1 + b2) * tp[act] / denom) if denom else 0.0
        labs[str(lab)] = {"score": float(np.mean(list(f1.values()))), "f1": f1, "tp": tp, "fp": fp, "fn": fn}
    return {"score": float(np.mean([v["score"] for v in labs.values()])), "labs": labs}


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
