"""Post-processing (smoothing, thresholds, bouts, intervals) and the Kaggle submission."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from format_fixtures import write_mabe

from trainer.config import DataConfig
from trainer.data.common import frames_to_intervals, runs
from trainer.data.mabe25 import read_mabe25
from trainer.data.recording import Recording
from trainer.kaggle_mabe import solution_frame, submission_frame
from trainer.metrics import mabe_score
from trainer.postprocess import (
    PostprocessSettings,
    apply_thresholds,
    fill_gaps,
    fit_mabe_settings,
    fit_thresholds,
    intervals_table,
    intervals_to_frames,
    lab_score_from_labels,
    postprocess_probs,
    remove_short_bouts,
    restrict_to_mask,
    search_mabe_settings,
    smooth_probs,
)


def test_runs_and_interval_round_trip():
    y = np.array([0, 0, 2, 2, 2, 0, 1, -1, -1, 1, 1])
    s, e, v = runs(y)
    assert s.tolist() == [0, 2, 5, 6, 7, 9] and e.tolist() == [2, 5, 6, 7, 9, 11] and v.tolist() == [0, 2, 0, 1, -1, 1]
    assert frames_to_intervals(y) == [(2, 2, 5), (1, 6, 7), (1, 9, 11)]  # stop exclusive, no -1/background
    rng = np.random.default_rng(0)
    for _ in range(20):
        z = rng.integers(0, 4, 60)
        assert (intervals_to_frames(frames_to_intervals(z), 60) == z).all()
    assert frames_to_intervals(np.zeros(0, int)) == []


def test_smooth_mean_and_median():
    p = np.zeros((9, 2))
    p[:, 0] = 1.0
    p[4] = [0.0, 1.0]  # one-frame spike
    med = smooth_probs(p, window=3, method="median")
    assert med.shape == p.shape and (med[:, 0] == 1).all() and (med[:, 1] == 0).all()
    mean = smooth_probs(p, window=3)
    assert mean[4, 1] == pytest.approx(1 / 3) and mean[3, 1] == pytest.approx(1 / 3) and mean[2, 1] == 0
    assert np.allclose(smooth_probs(np.full((5, 3), 0.2), window=4), 0.2)  # edges padded, not biased
    assert np.array_equal(smooth_probs(p, window=1), p)
    with pytest.raises(ValueError, match="mean' or 'median"):
        smooth_probs(p, window=3, method="gauss")


def test_fit_and_apply_thresholds():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    p = np.full((400, 3), 0.1)
    p[y == 1, 1] = 0.32  # class 1 is under-confident: argmax would miss it
    p[y == 2, 2] = 0.8
    p[:, 0] = 1 - p[:, 1:].sum(1)
    y[:10] = -1  # unlabelled frames are ignored
    thr = fit_thresholds(p, y, background=0)
    assert thr[0] == 0 and 0.1 < thr[1] <= 0.32 and 0.1 < thr[2] <= 0.8
    pred = apply_thresholds(p, thr, background=0)
    assert (pred[10:] == y[10:]).all()
    assert (p.argmax(1)[10:] != y[10:]).any()  # the thresholds are what fixed it
    # ratio rule: 0.3/0.2 beats 0.5/0.45 although 0.5 > 0.3
    assert apply_thresholds(np.array([[0.2, 0.3, 0.5]]), np.array([0, 0.2, 0.45])).tolist() == [1]
    assert apply_thresholds(np.array([[0.9, 0.05, 0.05]]), np.array([0, 0.5, 0.5])).tolist() == [0]


def test_gap_filling_and_min_bout():
    y = np.array([1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 2, 0, 2, 2, 2])
    assert fill_gaps(y, max_gap=2).tolist() == [1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 2, 2, 2, 2, 2]
    assert fill_gaps(y, max_gap=0).tolist() == y.tolist()
    z = np.array([0, 1, 0, 2, 2, 2, 0, -1, 3, 3])
    assert remove_short_bouts(z, min_length=2).tolist() == [0, 0, 0, 2, 2, 2, 0, -1, 3, 3]
    assert remove_short_bouts(z, min_length=3).tolist() == [0, 0, 0, 2, 2, 2, 0, -1, 0, 0]


def test_postprocess_chain_and_mask():
    p = np.tile([0.5, 0.3, 0.2], (6, 1))
    assert restrict_to_mask(p, np.array([True, False, True]))[:, 1].sum() == 0
    y = postprocess_probs(p, thresholds=np.array([0, 0.25, 0.9]), class_mask=np.array([True, True, False]))
    assert y.tolist() == [1] * 6
    y2 = postprocess_probs(p, thresholds=np.array([0, 0.25, 0.9]), class_mask=np.array([True, False, True]))
    assert y2.tolist() == [0] * 6  # class 1 is masked, class 2 misses its threshold


def _mabe_recs(tmp_path):
    videos = [
        dict(lab_id="LabA", video_id=101, fps=30.0, pix=12.0, T=50, mice=[1, 2],
             bl=["mouse1,mouse2,sniff", "mouse2,mouse1,attack", "mouse1,self,rear"],
             ann=[(1, 2, "sniff", 5, 15), (1, 2, "sniff", 30, 45), (2, 1, "attack", 10, 20), (1, 1, "rear", 0, 4)]),
        dict(lab_id="LabB", video_id=201, fps=30.0, pix=None, T=30, mice=[1, 2],
             bl=["mouse1,mouse2,attack"], ann=[(1, 2, "attack", 3, 8)]),
    ]
    write_mabe(tmp_path, videos=videos)
    return read_mabe25(str(tmp_path), data=DataConfig(), fps=30.0)


def test_submission_from_true_labels_scores_one(tmp_path):
    recs = _mabe_recs(tmp_path)
    sub = submission_frame(recs, [r.labels for r in recs])
    assert list(sub.columns) == ["row_id", "video_id", "agent_id", "target_id", "action", "start_frame", "stop_frame"]
    assert sub["row_id"].tolist() == list(range(len(sub)))
    assert set(sub["agent_id"]) <= {"mouse1", "mouse2"} and "self" in set(sub["target_id"])
    rear = sub[sub["action"] == "rear"].iloc[0]
    assert (rear["agent_id"], rear["target_id"], rear["start_frame"], rear["stop_frame"]) == ("mouse1", "self", 0, 4)
    assert mabe_score(solution_frame(recs), sub) == 1.0
    # through a CSV file, as Kaggle reads it
    sub.to_csv(tmp_path / "submission.csv", index=False)
    assert mabe_score(solution_frame(recs), pd.read_csv(tmp_path / "submission.csv")) == 1.0


def test_submission_drops_non_whitelisted_triples(tmp_path):
    recs = _mabe_recs(tmp_path)
    r = recs[0]
    y = r.labels.copy()
    C = {n: i for i, n in enumerate(r.class_names)}
    p_sniff = r.pairs.index((0, 1))
    y[20:25, p_sniff] = C["attack"]  # mouse1->mouse2 attack is not in behaviors_labeled
    sub = submission_frame([r], [y])
    assert not ((sub["agent_id"] == "mouse1") & (sub["target_id"] == "mouse2") & (sub["action"] == "attack")).any()
    assert len(sub) == 4


def test_intervals_table_any_format():
    rec = Recording("v", np.zeros((6, 2, 1, 2)), 30.0, ["resident", "intruder"], ["nose"], [(0, 1)],
                    np.array([0, 1, 1, 0, 2, 2]), ["other", "attack", "mount"])
    tab = intervals_table([rec], [rec.labels])
    assert tab.values.tolist() == [["v", "resident", "intruder", "attack", 1, 3], ["v", "resident", "intruder", "mount", 4, 6]]


# --------------------------------------------------------------------------- MABe-2025 thresholds


def _bouts(rng, T, n, length):
    starts = np.sort(rng.choice(np.arange(0, T - length, length + 5), size=n, replace=False))
    return [(int(s), int(s) + length) for s in starts]


def _lab_case(tmp_path, rng):
    """LabA truth: attack + sniff, mount whitelisted but never shown; LabB: attack + sniff."""
    T, videos = 400, []
    for lab, n in (("LabA", 6), ("LabB", 6)):
        for i in range(n):
            bl = ["mouse1,mouse2,attack", "mouse1,mouse2,sniff"] + (["mouse1,mouse2,mount"] if lab == "LabA" else [])
            ivs = _bouts(rng, T, 8, 12)
            ann = [(1, 2, "attack" if k % 2 else "sniff", s, e) for k, (s, e) in enumerate(ivs)]
            videos.append(dict(lab_id=lab, video_id=f"{lab}{i}", fps=30.0, pix=None, T=T, mice=[1, 2], bl=bl, ann=ann))
    write_mabe(tmp_path, videos=videos)
    recs = read_mabe25(str(tmp_path), data=DataConfig(), fps=30.0)
    C = {n: i for i, n in enumerate(recs[0].class_names)}
    probs = []
    for r in recs:
        y = r.labels[:, 0]
        p = np.full((r.num_frames, len(C)), 0.05) + rng.random((r.num_frames, len(C))) * 0.1
        p[:, C["other"]] += 0.6
        p[y == C["sniff"], C["sniff"]] += 0.8
        # the model is under-confident on attack (argmax misses it) ...
        p[y == C["attack"], C["attack"]] += 0.45 + 0.1 * (r.meta["lab_id"] == "LabB")
        # ... and in LabA it sees mount-like flickers although LabA never shows mount
        if r.meta["lab_id"] == "LabA":
            flick = rng.random(r.num_frames) < 0.02
            p[flick, C["mount"]] += 1.0
        probs.append([p / p.sum(axis=1, keepdims=True)])
    return recs, probs


def _host_score(recs, probs, settings):
    labels = [np.stack([settings.apply(pr, r.class_names, class_mask=r.label_mask[k], lab=r.meta["lab_id"])
                        for k, pr in enumerate(per_pair)], axis=1) for r, per_pair in zip(recs, probs, strict=True)]
    return mabe_score(solution_frame(recs), submission_frame(recs, labels))


def test_lab_score_from_labels_counts_predicted_absent_actions():
    y = np.array([0, 1, 1, 0])
    assert lab_score_from_labels(np.array([0, 1, 1, 0]), y, 3) == 1.0
    assert lab_score_from_labels(np.array([0, 1, 1, 2]), y, 3) == 0.5  # class 2 predicted, never true


def test_lab_thresholds_fitted_on_validation_raise_the_host_score_on_held_out_videos(tmp_path):
    rng = np.random.default_rng(0)
    recs, probs = _lab_case(tmp_path, rng)
    fit_idx = [i for i, r in enumerate(recs) if int(r.video_id[-1]) < 3]
    test_idx = [i for i in range(len(recs)) if i not in fit_idx]
    names = recs[0].class_names
    base = PostprocessSettings()
    fitted, per_lab = fit_mabe_settings([recs[i] for i in fit_idx], [probs[i] for i in fit_idx], names, base)
    assert fitted.lab_thresholds["LabA"]["mount"] is None  # switched off where the lab never shows it
    assert fitted.lab_thresholds["LabB"]["attack"] is not None and fitted.lab_thresholds["LabA"]["attack"] < 0.5
    assert all(d["after"] >= d["before"] for d in per_lab.values())
    held = [recs[i] for i in test_idx], [probs[i] for i in test_idx]
    before, after = _host_score(*held, base), _host_score(*held, fitted)
    assert after > before + 0.1, (before, after)
    # saved and loaded with the checkpoint; an unknown lab falls back to the global thresholds
    fitted.save(tmp_path / "postprocess.json")
    loaded = PostprocessSettings.load(tmp_path / "postprocess.json")
    assert loaded == fitted and loaded.threshold_array(names, "LabC") is None
    assert np.isinf(loaded.threshold_array(names, "LabA")[names.index("mount")])


def test_search_picks_smoothing_and_bouts_by_the_host_score(tmp_path):
    rng = np.random.default_rng(1)
    recs, probs = _lab_case(tmp_path, rng)
    # frame-level noise: single-frame sniff flickers everywhere, which smoothing / min bout remove
    C = {n: i for i, n in enumerate(recs[0].class_names)}
    for per_pair in probs:
        p = per_pair[0]
        flick = rng.random(len(p)) < 0.08
        p[flick, C["sniff"]] += 2.0
        per_pair[0] = p / p.sum(axis=1, keepdims=True)
    names = recs[0].class_names
    best, score, table = search_mabe_settings(recs, probs, names, PostprocessSettings(), smooth_windows=(1, 5),
                                              min_bouts=(1, 5))
    assert len(table) == 4 and score == max(t["score"] for t in table)
    plain = next(t["score"] for t in table if t["smooth_window"] == 1 and t["min_bout"] == 1)
    assert score > plain + 0.02 and (best.smooth_window, best.min_bout) != (1, 1)
    assert _host_score(recs, probs, best) == pytest.approx(score)
