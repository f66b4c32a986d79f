"""trainer.metrics.mabe_score == the host's metric (tests/mabe_host_oracle.py), quirks included.

Hand-made edge cases (each with its hand-computed value or "error") and >= 1,000 random
cases: random labs / videos / whitelists / intervals (zero-length, overlapping, negative
starts) / id spellings, sometimes invalid input. Equal means: both give the same number
within 1e-9, or both reject the input.
"""

from __future__ import annotations

import json
import random
import time

import pandas as pd
import pytest
from mabe_host_oracle import HostError, host_score, host_score_rows

from trainer.kaggle_mabe import SubmissionError
from trainer.metrics import mabe_score, mabe_score_details

COLS = ["video_id", "agent_id", "target_id", "action", "start_frame", "stop_frame"]
ERROR = "error"


def sol_df(rows, wl, labs=None):
    """rows: (video, agent, target, action, start, stop); wl {video: [triples]} (None = no column)."""
    df = pd.DataFrame(rows, columns=COLS)
    labs = labs or {}
    df["lab_id"] = [labs.get(v, "lab1") for v in df["video_id"]]
    if wl is not None:
        df["behaviors_labeled"] = [wl[v] if isinstance(wl[v], str) or wl[v] is None else json.dumps(wl[v])
                                   for v in df["video_id"]]
    return df


def sub_df(rows):
    df = pd.DataFrame(rows, columns=COLS)
    df.insert(0, "row_id", range(len(df)))
    return df


def project(sol, sub):
    try:
        return mabe_score(sol, sub)
    except SubmissionError:
        return ERROR


def host(sol, sub):
    try:
        return host_score(sol, sub)
    except HostError:
        return ERROR


A = "mouse1,mouse2,attack"
M = "mouse1,mouse2,mount"
S = "mouse1,mouse2,sniff"
R = "mouse1,self,rear"
T12 = ("mouse1", "mouse2")


def r(v, pair, act, s, e):
    return (v, *pair, act, s, e)


