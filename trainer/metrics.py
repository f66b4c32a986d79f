"""Frame-level scores: per-class F1, macro F1 over behaviours, confusion matrix.

Frames labelled -1 (unlabelled) are excluded everywhere. Macro F1 is the mean over the
behaviour classes, i.e. every class except the background class (CalMS21 convention);
accuracy is reported but never the headline.

`mabe_score` is the MABe-2025 (Kaggle) interval score, equal to the host's metric including
its quirks (tests/test_mabe_host_equality.py checks it against a literal re-implementation):
per lab, per action, frames pooled over the lab's videos, only the triples a video's
`behaviors_labeled` whitelists, every predicted whitelisted action counted in its lab.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from trainer.data.recording import UNLABELLED, DataError


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


class SubmissionError(DataError):
    """The host's scorer would reject this solution/submission (one line; CLIs exit 2)."""


def _text(values: pd.Series) -> np.ndarray:
    """Ids as the host compares them: str(value) ("1" != "mouse1", 44 -> "44")."""
    return np.array(list(map(str, values.to_numpy())), dtype=object).reshape(len(values))


def _integer_rows(values: pd.Series) -> np.ndarray:
    """(N,) bool: the value is an integer (not bool, not float - the host's range() rejects floats)."""
    if pd.api.types.is_bool_dtype(values):
        return np.zeros(len(values), dtype=bool)
    if pd.api.types.is_integer_dtype(values):
        return ~values.isna().to_numpy()  # nullable Int64 may hold NA
    if values.dtype == object:
        return np.array([isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in values],
                        dtype=bool)
    return np.zeros(len(values), dtype=bool)


def _as_float(values: pd.Series) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.to_numpy(dtype=np.float64, na_value=np.nan)
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)


