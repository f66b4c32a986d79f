"""The Kaggle MABe-2025 competition's text: triples, solution and submission tables, scorer input.

The one owner of the competition's grammar. The reader (trainer/data/mabe25.py) parses
`behaviors_labeled` here, predict/evaluate write submissions here, the scorer
(trainer/metrics.py: `mabe_score`) reads its tables only through `host_rows`, and
trainer/score_submission.py builds its solution here.

Grammar:
- a mouse is written `mouse<N>`; a triple is the text "agent,target,action", the target
  written `self` when it is the agent ("mouse1,mouse2,sniff", "mouse1,self,rear");
- a video's `behaviors_labeled` is a JSON list of triples: the only triples annotated,
  and the only ones scored, in that video;
- solution (truth) and submission (prediction) rows are intervals: video_id, agent_id,
  target_id, action, start_frame, stop_frame (stop exclusive); a solution row also
  carries lab_id and behaviors_labeled, a submission row a row_id.

The same text is read two ways, on purpose:
- the reader is lenient (`parse_behaviors_labeled`, `mouse_number`): 1, "1", " mouse1"
  are mouse 1 and `self` means the agent;
- the host compares text exactly (`host_text`, `host_whitelist`): "1" != "mouse1", 44
  reads "44", and "mouse1,mouse1,rear" does not match a whitelisted "mouse1,self,rear".
  So the writers here write `mouse<N>` / `self`, as Kaggle's own files do.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from trainer.data.common import frames_to_intervals
from trainer.data.recording import DataError, Recording

SELF = "self"
INTERVAL_COLUMNS = ["video_id", "agent_id", "target_id", "action", "start_frame", "stop_frame"]
SUBMISSION_COLUMNS = ["row_id", *INTERVAL_COLUMNS]
SOLUTION_COLUMNS = [*INTERVAL_COLUMNS, "lab_id", "behaviors_labeled"]
# a `<split>_annotation/<lab>/<video>.parquet` file
ANNOTATION_COLUMNS = ["agent_id", "target_id", "action", "start_frame", "stop_frame"]
# joins the parts of a composite key; no id or action holds it
_SEP = "\x1f"


class SubmissionError(DataError):
    """The host's scorer would reject this solution/submission (one line; CLIs exit 2)."""


# --------------------------------------------------------------------------- triples


def mouse_number(value, *, source: str) -> int:
    """1 for 1, "1", "mouse1"; DataError otherwise."""
    m = re.fullmatch(r"(?:mouse)?\s*(\d+)", str(value).strip())
    if not m:
        raise DataError(f"{source}: mouse id '{value}' is neither a number nor 'mouse<N>'")
    return int(m.group(1))


def mouse_text(value) -> str:
    """A mouse id as Kaggle's files write it: "mouse<N>" for a number, text "mouse..." kept as is."""
    text = str(value)
    return text if text.startswith("mouse") else f"mouse{value}"


def target_text(agent: str, target: str) -> str:
    """The target id text as a triple writes it: `self` when it is the agent's."""
    return SELF if target == agent else target


def join_triple(agent, target, action):
    """"agent,target,action" of three texts, or elementwise of three (N,) object arrays."""
    return agent + "," + target + "," + action


def triple_text(agent: int, target: int, action: str) -> str:
    """The text form of a triple of mouse numbers: "mouse1,mouse2,sniff" / "mouse1,self,rear"."""
    agent_text = mouse_text(agent)
    return join_triple(agent_text, target_text(agent_text, mouse_text(target)), action)


def parse_behaviors_labeled(value, *, source: str) -> list[tuple[int, int, str]]:
    """The JSON list of "agent,target,action" strings -> sorted unique (agent, target, action).

    Lenient, as a reader: ids are mouse numbers (`mouse_number`), `self` is the agent,
    spaces around the parts are ignored; a missing/empty value is []. DataError naming
    `source` when the value is not such a list.
    """
    if value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() in ("", "[]"):
        return []
    items = value
    if isinstance(value, str):
        try:
            items = json.loads(value)
        except json.JSONDecodeError:
            raise DataError(f"{source}: behaviors_labeled is not a JSON list of \"agent,target,action\"") from None
    if not isinstance(items, list | tuple | np.ndarray):
        raise DataError(f"{source}: behaviors_labeled is {value!r}, not a JSON list of \"agent,target,action\"")
    out = set()
    for item in items:
        parts = [s.strip() for s in str(item).split(",")]
        if len(parts) != 3:
            raise DataError(f"{source}: behaviors_labeled entry '{item}' is not \"agent,target,action\"")
        agent = mouse_number(parts[0], source=source)
        target = agent if parts[1] == SELF else mouse_number(parts[1], source=source)
        out.add((agent, target, parts[2]))
    return sorted(out)


# --------------------------------------------------------------------------- solution and submission tables