# (name, solution rows, whitelist, labs, submission rows, expected)
CASES = [
    ("formats_0667", [r("v1", T12, "attack", 0, 10), r("v1", T12, "attack", 30, 40)], {"v1": [A]}, None,
     [r("v1", T12, "attack", 0, 40)], 2 / 3),
    ("formats_unpredicted_truth_action_05", [r("v1", T12, "attack", 0, 9), r("v1", T12, "mount", 15, 24)],
     {"v1": [A]}, None, [r("v1", T12, "attack", 0, 9)], 0.5),
    ("formats_two_labs_025", [r("v1", T12, "attack", 0, 9), r("v1", T12, "mount", 15, 24),
                              r("v2", T12, "attack", 0, 9), r("v2", T12, "mount", 15, 24)],
     {"v1": [A], "v2": [A]}, {"v1": "labA", "v2": "labB"}, [r("v1", T12, "attack", 0, 9)], 0.25),
    ("formats_adjacent_truth_10", [r("v1", T12, "attack", 0, 10), r("v1", T12, "attack", 10, 20)], {"v1": [A]},
     None, [r("v1", T12, "attack", 0, 20)], 1.0),
    ("quirk_predicted_absent_action_05", [r("v1", T12, "attack", 0, 1)], {"v1": [A, M]}, None,
     [r("v1", T12, "attack", 0, 1), r("v1", T12, "mount", 1, 2)], 0.5),
    ("quirk_zero_length_prediction_05", [r("v1", T12, "attack", 0, 1)], {"v1": [A, M]}, None,
     [r("v1", T12, "attack", 0, 1), r("v1", T12, "mount", 1, 1)], 0.5),
    ("quirk_not_whitelisted_prediction_10", [r("v1", T12, "attack", 0, 1)], {"v1": [A]}, None,
     [r("v1", T12, "attack", 0, 1), r("v1", T12, "mount", 1, 2)], 1.0),
    ("quirk_counts_only_in_its_own_lab_075", [r("v1", T12, "attack", 0, 5), r("v2", T12, "attack", 0, 5)],
     {"v1": [A, M], "v2": [A]}, {"v1": "labA", "v2": "labB"},
     [r("v1", T12, "attack", 0, 5), r("v1", T12, "mount", 6, 8), r("v2", T12, "attack", 0, 5)], 0.75),
    ("quirk_other_pair_same_action_no_new_action", [r("v1", T12, "attack", 0, 10)],
     {"v1": [A, "mouse2,mouse1,attack"]}, None,
     [r("v1", T12, "attack", 0, 10), r("v1", ("mouse2", "mouse1"), "attack", 0, 10)], 2 * 10 / 30),
    ("repeated_predicted_frames_count_once", [r("v1", T12, "attack", 0, 10), r("v1", T12, "attack", 30, 40)],
     {"v1": [A]}, None, [r("v1", T12, "attack", 0, 40), r("v1", T12, "attack", 5, 35),
                         r("v1", T12, "attack", 0, 40)], 2 / 3),
    ("overlapping_truth_counts_once", [r("v1", T12, "attack", 0, 10), r("v1", T12, "attack", 5, 15)],
     {"v1": [A]}, None, [r("v1", T12, "attack", 0, 15)], 1.0),
    ("overlap_two_actions_one_pair_error", [r("v1", T12, "attack", 0, 10)], {"v1": [A, S]}, None,
     [r("v1", T12, "attack", 0, 10), r("v1", T12, "sniff", 9, 12)], ERROR),
    ("overlap_after_gap_error", [r("v1", T12, "attack", 0, 10)], {"v1": [A, S]}, None,
     [r("v1", T12, "attack", 0, 10), r("v1", T12, "sniff", 20, 30), r("v1", T12, "attack", 25, 28)], ERROR),
    ("overlap_actions_with_one_suffix_error", [r("v1", T12, "approach_fast", 0, 10)],
     {"v1": ["mouse1,mouse2,approach_fast", "mouse1,mouse2,chase_fast"]}, None,
     [r("v1", T12, "approach_fast", 0, 10), r("v1", T12, "chase_fast", 5, 12)], ERROR),
    ("nullable_integer_frames_with_na_error", [r("v1", T12, "attack", 0, 10)], {"v1": [A]}, None,
     [r("v1", T12, "attack", 0, 10), r("v1", T12, "attack", 12, None)], ERROR),
    ("touching_actions_ok", [r("v1", T12, "attack", 0, 10), r("v1", T12, "sniff", 10, 12)], {"v1": [A, S]}, None,
     [r("v1", T12, "attack", 0, 10), r("v1", T12, "sniff", 10, 12)], 1.0),
    ("same_frames_two_pairs_ok", [r("v1", T12, "sniff", 0, 10), r("v1", ("mouse2", "mouse1"), "sniff", 0, 10)],
     {"v1": [S, "mouse2,mouse1,sniff"]}, None,
     [r("v1", T12, "sniff", 0, 10), r("v1", ("mouse2", "mouse1"), "sniff", 0, 10)], 1.0),
    ("overlap_in_non_whitelisted_rows_ignored", [r("v1", T12, "attack", 0, 10)], {"v1": [A]}, None,
     [r("v1", T12, "attack", 0, 10), r("v1", T12, "chase", 0, 10)], 1.0),
    ("overlap_in_unknown_video_ignored", [r("v1", T12, "attack", 0, 10)], {"v1": [A]}, None,
     [r("v1", T12, "attack", 0, 10), r("v9", T12, "attack", 0, 10), r("v9", T12, "sniff", 0, 10)], 1.0),
    ("zero_length_inside_other_action_ok", [r("v1", T12, "attack", 0, 10)], {"v1": [A, S]}, None,
     [r("v1", T12, "attack", 0, 10), r("v1", T12, "sniff", 5, 5)], 0.5),
    ("integer_ids_in_submission_dropped", [r("v1", T12, "attack", 0, 10)], {"v1": [A]}, None,
     [r("v1", ("1", "2"), "attack", 0, 10)], 0.0),
    ("self_target_written_mouse1_dropped", [r("v1", ("mouse1", "self"), "rear", 0, 10)], {"v1": [R]}, None,
     [r("v1", ("mouse1", "mouse1"), "rear", 0, 10)], 0.0),
    ("self_target_written_self_10", [r("v1", ("mouse1", "self"), "rear", 0, 10)], {"v1": [R]}, None,
     [r("v1", ("mouse1", "self"), "rear", 0, 10)], 1.0),
    ("one_of_two_spellings_wrong_05", [r("v1", ("mouse1", "self"), "rear", 0, 10), r("v1", T12, "attack", 5, 15)],
     {"v1": [R, A]}, None, [r("v1", ("mouse1", "self"), "rear", 0, 10), r("v1", ("1", "2"), "attack", 5, 15)], 0.5),
    ("truth_integer_ids_vs_mouse_ids_0", [r("v1", (1, 2), "attack", 0, 10)], {"v1": [A]}, None,
     [r("v1", T12, "attack", 0, 10)], 0.0),
    ("truth_and_whitelist_integer_ids_10", [r("v1", (1, 2), "attack", 0, 10)], {"v1": ["1,2,attack"]}, None,
     [r("v1", (1, 2), "attack", 0, 10)], 1.0),
    ("integer_video_ids_10", [r(44, T12, "attack", 0, 10)], {44: [A]}, None, [r(44, T12, "attack", 0, 10)], 1.0),
    ("stop_before_start_submission_error", [r("v1", T12, "attack", 0, 10)], {"v1": [A]}, None,
     [r("v1", T12, "attack", 10, 9)], ERROR),
    ("stop_before_start_unknown_video_error", [r("v1", T12, "attack", 0, 10)], {"v1": [A]}, None,
     [r("v1", T12, "attack", 0, 10), r("v9", T12, "attack", 10, 9)], ERROR),
    ("stop_before_start_solution_error", [r("v1", T12, "attack", 10, 5)], {"v1": [A]}, None,
     [r("v1", T12, "attack", 0, 10)], ERROR),
    ("float_frames_submission_error", [r("v1", T12, "attack", 0, 10)], {"v1": [A]}, None,
     [r("v1", T12, "attack", 0.0, 10.0)], ERROR),
    ("float_frames_solution_error", [r("v1", T12, "attack", 0.0, 10.5)], {"v1": [A]}, None,
     [r("v1", T12, "attack", 0, 10)], ERROR),
    ("float_frames_only_in_dropped_rows_ok", [r("v1", T12, "attack", 0, 10)], {"v1": [A]}, None,
     [r("v1", T12, "chase", 0.5, 10.0)], 0.0),
    ("missing_behaviors_labeled_error", [r("v1", T12, "attack", 0, 10)], None, None,
     [r("v1", T12, "attack", 0, 10)], ERROR),
    ("null_behaviors_labeled_error", [r("v1", T12, "attack", 0, 10)], {"v1": None}, None,
     [r("v1", T12, "attack", 0, 10)], ERROR),
    ("invalid_json_behaviors_labeled_error", [r("v1", T12, "attack", 0, 10)], {"v1": "[mouse1,mouse2,attack"},
     None, [r("v1", T12, "attack", 0, 10)], ERROR),
    ("empty_solution_error", [], {}, None, [r("v1", T12, "attack", 0, 10)], ERROR),
    ("empty_submission_error", [r("v1", T12, "attack", 0, 10)], {"v1": [A]}, None, [], ERROR),
    ("negative_start_accepted_08", [r("v1", T12, "attack", 0, 10)], {"v1": [A]}, None,
     [r("v1", T12, "attack", -5, 10)], 2 * 10 / 25),
    ("underscore_actions_merge_by_suffix_0667", [r("v1", T12, "approach_fast", 0, 10),
                                                 r("v1", T12, "chase_fast", 20, 30)],
     {"v1": ["mouse1,mouse2,approach_fast", "mouse1,mouse2,chase_fast"]}, None,
     [r("v1", T12, "approach_fast", 0, 10)], 2 / 3),
    ("underscore_prediction_joins_truth_action", [r("v1", T12, "face", 0, 10)],
     {"v1": ["mouse1,mouse2,face", "mouse1,mouse2,sniff_face"]}, None,
     [r("v1", T12, "face", 0, 10), r("v1", T12, "sniff_face", 20, 30)], 2 * 10 / 30),
    ("whitelist_with_spaces_matches_nothing", [r("v1", T12, "attack", 0, 10)], {"v1": ["mouse1, mouse2, attack"]},
     None, [r("v1", T12, "attack", 0, 10)], 0.0),
    ("truth_outside_whitelist_still_counts", [r("v1", T12, "attack", 0, 10), r("v1", T12, "mount", 0, 10)],
     {"v1": [A]}, None, [r("v1", T12, "attack", 0, 10)], 0.5),
    ("predictions_only_for_unknown_videos_0", [r("v1", T12, "attack", 0, 10)], {"v1": [A]}, None,
     [r("v9", T12, "attack", 0, 10)], 0.0),
    ("zero_length_truth_never_predicted_0", [r("v1", T12, "attack", 3, 3)], {"v1": [A]}, None,
     [r("v1", T12, "chase", 0, 1)], 0.0),
    ("zero_length_truth_zero_length_prediction_0", [r("v1", T12, "attack", 3, 3)], {"v1": [A]}, None,
     [r("v1", T12, "attack", 3, 3)], 0.0),
    ("mean_over_labs_075", [r("v1", T12, "attack", 0, 10), r("v2", T12, "attack", 0, 10)],
     {"v1": [A], "v2": [A]}, {"v1": "labA", "v2": "labB"},
     [r("v1", T12, "attack", 0, 10), r("v2", T12, "attack", 0, 5)], (1.0 + 2 * 5 / 15) / 2),
    ("pooled_over_videos_in_lab", [r("v1", T12, "attack", 0, 10), r("v2", T12, "attack", 0, 30)],
     {"v1": [A], "v2": [A]}, None, [r("v1", T12, "attack", 0, 10)], 2 * 10 / (20 + 30)),
    ("first_row_whitelist_of_the_video_wins", [r("v1", T12, "attack", 0, 10), r("v1", T12, "mount", 20, 30)],
     None, None, [r("v1", T12, "attack", 0, 10), r("v1", T12, "mount", 20, 30)], 0.5),
]


