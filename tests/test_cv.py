"""Cross-validation (trainer/cv.py) and the by_time split: real tiny runs through trainer/run.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trainer.build import prepare_data
from trainer.config import ConfigError, make_config
from trainer.cv import OOF, cross_validate, cv_epoch_stream, load_oof
from trainer.data import DataError, load_recordings, load_splits
from trainer.data.splits import split_by_time, time_blocks, time_gap_frames
from trainer.data.synthetic import generate_recording
from trainer.run import main as run_main
from trainer.run import train as run_train

KFOLD = ["data.split=kfold", "data.num_folds=2", "data.fold=-1"]


def _frames_of(cfg) -> dict[tuple[str, int], np.ndarray]:
    """(video, pair) -> labels of every frame, straight from the reader."""
    return {(r.video_id, p): r.labels[:, p] for r in load_recordings(cfg) for p in range(len(r.pairs))}


def _assert_oof_covers_every_frame_once(oof: dict, truth: dict) -> None:
    got = {}
    for key in truth:
        sel = (oof["video_id"] == key[0]) & (oof["pair"] == key[1])
        frames = oof["frame"][sel]
        assert np.array_equal(frames, np.arange(len(truth[key]))), key  # each frame once, sorted
        assert np.array_equal(oof["label"][sel], truth[key]), key
        got[key] = int(sel.sum())
    assert sum(got.values()) == len(oof["frame"])  # and nothing else
    assert np.allclose(oof["probs"].sum(1), 1.0, atol=1e-5)


@pytest.mark.slow  # k-fold trainings
def test_kfold_run_writes_cv_json_and_every_frame_out_of_fold_once(tiny, tmp_path):
    assert run_main([*tiny, *KFOLD, "name=cv"]) == 0
    run = tmp_path / "runs" / "cv"
    summary = json.loads((run / "cv.json").read_text())
    assert [f["fold"] for f in summary["folds"]] == [0, 1]
    val = [v for f in summary["folds"] for v in f["val_videos"]]
    assert sorted(val) == [f"synthetic_{i:03d}" for i in range(4)]  # the folds partition the videos
    scores = [f["val_macro_f1"] for f in summary["folds"]]
    assert summary["mean"]["val_macro_f1"] == pytest.approx(np.mean(scores))
    assert summary["std"]["val_macro_f1"] == pytest.approx(np.std(scores, ddof=1))
    for f in summary["folds"]:  # each fold is a complete ordinary run, scored at its best epoch
        metrics = json.loads((run / f"fold_{f['fold']}" / "metrics.json").read_text())
        assert metrics["val_macro_f1"] == f["val_macro_f1"] and f["best_epoch"] == metrics["best_epoch"]
        assert set(f["f1"]) == set(summary["class_names"])

    cfg = make_config(None, [*tiny, *KFOLD])
    oof = load_oof(run)
    _assert_oof_covers_every_frame_once(oof, _frames_of(cfg))
    assert summary["oof"]["rows"] == len(oof["frame"]) == summary["oof"]["labelled_rows"]
    # the OOF probabilities are the best checkpoint's: they reproduce each fold's best val macro F1
    from trainer.metrics import frame_scores

    names = [str(c) for c in oof["class_names"]]
    for f in summary["folds"]:
        sel = oof["fold"] == f["fold"]
        again = frame_scores(oof["label"][sel], oof["probs"][sel].argmax(1), names, "other")
        assert again["macro_f1"] == pytest.approx(f["val_macro_f1"], abs=1e-9)
        assert set(np.unique(oof["video_id"][sel])) == set(f["val_videos"])


@pytest.mark.slow  # k-fold trainings
def test_resumed_cross_validation_keeps_finished_folds(tiny, tmp_path):
    calls = []

    def stop_at_fold_1(cfg, **kw):
        calls.append(cfg.name)
        if cfg.data.fold == 1:
            raise KeyboardInterrupt
        return run_train(cfg, **kw)

    cfg = make_config(None, [*tiny, *KFOLD, "name=cv"])
    with pytest.raises(KeyboardInterrupt):
        cross_validate(cfg, train_fn=stop_at_fold_1)
    run = tmp_path / "runs" / "cv"
    assert (run / "fold_0" / OOF).is_file() and not (run / "cv.json").exists()
    fold0 = (run / "fold_0" / "metrics.jsonl").read_text()
    with pytest.raises(ConfigError, match="already holds a cross-validation; pass resume=auto"):
        cross_validate(cfg)
    assert run_main(["--resume", str(run)]) == 0
    assert (run / "fold_0" / "metrics.jsonl").read_text() == fold0  # not trained again
    assert len(json.loads((run / "cv.json").read_text())["folds"]) == 2


@pytest.mark.slow  # k-fold trainings
def test_lock_step_stream_reports_the_running_mean_and_matches_the_sequential_run(tiny, tmp_path):
    cfg = make_config(None, [*tiny, *KFOLD, "name=lock"])
    rows = list(cv_epoch_stream(cfg))
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        folds = [r["fold_0_best_val_macro_f1"], r["fold_1_best_val_macro_f1"]]
        assert r["best_val_macro_f1"] == pytest.approx(np.mean(folds))
        assert r["best_val_macro_f1_std"] == pytest.approx(np.std(folds, ddof=1))
    assert rows[1]["best_val_macro_f1"] >= rows[0]["best_val_macro_f1"]  # a running best never drops
    lock = json.loads((tmp_path / "runs" / "lock" / "cv.json").read_text())
    assert lock["mean"]["val_macro_f1"] == pytest.approx(rows[-1]["best_val_macro_f1"])
    seq = cross_validate(make_config(None, [*tiny, *KFOLD, "name=seq"]))
    # interleaving the folds' epochs changes nothing: every epoch is seeded from (seed, epoch)
    assert [f["val_macro_f1"] for f in seq["folds"]] == pytest.approx([f["val_macro_f1"] for f in lock["folds"]])


# ---------------------------------------------------------------------------- by_time


def test_by_time_blocks_are_disjoint_with_a_gap_and_cover_every_frame_once():
    rec = generate_recording("v", frames=1003, fps=30.0, seed=0)
    cfg = make_config(None, ["data.split=by_time", "data.num_folds=4", "sequence_length=50", "frame_gap=2"])
    gap = time_gap_frames(cfg, rec.fps)
    assert gap == 99  # one window: (50 - 1) * 2 + 1 frames
    assert time_gap_frames(make_config(None, ["data.time_gap=10", "sequence_length=50"]), 30.0) == 300
    seen = np.zeros(rec.num_frames, int)
    for fold in range(4):
        d = make_config(None, ["data.split=by_time", "data.num_folds=4", f"data.fold={fold}"]).data
        train, val = split_by_time([rec], d, gap_frames=lambda r: gap)
        (v,) = val
        a = v.meta["frame_offset"]
        b = a + v.num_frames
        assert (a, b) == time_blocks(rec.num_frames, 4)[fold] and v.video_id == f"{rec.video_id}@{a}-{b}"
        seen[a:b] += 1
        assert np.array_equal(v.keypoints, rec.keypoints[a:b], equal_nan=True)
        assert np.array_equal(v.labels, rec.labels[a:b])
        for t in train:
            s, e = t.meta["frame_offset"], t.meta["frame_offset"] + t.num_frames
            assert e <= a - gap or s >= b + gap, (fold, s, e, a, b)  # never within a gap of the val block
            assert t.meta["source_video"] == rec.video_id
        assert len(train) == (1 if fold in (0, 3) else 2)  # before and after the block: separate recordings
    assert (seen == 1).all()


@pytest.mark.slow  # trains on one video
def test_one_video_can_train_with_by_time_and_the_by_video_error_says_so(tiny, tmp_path):
    one = [*tiny, "data.synthetic.num_videos=1", "data.synthetic.frames_per_video=1200"]
    with pytest.raises(DataError, match="found 1; .*data.split=by_time"):
        load_splits(make_config(None, one))
    assert run_main([*one, "data.split=by_time", "data.num_folds=2", "data.fold=-1", "epochs=1", "name=t"]) == 0
    run = tmp_path / "runs" / "t"
    summary = json.loads((run / "cv.json").read_text())
    assert [f["val_videos"] for f in summary["folds"]] == [["synthetic_000@0-600"], ["synthetic_000@600-1200"]]
    _assert_oof_covers_every_frame_once(load_oof(run), _frames_of(make_config(None, one)))


# ---------------------------------------------------------------------------- user errors


@pytest.mark.parametrize("args, message", [
    (["data.fold=-1"], "data.fold' is -1 (cross-validate) but data.split is 'by_video'"),
    (["data.split=kfold", "data.fold=-2"], "data.fold' must be a fold index or -1"),
    (["data.split=by_tme"], "data.split' must be one of by_video, by_lab, kfold, by_time"),
    (["data.split=by_time", "data.time_gap=-1"], "data.time_gap' must be >= 0"),
    ([*KFOLD, "data.num_folds=9"], "kfold with 9 folds needs at least 9 videos, found 4"),
    ([*KFOLD, "data.val_path=somewhere"], "splits data.path into folds itself; unset data.val_path"),
    (["data.split=by_time", "data.num_folds=1"], "data.num_folds' must be >= 2 for data.split=by_time"),
])
def test_bad_cross_validation_settings_are_one_line(tiny, caplog, args, message):
    assert run_main([*tiny, *args]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and message in errors[0] and "\n" not in errors[0], errors


def test_resume_of_a_directory_that_is_no_run_is_one_line(tmp_path, caplog):
    assert run_main(["--resume", str(tmp_path)]) == 2
    assert "no complete checkpoint" in caplog.text


def test_window_seconds_refuses_videos_of_different_frame_rates(tiny):
    cfg = make_config(None, [*tiny, "window_seconds=1.0"])
    train, val = load_splits(cfg)
    train[0].fps = 120.0
    with pytest.raises(DataError, match=r"window_seconds=1 needs one frame rate, but the videos have 30 fps: "
                                        r"3 video\(s\).*120 fps: 1 video"):
        prepare_data(cfg, (train, val))
    assert prepare_data(make_config(None, tiny), (train, val)).length == 64  # frames: no conversion needed
    for r in train:
        r.fps = 120.0
    for r in val:
        r.fps = 120.0
    assert prepare_data(cfg, (train, val)).length == 120  # one second at 120 fps


@pytest.mark.slow  # k-fold trainings
def test_closing_the_lock_step_stream_stops_every_fold_and_resume_continues_the_epochs(tiny, tmp_path):
    def epochs(fold: int) -> list[int]:
        lines = (tmp_path / "runs" / "cv" / f"fold_{fold}" / "metrics.jsonl").read_text().splitlines()
        return [json.loads(x)["epoch"] for x in lines]

    rows = cv_epoch_stream(make_config(None, [*tiny, *KFOLD, "name=cv"]))
    assert next(rows)["epoch"] == 1
    rows.close()  # what ASHA stopping the trial (or a killed sweep) does
    assert epochs(0) == [1] and epochs(1) == [1]  # each fold stopped after the judged epoch
    again = list(cv_epoch_stream(make_config(None, [*tiny, *KFOLD, "name=cv", "resume=auto"])))
    assert [r["epoch"] for r in again] == [2]  # resumed: the epochs continue, nothing is redone
    assert epochs(0) == [1, 2] and epochs(1) == [1, 2]
    summary = json.loads((tmp_path / "runs" / "cv" / "cv.json").read_text())
    assert summary["mean"]["val_macro_f1"] == pytest.approx(again[-1]["best_val_macro_f1"])


def test_cross_validation_under_several_processes_is_refused_in_one_line(tiny, caplog, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # what `accelerate launch --num_processes 2` sets
    assert run_main([*tiny, *KFOLD]) == 2
    assert "runs in one process" in caplog.text


@pytest.mark.slow  # k-fold trainings
def test_a_cross_validation_run_predicts_as_the_mean_of_its_fold_models(tiny, tmp_path, caplog):
    """--checkpoint <cv run> is an Ensemble of the fold models; --checkpoint twice averages two models."""
    from trainer.predict import Ensemble, Predictor, load_models
    from trainer.predict import main as predict_main

    assert run_main([*tiny, *KFOLD, "name=cv"]) == 0
    run = tmp_path / "runs" / "cv"
    ens = load_models([str(run)])
    assert isinstance(ens, Ensemble) and len(ens.members) == 2
    from trainer.data import load_splits

    _, recs = load_splits(make_config(None, tiny))
    parts = [m.probabilities(recs) for m in ens.members]
    mean = ens.probabilities(recs)
    for i in range(len(recs)):
        assert np.allclose(mean[i][0], (parts[0][i][0] + parts[1][i][0]) / 2, atol=1e-6)
        assert np.allclose(mean[i][0].sum(axis=1), 1.0, atol=1e-5)
    weighted = load_models([str(run / "fold_0"), str(run / "fold_1")], [3.0, 1.0])
    w = weighted.probabilities(recs)
    assert np.allclose(w[0][0], 0.75 * parts[0][0][0] + 0.25 * parts[1][0][0], atol=1e-6)
    assert isinstance(Predictor.load(run / "fold_0"), Predictor)
    # an ensemble has no "validation videos of its own": predicting them is refused in one line
    assert predict_main(["--checkpoint", str(run), "--out", str(tmp_path / "p.csv")]) == 2
    assert "--input" in caplog.text
