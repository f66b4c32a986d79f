"""Test oracle: a literal, slow re-implementation of the MABe-2025 host metric.

Written from the rules in shared/FORMATS.md (MABe 2025 section), one rule per line, with
Python sets of frames and text keys, so that it is easy to check by eye. It is used only by
the tests (tests/test_mabe_host_equality.py) to pin `trainer.metrics.mabe_score` to the
host's behaviour, quirks included:

- ids (video, agent, target) are compared as text: `str(value)`; "1" != "mouse1", and a
  self target must read whatever `behaviors_labeled` says ("self");
- a submission row is kept only if its video is in the solution and the text
  "agent,target,action" is an element of the video's `behaviors_labeled` JSON list (the
  list of the video's first solution row in the lab);
- intervals are frame sets range(start, stop) (negative starts allowed); frames must be
  integers; stop < start is an error (solution and submission, checked on every row);
- within one lab and video, two different actions of one "agent,target" may not share a
  frame (error); repeated frames of one key count once;
- truth keys "video_agent_target_action" hold the truth frames; every kept predicted key
  is added to that table too, even a zero-length one (the host's defaultdict look-up), so a
  predicted, whitelisted action missing from a lab's truth enters the lab's mean with F1 0;
- actions are grouped by the text after the last "_" of the key;
- F1 per action from pooled TP/FP/FN (0 when all three are 0); lab = mean over its
  actions; score = mean over labs; empty solution/submission, missing columns or a
  missing/invalid behaviors_labeled are errors.

Every error is raised as `HostError` (the host's own exception types differ; the tests only
ask "does the host reject this input").
"""

from __future__ import annotations

import json
from collections import defaultdict

import pandas as pd

COLUMNS = ["video_id", "agent_id", "target_id", "action", "start_frame", "stop_frame"]


class HostError(Exception):
    """The host would reject this solution/submission."""


def _frames(start, stop) -> set:
    """range(start, stop) as a set; the host calls range(), which rejects non-integers."""
    if isinstance(start, bool) or isinstance(stop, bool):
        raise HostError("boolean frame")
    try:
        return set(range(start, stop))
    except TypeError as e:
        raise HostError(f"frames must be integers: {start!r}, {stop!r}") from e


def _as_int_if_numpy(v):
    # pandas hands numpy scalars; the host (polars .to_dicts) hands Python ints
    return v.item() if hasattr(v, "item") and not isinstance(v, str) else v


def _rows(df: pd.DataFrame) -> list[dict]:
    return [{k: _as_int_if_numpy(v) for k, v in r.items()} for r in df.to_dict("records")]


def host_score(solution: pd.DataFrame, submission: pd.DataFrame, beta: float = 1.0) -> float:
    """The host's score of `submission` against `solution` (lab_id, behaviors_labeled included)."""
    return host_score_rows(_rows(solution), _rows(submission), beta)


def host_score_rows(sol: list[dict], sub: list[dict], beta: float = 1.0) -> float:
    """`host_score` of tables given as lists of row dicts (one dict per row, same keys)."""
    if len(sol) == 0 or len(sub) == 0:
        raise HostError("missing solution or submission data")
    for col in COLUMNS:
        if col not in sol[0] or col not in sub[0]:
            raise HostError(f"missing column {col}")
    for col in ("lab_id", "behaviors_labeled"):
        if col not in sol[0]:
            raise HostError(f"solution misses {col}")
    for r in sol + sub:
        try:
            if not r["start_frame"] <= r["stop_frame"]:
                raise HostError("stop_frame < start_frame")
        except TypeError as e:
            raise HostError("frames not comparable") from e
    sol_videos = {str(r["video_id"]) for r in sol}
    sub = [r for r in sub if str(r["video_id"]) in sol_videos]

    def key(r):
        return "_".join([str(r["video_id"]), str(r["agent_id"]), str(r["target_id"]), str(r["action"])])

    labs = []
    for r in sol:
        if str(r["lab_id"]) not in labs:
            labs.append(str(r["lab_id"]))
    lab_scores = []
    for lab in labs:
        lab_sol = [r for r in sol if str(r["lab_id"]) == lab]
        lab_videos = []
        for r in lab_sol:
            if str(r["video_id"]) not in lab_videos:
                lab_videos.append(str(r["video_id"]))
        lab_sub = [r for r in sub if str(r["video_id"]) in lab_videos]

        truth = defaultdict(set)
        for r in lab_sol:
            truth[key(r)] |= _frames(r["start_frame"], r["stop_frame"])
        pred = defaultdict(set)
        for video in lab_videos:
            first = next(r for r in lab_sol if str(r["video_id"]) == video)
            try:
                allowed = set(json.loads(first["behaviors_labeled"]))
            except (TypeError, ValueError) as e:
                raise HostError(f"video {video}: behaviors_labeled unreadable") from e
            pair_frames = defaultdict(set)
            for r in lab_sub:
                if str(r["video_id"]) != video:
                    continue
                if ",".join([str(r["agent_id"]), str(r["target_id"]), str(r["action"])]) not in allowed:
                    continue
                k = key(r)
                new = _frames(r["start_frame"], r["stop_frame"]) - pred[k]
                pair = ",".join([str(r["agent_id"]), str(r["target_id"])])
                if pair_frames[pair] & new:
                    raise HostError("two actions of one agent/target pair on the same frame")
                pred[k] |= new
                pair_frames[pair] |= new

        tp, fp, fn = defaultdict(int), defaultdict(int), defaultdict(int)
        for k, p in pred.items():
            act = k.split("_")[-1]
            t = truth[k]  # the quirk: the look-up adds the predicted key to the truth table
            tp[act] += len(p & t)
            fn[act] += len(t - p)
            fp[act] += len(p - t)
        actions = set()
        for k, t in truth.items():
            act = k.split("_")[-1]
            actions.add(act)
            if k not in pred:
                fn[act] += len(t)
        b2 = beta * beta
        f1s = []
        for act in actions:
            if tp[act] + fn[act] + fp[act] == 0:
                f1s.append(0.0)
            else:
                f1s.append((1 + b2) * tp[act] / ((1 + b2) * tp[act] + b2 * fn[act] + fp[act]))
        lab_scores.append(sum(f1s) / len(f1s))
    return sum(lab_scores) / len(lab_scores)