def _build(sol_rows, wl, labs, sub_rows, name):
    if name == "first_row_whitelist_of_the_video_wins":  # two rows of one video, different lists
        sol = sol_df(sol_rows, {"v1": [A]}, labs)
        sol.loc[1, "behaviors_labeled"] = json.dumps([A, M])
    elif sol_rows:
        sol = sol_df(sol_rows, wl, labs)
    else:
        sol = pd.DataFrame(columns=COLS + ["lab_id", "behaviors_labeled"])
    sub = sub_df(sub_rows) if sub_rows else pd.DataFrame(columns=COLS)
    if name == "nullable_integer_frames_with_na_error":
        sub["stop_frame"] = sub["stop_frame"].astype("Int64")
    return sol, sub


@pytest.mark.parametrize("name, sol_rows, wl, labs, sub_rows, expected", CASES, ids=[c[0] for c in CASES])
def test_hand_made_case(name, sol_rows, wl, labs, sub_rows, expected):
    sol, sub = _build(sol_rows, wl, labs, sub_rows, name)
    got_host, got_project = host(sol, sub), project(sol, sub)
    if expected == ERROR:
        assert got_host == ERROR and got_project == ERROR
    else:
        assert got_host == pytest.approx(expected, abs=1e-12)
        assert got_project == pytest.approx(expected, abs=1e-12)