def video_solution(ann: pd.DataFrame, *, video_id, lab_id, behaviors_labeled: str) -> pd.DataFrame:
    """One video's truth intervals in the scorer's form (SOLUTION_COLUMNS).

    Args:
        ann: annotation rows (ANNOTATION_COLUMNS); ids numbers or "mouse<N>" text, frames
            as given (the scorer checks them).
        video_id, lab_id: written on every row.
        behaviors_labeled: the video's JSON list text, written on every row.
    """
    agent = [mouse_text(a) for a in ann["agent_id"]]
    target = [mouse_text(t) for t in ann["target_id"]]
    return pd.DataFrame({
        "video_id": video_id,
        "agent_id": agent,
        "target_id": [target_text(a, t) for a, t in zip(agent, target, strict=True)],
        "action": ann["action"].astype(str).to_numpy(),
        "start_frame": ann["start_frame"].to_numpy(),
        "stop_frame": ann["stop_frame"].to_numpy(),
        "lab_id": lab_id,
        "behaviors_labeled": behaviors_labeled,
    })


def solution_frame(recs: list[Recording]) -> pd.DataFrame:
    """Ground-truth intervals of mabe25 recordings in the scorer's form (SOLUTION_COLUMNS).

    The input `trainer.metrics.mabe_score` expects as `solution`: ids "mouse<N>" / "self",
    lab_id, behaviors_labeled (JSON list). Uses the raw annotation table
    (meta["intervals"]), so overlapping truth bouts are scored as annotated; recordings
    without it (test videos) add no row.
    """
    parts = [
        video_solution(r.meta["intervals"], video_id=r.video_id, lab_id=r.meta.get("lab_id", ""),
                       behaviors_labeled=json.dumps(r.meta.get("behaviors_labeled", [])))
        for r in recs if r.meta.get("intervals") is not None and len(r.meta["intervals"])
    ]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame([], columns=SOLUTION_COLUMNS)


def _submission_id(rec: Recording, m: int) -> str:
    """Mouse index m of a recording as a submission writes it: its "mouse.." name, else mouse<m + 1>."""
    name = str(rec.mouse_ids[m])
    return name if name.startswith("mouse") else mouse_text(m + 1)


def submission_frame(recs: list[Recording], labels: list[np.ndarray], *, background: int = 0) -> pd.DataFrame:
    """Kaggle MABe-2025 submission from per-frame labels of mabe25 recordings.

    Args:
        recs: mabe25 recordings (meta["behaviors_labeled"] lists the whitelisted triples).
        labels: per recording (T, P) int labels, one column per rec.pairs entry.

    Returns:
        DataFrame SUBMISSION_COLUMNS (row_id, video_id, agent_id, target_id, action,
        start_frame, stop_frame); ids written `mouse<N>`, target `self` when it is the
        agent; only triples in the video's behaviors_labeled (all triples when it has
        none); no two actions of one pair share a frame because each pair has one label
        per frame.
    """
    rows = []
    for rec, y in zip(recs, labels, strict=True):
        y = np.asarray(y).reshape(rec.num_frames, -1)
        allowed = set(rec.meta.get("behaviors_labeled") or [])
        for p, (a, t) in enumerate(rec.pairs):
            agent = _submission_id(rec, a)
            target = SELF if a == t else _submission_id(rec, t)  # same mouse index, whatever its name
            for c, s, e in frames_to_intervals(y[:, p], background=background):
                action = rec.class_names[c]
                if allowed and join_triple(agent, target, action) not in allowed:
                    continue
                rows.append((rec.video_id, agent, target, action, s, e))
    df = pd.DataFrame(rows, columns=INTERVAL_COLUMNS)
    df.insert(0, "row_id", np.arange(len(df), dtype=np.int64))
    return df


# --------------------------------------------------------------------------- the scorer's input, as the host reads it


def host_text(values: pd.Series) -> np.ndarray:
    """(N,) object: ids as the host compares them, str(value) ("1" != "mouse1", 44 -> "44")."""
    return np.array(list(map(str, values.to_numpy())), dtype=object).reshape(len(values))


def host_whitelist(value, where: str) -> set:
    """behaviors_labeled JSON text -> the set the host tests "agent,target,action" text against."""
    try:
        return set(json.loads(value))
    except (TypeError, ValueError):
        raise SubmissionError(f"{where}: behaviors_labeled {value!r} is not a JSON list of "
                              "\"agent,target,action\" strings (the host rejects this)") from None


def host_key(video, agent, target, action):
    """The host's key "video_agent_target_action" of texts or (N,) object arrays: one scoring unit."""
    return video + "_" + agent + "_" + target + "_" + action


def key_action(keys: np.ndarray) -> np.ndarray:
    """(N,) object: the action of each host key, read as the host does: the text after the last
    "_" (so "approach_fast" and "chase_fast" are one action, "fast")."""
    return np.array([k.rsplit("_", 1)[-1] for k in keys], dtype=object)


def describe_pair(pair: str) -> str:
    """The `HostRows.pair` key as text for an error line: "lab L, video V, agent,target A,T"."""
    return "lab {}, video {}, agent,target {}".format(*pair.split(_SEP))


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