def _frame_columns(df: pd.DataFrame, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start, stop, integer) per row; stop < start anywhere is an error, as for the host.

    Non-integer rows get start = stop = 0 and integer = False: the host only fails on them
    when it scores the row, so the caller decides (see `_require_integers`).
    """
    s_num, e_num = (_as_float(df[c]) for c in ("start_frame", "stop_frame"))
    reversed_ = e_num < s_num
    if reversed_.any():
        i = int(np.argmax(reversed_))
        raise SubmissionError(f"{what} row {i}: stop_frame {df['stop_frame'].iat[i]} < start_frame "
                              f"{df['start_frame'].iat[i]} (the host rejects this)")
    ok = _integer_rows(df["start_frame"]) & _integer_rows(df["stop_frame"])
    start = np.zeros(len(df), dtype=np.int64)
    stop = np.zeros(len(df), dtype=np.int64)
    start[ok] = df["start_frame"].to_numpy()[ok].astype(np.int64)
    stop[ok] = df["stop_frame"].to_numpy()[ok].astype(np.int64)
    return start, stop, ok


def _require_integers(ok: np.ndarray, df: pd.DataFrame, rows: np.ndarray, what: str) -> None:
    bad = rows[~ok[rows]]
    if len(bad):
        i = int(bad[0])
        raise SubmissionError(f"{what} row {i}: start_frame/stop_frame must be integers, got "
                              f"{df['start_frame'].iat[i]}, {df['stop_frame'].iat[i]} (the host rejects this)")


def _whitelist(value, where: str) -> set:
    """behaviors_labeled JSON text -> the set the host tests "agent,target,action" against."""
    try:
        return set(json.loads(value))
    except (TypeError, ValueError):
        raise SubmissionError(f"{where}: behaviors_labeled {value!r} is not a JSON list of "
                              "\"agent,target,action\" strings (the host rejects this)") from None


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
    if solution is None or len(solution) == 0:
        raise SubmissionError("empty solution: nothing to score against (the host rejects this)")
    if submission is None or len(submission) == 0:
        raise SubmissionError("empty submission: no predicted intervals (the host rejects this)")
    for df, what in ((solution, "solution"), (submission, "submission")):
        missing = [c for c in MABE_COLUMNS if c not in df.columns]
        if missing:
            raise SubmissionError(f"{what}: missing column '{missing[0]}' (needs {', '.join(MABE_COLUMNS)})")
    if videos is not None:
        for col in ("video_id", "lab_id", "behaviors_labeled"):
            if col not in videos.columns:
                raise SubmissionError(f"videos table: missing column '{col}'")
        info = videos.assign(video_id=_text(videos["video_id"])).drop_duplicates("video_id").set_index("video_id")
        vids = _text(solution["video_id"])
        unknown = sorted(set(vids) - set(info.index))
        if unknown:
            raise SubmissionError(f"solution video {unknown[0]} has no row in the videos table")
        labs = _text(info.loc[vids, "lab_id"])
        bl = info.loc[vids, "behaviors_labeled"].to_numpy(dtype=object)
    else:
        for col in ("lab_id", "behaviors_labeled"):
            if col not in solution.columns:
                raise SubmissionError(f"solution: missing column '{col}' (or pass videos=train.csv table)")
        labs = _text(solution["lab_id"])
        bl = solution["behaviors_labeled"].to_numpy(dtype=object)

    s_start, s_stop, s_int = _frame_columns(solution, "solution")
    p_start, p_stop, p_int = _frame_columns(submission, "submission")
    _require_integers(s_int, solution, np.arange(len(solution)), "solution")
    s_vid, s_agent, s_target, s_action = (_text(solution[c]) for c in ("video_id", "agent_id", "target_id", "action"))
    # whitelist of each (lab, video): the video's first solution row in that lab, as the host
    white: dict[tuple, set] = {}
    labs_of: dict[str, list] = {}
    for lab, vid, value in zip(labs, s_vid, bl, strict=True):
        if (lab, vid) not in white:
            white[(lab, vid)] = _whitelist(value, f"solution video {vid}")
            labs_of.setdefault(vid, []).append(lab)

    # kept submission rows: video in the solution and "agent,target,action" whitelisted
    # there (once per lab holding the video; a video normally has one lab)
    p_vid, p_agent, p_target, p_action = (_text(submission[c]) for c in ("video_id", "agent_id", "target_id", "action"))
    triple = p_agent + "," + p_target + "," + p_action
    kept_rows, kept_labs = [], []
    for i, (vid, tr) in enumerate(zip(p_vid, triple, strict=True)):
        for lab in labs_of.get(vid, ()):
            if tr in white[(lab, vid)]:
                kept_rows.append(i)
                kept_labs.append(lab)
    rows = np.asarray(kept_rows, dtype=np.int64)
    _require_integers(p_int, submission, rows, "submission")

    # units = (lab, key); the key text as the host builds it, its action = text after the last "_"
    n_sol = len(solution)
    unit_lab = np.concatenate([labs, np.asarray(kept_labs, dtype=object)])
    unit_key = np.concatenate([s_vid + "_" + s_agent + "_" + s_target + "_" + s_action,
                               (p_vid + "_" + p_agent + "_" + p_target + "_" + p_action)[rows]])
    codes, uniq = pd.factorize(unit_lab + "\x1f" + unit_key)
    codes = codes.astype(np.int64)
    n_units = len(uniq)
    first = np.zeros(n_units, dtype=np.int64)
    first[codes[::-1]] = np.arange(len(codes))[::-1]
    u_lab = unit_lab[first]
    u_action = np.array([k.rsplit("_", 1)[-1] for k in unit_key[first]], dtype=object)

    if len(rows):
        pair_id, pair_uniq = pd.factorize(unit_lab[n_sol:] + "\x1f" + p_vid[rows] + "\x1f"
                                          + p_agent[rows] + "," + p_target[rows])
        key_pair = np.zeros(n_units, dtype=np.int64)
        key_pair[codes[n_sol:]] = pair_id
        where = ["lab {}, video {}, agent,target {}".format(*p.split("\x1f")) for p in pair_uniq]
        _check_one_action_per_frame(codes[n_sol:], key_pair, p_start[rows], p_stop[rows], p_action[rows],
                                    where)

    start = np.concatenate([s_start, p_start[rows]])
    stop = np.concatenate([s_stop, p_stop[rows]])
    channel = np.concatenate([np.zeros(n_sol, dtype=np.int64), np.ones(len(rows), dtype=np.int64)])
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