def test_enough_hand_made_cases():
    assert len(CASES) >= 45


# --------------------------------------------------------------------------- random cases

ACTIONS = ["attack", "sniff", "mount", "rear", "approach_fast", "chase_fast", "groom"]


def random_case(rng: random.Random) -> tuple[list[dict], list[dict]]:
    """One small random (solution rows, submission rows) as row dicts; about 1 in 10 is invalid.

    Column-wide variants (float frames, a missing behaviors_labeled column) change every row,
    as a pandas column would.
    """
    sol_ids = "int" if rng.random() < 0.1 else "mouse"
    int_videos = rng.random() < 0.2
    sol_rows, wl, labs = [], {}, {}
    vid_no = 0
    for lab in range(rng.randint(1, 3)):
        for _ in range(rng.randint(1, 3)):
            vid = vid_no if int_videos else f"v{vid_no}"
            vid_no += 1
            labs[vid] = f"lab{lab}"
            mice = rng.randint(2, 3)
            acts = rng.sample(ACTIONS, rng.randint(1, 3))
            triples = [f"mouse{a},{'self' if a == t else f'mouse{t}'},{act}"
                       for a in range(1, mice + 1) for t in range(1, mice + 1) for act in acts if rng.random() < 0.35]
            wl[vid] = triples or [f"mouse1,mouse2,{acts[0]}"]
            for _ in range(rng.randint(1, 5)):
                if rng.random() < 0.9:
                    a, t, act = rng.choice(wl[vid]).split(",")
                else:  # annotated outside the whitelist
                    a, t, act = "mouse2", "mouse1", rng.choice(ACTIONS)
                if sol_ids == "int":
                    a, t = int(a[5:]), (int(a[5:]) if t == "self" else int(t[5:]))
                s = rng.randint(0, 39)
                sol_rows.append((vid, a, t, act, s, s + rng.randint(0, 14)))
    videos = list(wl) + ([vid_no if int_videos else "v_unknown"] if rng.random() < 0.2 else [])
    sub_rows = []
    for vid in videos:
        for a, t in ((1, 2), (2, 1), (1, 1), (2, 2), (1, 3)):
            if rng.random() < 0.4:
                continue
            style = rng.random()
            if style < 0.8:
                at = (f"mouse{a}", "self" if a == t else f"mouse{t}")
            elif style < 0.9:
                at = (f"mouse{a}", f"mouse{t}")  # self written mouse<N>
            else:
                at = (str(a), str(t))  # bare numbers as text
            # consecutive blocks, one action each: the pair is valid unless broken below
            pos = rng.randint(-3, 4)
            for _ in range(rng.randint(1, 4)):
                act = rng.choice(ACTIONS)
                length = rng.randint(0, 11)
                sub_rows.append((vid, *at, act, pos, pos + length))
                if rng.random() < 0.2:  # repeat / overlap of the same action
                    sub_rows.append((vid, *at, act, pos + min(rng.randint(0, 2), length), pos + length))
                pos += length + rng.randint(0, 5)
    if rng.random() < 0.05 and sub_rows:  # two actions of one pair on one frame
        v, a, t, act, s, e = rng.choice(sub_rows)
        sub_rows.append((v, a, t, "sniff" if act != "sniff" else "attack", s, e + 1))
    if sol_ids == "int":
        sub_rows = [(v, int(a.replace("mouse", "")), int(a.replace("mouse", "")) if t == "self" else
                     int(t.replace("mouse", "")), *rest) for v, a, t, *rest in sub_rows]
    bare = sol_ids == "int" and rng.random() < 0.5  # a whitelist written with bare numbers
    bl = {v: json.dumps([x.replace("mouse", "") if bare else x for x in w]) for v, w in wl.items()}
    sol = [dict(zip(COLS, row, strict=True), lab_id=labs[row[0]], behaviors_labeled=bl[row[0]]) for row in sol_rows]
    sub = [dict(zip(COLS, row, strict=True)) for row in sub_rows]
    bad = rng.random()
    if bad < 0.02 and sub:
        sub[rng.randrange(len(sub))]["stop_frame"] = -10  # stop < start
    elif bad < 0.04 and sub:
        for row in sub:
            row["start_frame"] = float(row["start_frame"])
    elif bad < 0.05:
        for row in sol:
            row["stop_frame"] = float(row["stop_frame"])
    elif bad < 0.06:
        for row in sol:
            del row["behaviors_labeled"]
    return sol, sub