def _labs_and_whitelists(solution: pd.DataFrame, videos: pd.DataFrame | None) -> tuple[np.ndarray, np.ndarray]:
    """(lab_id text (N,), behaviors_labeled value (N,)) of each solution row, from `videos` or the solution."""
    if videos is not None:
        for col in ("video_id", "lab_id", "behaviors_labeled"):
            if col not in videos.columns:
                raise SubmissionError(f"videos table: missing column '{col}'")
        info = videos.assign(video_id=host_text(videos["video_id"])).drop_duplicates("video_id").set_index("video_id")
        vids = host_text(solution["video_id"])
        unknown = sorted(set(vids) - set(info.index))
        if unknown:
            raise SubmissionError(f"solution video {unknown[0]} has no row in the videos table")
        return host_text(info.loc[vids, "lab_id"]), info.loc[vids, "behaviors_labeled"].to_numpy(dtype=object)
    for col in ("lab_id", "behaviors_labeled"):
        if col not in solution.columns:
            raise SubmissionError(f"solution: missing column '{col}' (or pass videos=train.csv table)")
    return host_text(solution["lab_id"]), solution["behaviors_labeled"].to_numpy(dtype=object)


@dataclass(frozen=True)
class HostRows:
    """The rows the host scores, one entry per row, as it reads them.

    lab: (N,) lab_id text; key: (N,) `host_key` text (with the lab, the scoring unit);
    action: (N,) action text; start, stop: (N,) int64 frames, range(start, stop);
    pair: (N,) text key of (lab, video, "agent,target") (`describe_pair`), predictions only.
    """

    lab: np.ndarray
    key: np.ndarray
    action: np.ndarray
    start: np.ndarray
    stop: np.ndarray
    pair: np.ndarray | None = None


def host_rows(
    solution: pd.DataFrame, submission: pd.DataFrame, *, videos: pd.DataFrame | None = None
) -> tuple[HostRows, HostRows]:
    """Check a solution and a submission as the host does and return the rows it scores.

    Every solution row is kept. A submission row is kept once per lab holding its video
    (normally one) when its text "agent,target,action" is in that video's
    behaviors_labeled - the whitelist of the video's first solution row in that lab; rows
    of videos not in the solution are dropped.

    Raises SubmissionError, in the host's order: empty solution or submission, a missing
    column, a bad `videos` table, stop_frame < start_frame in any row, non-integer frames
    in a solution row, unreadable behaviors_labeled, non-integer frames in a kept
    submission row. (Two actions of one pair on one frame is the scorer's check.)

    Returns:
        (truth rows, kept prediction rows, the latter with `pair`).
    """
    if solution is None or len(solution) == 0:
        raise SubmissionError("empty solution: nothing to score against (the host rejects this)")
    if submission is None or len(submission) == 0:
        raise SubmissionError("empty submission: no predicted intervals (the host rejects this)")
    for df, what in ((solution, "solution"), (submission, "submission")):
        missing = [c for c in INTERVAL_COLUMNS if c not in df.columns]
        if missing:
            raise SubmissionError(f"{what}: missing column '{missing[0]}' (needs {', '.join(INTERVAL_COLUMNS)})")
    labs, bl = _labs_and_whitelists(solution, videos)

    s_start, s_stop, s_int = _frame_columns(solution, "solution")
    p_start, p_stop, p_int = _frame_columns(submission, "submission")
    _require_integers(s_int, solution, np.arange(len(solution)), "solution")
    s_vid, s_agent, s_target, s_action = (host_text(solution[c]) for c in INTERVAL_COLUMNS[:4])
    # whitelist of each (lab, video): the video's first solution row in that lab, as the host
    white: dict[tuple, set] = {}
    labs_of: dict[str, list] = {}
    for lab, vid, value in zip(labs, s_vid, bl, strict=True):
        if (lab, vid) not in white:
            white[(lab, vid)] = host_whitelist(value, f"solution video {vid}")
            labs_of.setdefault(vid, []).append(lab)

    p_vid, p_agent, p_target, p_action = (host_text(submission[c]) for c in INTERVAL_COLUMNS[:4])
    kept_rows, kept_labs = [], []
    for i, (vid, tr) in enumerate(zip(p_vid, join_triple(p_agent, p_target, p_action), strict=True)):
        for lab in labs_of.get(vid, ()):
            if tr in white[(lab, vid)]:
                kept_rows.append(i)
                kept_labs.append(lab)
    rows = np.asarray(kept_rows, dtype=np.int64)
    _require_integers(p_int, submission, rows, "submission")

    truth = HostRows(lab=labs, key=host_key(s_vid, s_agent, s_target, s_action), action=s_action,
                     start=s_start, stop=s_stop)
    p_lab = np.asarray(kept_labs, dtype=object)
    pred = HostRows(lab=p_lab, key=host_key(p_vid, p_agent, p_target, p_action)[rows], action=p_action[rows],
                    start=p_start[rows], stop=p_stop[rows],
                    pair=p_lab + _SEP + p_vid[rows] + _SEP + p_agent[rows] + "," + p_target[rows])
    return truth, pred
