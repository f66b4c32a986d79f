"""The MABe-2025 score against the hand-worked examples of FORMATS.md (host equality on random
cases: tests/test_mabe_host_equality.py)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from trainer.kaggle_mabe import SubmissionError
from trainer.metrics import frame_scores, mabe_score, mabe_score_details

COLS = ["video_id", "agent_id", "target_id", "action", "start_frame", "stop_frame"]


def solution(rows, whitelist, lab="lab1"):
    """rows: (video, agent, target, action, start, stop); whitelist: {video: ["mouse1,mouse2,attack", ...]}."""
    df = pd.DataFrame(rows, columns=COLS)
    df["lab_id"] = [lab if isinstance(lab, str) else lab[v] for v in df["video_id"]]
    df["behaviors_labeled"] = [json.dumps(whitelist[v]) for v in df["video_id"]]
    return df


def submission(rows):
    df = pd.DataFrame(rows, columns=COLS)
    df.insert(0, "row_id", range(len(df)))
    return df


WL = {"v1": ["mouse1,mouse2,attack"]}


def test_official_example_0667():
    sol = solution([("v1", "mouse1", "mouse2", "attack", 0, 10), ("v1", "mouse1", "mouse2", "attack", 30, 40)], WL)
    sub = submission([("v1", "mouse1", "mouse2", "attack", 0, 40)])
    # TP 20, FP 20, FN 0 -> 2*20 / (2*20 + 20) = 2/3
    assert mabe_score(sol, sub) == pytest.approx(2 / 3)
    assert round(mabe_score(sol, sub), 3) == 0.667


def test_unpredicted_truth_action_counts_zero_05():
    sol = solution([("v1", "mouse1", "mouse2", "attack", 0, 9), ("v1", "mouse1", "mouse2", "mount", 15, 24)], WL)
    sub = submission([("v1", "mouse1", "mouse2", "attack", 0, 9)])
    d = mabe_score_details(sol, sub)
    assert d["score"] == pytest.approx(0.5)
    assert d["labs"]["lab1"]["f1"] == {"attack": 1.0, "mount": 0.0}


def test_two_labs_predicted_in_one_025():
    rows = [("v1", "mouse1", "mouse2", "attack", 0, 9), ("v1", "mouse1", "mouse2", "mount", 15, 24),
            ("v2", "mouse1", "mouse2", "attack", 0, 9), ("v2", "mouse1", "mouse2", "mount", 15, 24)]
    wl = {"v1": ["mouse1,mouse2,attack"], "v2": ["mouse1,mouse2,attack"]}
    sol = solution(rows, wl, lab={"v1": "labA", "v2": "labB"})
    sub = submission([("v1", "mouse1", "mouse2", "attack", 0, 9)])
    d = mabe_score_details(sol, sub)
    assert d["labs"]["labA"]["score"] == pytest.approx(0.5) and d["labs"]["labB"]["score"] == 0.0
    assert d["score"] == pytest.approx(0.25)


def test_adjacent_truth_intervals_10():
    sol = solution([("v1", "mouse1", "mouse2", "attack", 0, 10), ("v1", "mouse1", "mouse2", "attack", 10, 20)], WL)
    assert mabe_score(sol, submission([("v1", "mouse1", "mouse2", "attack", 0, 20)])) == 1.0


def test_repeated_predicted_frames_count_once():
    sol = solution([("v1", "mouse1", "mouse2", "attack", 0, 10), ("v1", "mouse1", "mouse2", "attack", 30, 40)], WL)
    once = submission([("v1", "mouse1", "mouse2", "attack", 0, 40)])
    twice = submission([("v1", "mouse1", "mouse2", "attack", 0, 40), ("v1", "mouse1", "mouse2", "attack", 5, 35),
                        ("v1", "mouse1", "mouse2", "attack", 0, 40)])
    assert mabe_score(sol, twice) == mabe_score(sol, once)


def test_overlapping_actions_in_one_pair_reject_the_submission():
    wl = {"v1": ["mouse1,mouse2,attack", "mouse1,mouse2,sniff", "mouse2,mouse1,sniff"]}
    sol = solution([("v1", "mouse1", "mouse2", "attack", 0, 10)], wl)
    bad = submission([("v1", "mouse1", "mouse2", "attack", 0, 10), ("v1", "mouse1", "mouse2", "sniff", 9, 12)])
    with pytest.raises(SubmissionError, match="attack and sniff both predicted on frame 9"):
        mabe_score(sol, bad)
    # the same frames for another pair, or touching intervals, are fine
    ok = submission([("v1", "mouse1", "mouse2", "attack", 0, 10), ("v1", "mouse1", "mouse2", "sniff", 10, 12),
                     ("v1", "mouse2", "mouse1", "sniff", 0, 10)])
    # valid; sniff is predicted (whitelisted) but never in truth: it enters the mean with F1 0
    assert mabe_score(sol, ok) == 0.5


def test_non_whitelisted_rows_are_ignored_even_when_overlapping():
    sol = solution([("v1", "mouse1", "mouse2", "attack", 0, 10)], WL)
    sub = submission([("v1", "mouse1", "mouse2", "attack", 0, 10), ("v1", "mouse1", "mouse2", "chase", 0, 10),
                      ("v1", "mouse2", "mouse1", "attack", 0, 50)])
    assert mabe_score(sol, sub) == 1.0


def test_predicted_action_absent_from_lab_truth_enters_the_mean_with_f1_0():
    wl = {"v1": ["mouse1,mouse2,attack", "mouse1,mouse2,mount"]}
    sol = solution([("v1", "mouse1", "mouse2", "attack", 0, 1)], wl)
    d = mabe_score_details(sol, submission([("v1", "mouse1", "mouse2", "attack", 0, 1),
                                            ("v1", "mouse1", "mouse2", "mount", 1, 2)]))
    assert d["score"] == 0.5 and d["labs"]["lab1"]["f1"] == {"attack": 1.0, "mount": 0.0}
    # a zero-length whitelisted prediction does the same; a non-whitelisted one does nothing
    assert mabe_score(sol, submission([("v1", "mouse1", "mouse2", "attack", 0, 1),
                                       ("v1", "mouse1", "mouse2", "mount", 5, 5)])) == 0.5
    assert mabe_score(sol, submission([("v1", "mouse1", "mouse2", "attack", 0, 1),
                                       ("v1", "mouse1", "mouse2", "chase", 1, 2)])) == 1.0


def test_ids_are_compared_as_text():
    wl = {"v1": ["mouse1,self,rear", "mouse1,mouse2,attack"]}
    sol = solution([("v1", "mouse1", "self", "rear", 0, 10), ("v1", "mouse1", "mouse2", "attack", 5, 15)], wl)
    exact = submission([("v1", "mouse1", "self", "rear", 0, 10), ("v1", "mouse1", "mouse2", "attack", 5, 15),
                        ("v9", "mouse1", "mouse2", "attack", 0, 100)])
    assert mabe_score(sol, exact) == 1.0
    # "1" is not "mouse1" and "mouse1" is not "self": those rows are not whitelisted, so dropped
    assert mabe_score(sol, submission([("v1", "mouse1", "mouse1", "rear", 0, 10),
                                       ("v1", "1", "2", "attack", 5, 15)])) == 0.0
    assert mabe_score(sol, submission([("v1", "mouse1", "self", "rear", 0, 10),
                                       ("v1", "1", "2", "attack", 5, 15)])) == 0.5


def test_videos_table_supplies_lab_and_whitelist():
    sol = pd.DataFrame([(44, "mouse1", "mouse2", "attack", 0, 10)], columns=COLS)
    videos = pd.DataFrame({"video_id": [44], "lab_id": ["L"], "behaviors_labeled": [json.dumps(["mouse1,mouse2,attack"])]})
    assert mabe_score(sol, submission([("44", "mouse1", "mouse2", "attack", 0, 10)]), videos=videos) == 1.0
    # integer ids in the truth do not match the submission's mouse<N>: the host scores 0
    sol_int = pd.DataFrame([(44, 1, 2, "attack", 0, 10)], columns=COLS)
    assert mabe_score(sol_int, submission([(44, "mouse1", "mouse2", "attack", 0, 10)]), videos=videos) == 0.0


@pytest.mark.parametrize(
    "sol_rows, sub_rows, match",
    [
        ([], [("v1", "mouse1", "mouse2", "attack", 0, 10)], "empty solution"),
        ([("v1", "mouse1", "mouse2", "attack", 0, 10)], [], "empty submission"),
        ([("v1", "mouse1", "mouse2", "attack", 0, 10)], [("v1", "mouse1", "mouse2", "attack", 0.5, 10)], "integers"),
        ([("v1", "mouse1", "mouse2", "attack", 0, 10)], [("v1", "mouse1", "mouse2", "attack", 10, 9)], "stop_frame 9 <"),
        ([("v1", "mouse1", "mouse2", "attack", 5, 1)], [("v1", "mouse1", "mouse2", "attack", 0, 10)], "solution row 0"),
    ],
)
def test_errors(sol_rows, sub_rows, match):
    sol = solution(sol_rows, WL) if sol_rows else pd.DataFrame(columns=COLS + ["lab_id", "behaviors_labeled"])
    with pytest.raises(SubmissionError, match=match):
        mabe_score(sol, submission(sub_rows) if sub_rows else pd.DataFrame(columns=COLS))


def test_missing_column_is_an_error():
    sol = solution([("v1", "mouse1", "mouse2", "attack", 0, 10)], WL)
    with pytest.raises(ValueError, match="submission: missing column 'action'"):
        mabe_score(sol, submission([("v1", "mouse1", "mouse2", "attack", 0, 10)]).drop(columns="action"))


def test_frame_scores_unchanged():
    out = frame_scores(np.array([0, 1, 1, -1]), np.array([0, 1, 0, 1]), ["other", "attack"])
    assert out["frames"] == 3 and out["f1"]["attack"] == pytest.approx(2 / 3)


def test_score_submission_cli(tmp_path, caplog):
    from format_fixtures import write_mabe

    from trainer import score_submission

    write_mabe(tmp_path / "mabe")
    good = submission([(101, "mouse1", "mouse2", "sniff", 5, 15), (101, "mouse1", "mouse2", "sniff", 30, 40),
                       (101, "mouse2", "mouse1", "attack", 10, 20), (101, "mouse1", "self", "rear", 0, 4),
                       (102, "mouse1", "mouse2", "sniff", 0, 10), (201, "mouse1", "mouse2", "attack", 3, 8)])
    good.to_csv(tmp_path / "good.csv", index=False)
    args = ["--data", str(tmp_path / "mabe")]
    assert score_submission.main(args + ["--submission", str(tmp_path / "good.csv"), "--json",
                                         str(tmp_path / "r.json")]) == 0
    # LabA sniff: TP 20 + 10 (video 102), FN 20 (truth [30, 60) runs past the tracking) + 2 (mouse2->mouse1,
    # annotated but not whitelisted: still truth); attack 1, rear 1; LabB 1
    sniff = 2 * 30 / (2 * 30 + 20 + 2)
    assert json.loads((tmp_path / "r.json").read_text())["score"] == pytest.approx(((sniff + 2) / 3 + 1) / 2)
    bad = good.copy()
    bad.loc[len(bad)] = [6, 101, "mouse1", "mouse2", "rear", 6, 9]  # not whitelisted for this pair: ignored
    bad.to_csv(tmp_path / "bad.csv", index=False)
    assert score_submission.main(args + ["--submission", str(tmp_path / "bad.csv")]) == 0
    bad.loc[len(bad)] = [7, 999, "mouse2", "mouse1", "sniff", 16, 15]  # stop < start, even for an unknown video
    bad.to_csv(tmp_path / "bad.csv", index=False)
    caplog.clear()
    assert score_submission.main(args + ["--submission", str(tmp_path / "bad.csv")]) == 2
    assert "submission row 7: stop_frame 15 < start_frame 16" in caplog.text
    # a validation split: only its videos count (LabB's video 201 alone is scored perfectly)
    assert score_submission.main(args + ["--submission", str(tmp_path / "good.csv"), "--videos", "201", "--json",
                                         str(tmp_path / "v.json")]) == 0
    assert json.loads((tmp_path / "v.json").read_text())["score"] == pytest.approx(1.0)
    (tmp_path / "ids.txt").write_text("101\n102\n")
    assert score_submission.main(args + ["--submission", str(tmp_path / "good.csv"), "--videos",
                                         f"@{tmp_path / 'ids.txt'}", "--json", str(tmp_path / "w.json")]) == 0
    assert json.loads((tmp_path / "w.json").read_text())["score"] == pytest.approx((sniff + 2) / 3)
    caplog.clear()
    assert score_submission.main(args + ["--submission", str(tmp_path / "good.csv"), "--videos", "101,nope"]) == 2
    assert "--videos: nope not in" in caplog.text