def _frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=columns)


def _batchable(sol: list[dict], sub: list[dict]) -> bool:
    """Valid cases with integer frames can share one project call."""
    return all(isinstance(r[c], int) for r in sol + sub for c in ("start_frame", "stop_frame"))


def _apart(video, i: int):
    """Case i's copy of a video id: text ids get a prefix, integer ids an offset (stay integers)."""
    return f"c{i}:{video}" if isinstance(video, str) else i * 1000 + video


def test_random_cases_equal_the_host():
    """Each case against the oracle; valid ones are scored by the project in one batch (each case's
    labs and videos renamed apart, its score = the mean of its labs), the others one by one."""
    rng = random.Random(2025)
    n, errors, mismatches = 1200, 0, []
    t0 = time.perf_counter()
    batch_sol, batch_sub, batch_cases = [], [], []
    for i in range(n):
        sol, sub = random_case(rng)
        try:
            h = host_score_rows(sol, sub)
        except HostError:
            h = ERROR
        errors += h == ERROR
        if h != ERROR and _batchable(sol, sub):
            tag = f"c{i}:"
            batch_sol += [dict(r, lab_id=tag + r["lab_id"], video_id=_apart(r["video_id"], i)) for r in sol]
            batch_sub += [dict(r, video_id=_apart(r["video_id"], i)) for r in sub]
            batch_cases.append((i, tag, h))
            continue
        p = project(_frame(sol, COLS + ["lab_id", "behaviors_labeled"]), _frame(sub, COLS))
        if (h == ERROR) != (p == ERROR) or (h != ERROR and abs(h - p) > 1e-9):
            mismatches.append((i, h, p))
    t1 = time.perf_counter()
    per_case: dict[str, list] = {}
    for lab, d in mabe_score_details(pd.DataFrame(batch_sol), pd.DataFrame(batch_sub))["labs"].items():
        per_case.setdefault(lab.split(":")[0] + ":", []).append(d["score"])
    t_batch = time.perf_counter() - t1
    for i, tag, h in batch_cases:
        p = sum(per_case[tag]) / len(per_case[tag])
        if abs(h - p) > 1e-9:
            mismatches.append((i, h, p))
    took = time.perf_counter() - t0
    assert not mismatches, f"{len(mismatches)} of {n} differ, e.g. (case, host, project) {mismatches[:3]}"
    # the generator must exercise valid and invalid input, and the batch must hold most cases
    assert 0.03 * n < errors < 0.3 * n and len(batch_cases) > 0.5 * n
    print(f"{n} random cases equal to the host ({errors} rejected by both, {len(batch_cases)} scored in one "
          f"batch, {t_batch:.1f} s) in {took:.1f} s")


def test_submissions_written_by_submission_frame_are_host_valid(tmp_path):
    """Random per-frame labels of mabe25 recordings -> submission_frame -> the host accepts it and agrees."""
    from format_fixtures import write_mabe

    from trainer.config import DataConfig
    from trainer.data.mabe25 import read_mabe25
    from trainer.kaggle_mabe import solution_frame, submission_frame

    write_mabe(tmp_path)
    recs = read_mabe25(str(tmp_path), data=DataConfig(), fps=30.0)
    sol = solution_frame(recs)
    rng = random.Random(7)
    for _ in range(30):
        labels = [[[rng.randrange(len(r.class_names)) if rng.random() < 0.5 else 0 for _ in r.pairs]
                   for _ in range(r.num_frames)] for r in recs]
        sub = submission_frame(recs, labels)
        if not len(sub):
            continue
        h = host(sol, sub)
        assert h != ERROR and project(sol, sub) == pytest.approx(h, abs=1e-9)
