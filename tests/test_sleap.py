"""data.format=sleap: real .slp / analysis .h5 / .nwb / JABS files written by sleap-io itself, read back."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from format_fixtures import BORIS, write_dlc

from trainer.config import DataConfig, make_config
from trainer.data import get_reader
from trainer.data.detect import detect_format
from trainer.data.recording import DataError
from trainer.data.synthetic import generate_dataset

sio = pytest.importorskip("sleap_io")  # the `sleap` extra; part of `dev`, so CI runs these

RAT46 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rat46"
if not RAT46.is_dir():
    RAT46 = Path("/work/shared/data/rat46")


def labels_from(videos, *, tracks, nodes, user=None, fps=None):
    """sleap_io.Labels from {video filename: keypoints (T, M, B, 2)} (NaN = missing node).

    Every animal with a finite node on a frame becomes a PredictedInstance of its track
    (scores 0.9); `user` = {(video, frame, track index): (B, 2)} adds user instances.
    """
    skel = sio.Skeleton(list(nodes), name="mouse")
    trk = [sio.Track(n) for n in tracks] if tracks else []
    lfs = []
    for name, kp in videos.items():
        video = sio.Video(filename=name, open_backend=False)
        if fps:
            video.fps = fps
        for f in range(kp.shape[0]):
            insts = [
                sio.PredictedInstance.from_numpy(kp[f, m].astype(np.float64), skeleton=skel,
                                                 point_scores=np.full(len(nodes), 0.9), score=0.9,
                                                 track=trk[m] if trk else None)
                for m in range(kp.shape[1]) if np.isfinite(kp[f, m]).any()
            ]
            for (v, ff, m), pts in (user or {}).items():
                if v == name and ff == f:
                    insts.append(sio.Instance.from_numpy(np.asarray(pts, float), skeleton=skel, track=trk[m]))
            if insts:
                lfs.append(sio.LabeledFrame(video=video, frame_idx=f, instances=insts))
    return sio.Labels(lfs, skeletons=[skel], tracks=trk)


def synthetic_kp(T=120, seed=0):
    rec = generate_dataset(1, seed=seed, frames=T)[0]
    kp = rec.keypoints.copy()
    kp[10:15, 1] = np.nan  # intruder not detected: no instance on these frames
    kp[T // 2 + 3, 0, 2] = np.nan  # one missing node
    return rec, kp


def read(path, **data):
    return get_reader("sleap")(str(path), data=DataConfig(**data), fps=30.0)


def quiet_save(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fn(*args, **kw)


def write_nwb(labels, path, *, frames, fps):
    """NWB via sleap-io's writer with real timestamps (frame / fps for frames 0..frames-1).

    `save_nwb` alone stamps the i-th *row* at i x 1 s: frames without any instance shift
    every later frame (or crash the writer) and the rate is lost.
    """
    from sleap_io.io.nwb_predictions import write_nwb as sio_write_nwb

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sio_write_nwb(labels, str(path), pose_estimation_metadata={"video_timestamps": np.arange(frames) / fps})


# --------------------------------------------------------------------------- round trips


def test_slp_roundtrip_synthetic(tmp_path):
    rec, kp = synthetic_kp()
    f = tmp_path / "session1.slp"
    sio.save_slp(labels_from({"videos/session1.mp4": kp}, tracks=["resident", "intruder"], nodes=rec.bodyparts,
                             fps=25.0), str(f))
    (got,) = read(f)
    assert got.video_id == "session1" and got.fps == 25.0
    assert got.mouse_ids == ["resident", "intruder"] and got.bodyparts == rec.bodyparts
    assert got.keypoints.dtype == np.float32 and got.keypoints.shape == kp.shape
    np.testing.assert_array_equal(np.isnan(got.keypoints), np.isnan(kp))  # missing nodes and animals stay NaN
    np.testing.assert_allclose(got.keypoints, kp, rtol=0, atol=1e-4, equal_nan=True)
    assert got.labels is None and got.meta["format"] == "sleap"


def test_user_instance_wins_and_min_likelihood(tmp_path):
    rec, kp = synthetic_kp(T=30)
    mine = np.full((len(rec.bodyparts), 2), 7.0)
    mine[1] = np.nan
    f = tmp_path / "p.slp"
    sio.save_slp(labels_from({"v.mp4": kp}, tracks=["a", "b"], nodes=rec.bodyparts, user={("v.mp4", 5, 0): mine}),
                 str(f))
    (got,) = read(f)
    np.testing.assert_array_equal(got.keypoints[5, 0], mine.astype(np.float32))  # user over predicted
    np.testing.assert_allclose(got.keypoints[6, 0], kp[6, 0], atol=1e-4)
    assert got.fps == 30.0  # the file has no fps: the config's
    (low,) = read(f, min_likelihood=0.95)  # predicted scores are 0.9; user points have no score and stay
    assert np.isnan(low.keypoints[6]).all() and np.isfinite(low.keypoints[5, 0, 0]).all()


def test_several_videos_are_several_recordings(tmp_path):
    rec, kp = synthetic_kp(T=40)
    f = tmp_path / "project.slp"
    sio.save_slp(labels_from({"a/s1.mp4": kp, "b/s2.mp4": kp[:25, :1]}, tracks=["r", "i"], nodes=rec.bodyparts),
                 str(f))
    recs = read(f)
    assert [r.video_id for r in recs] == ["s1", "s2"]
    assert recs[0].mouse_ids == ["r", "i"] and recs[1].mouse_ids == ["r"]  # a track absent from a video is left out
    np.testing.assert_allclose(recs[1].keypoints[:, 0], kp[:25, 0], atol=1e-4)


@pytest.mark.slow  # HDF5 and NWB writers
def test_analysis_h5_and_nwb_roundtrip(tmp_path):
    rec, kp = synthetic_kp(T=60)
    labels = labels_from({"videos/s1.mp4": kp}, tracks=["resident", "intruder"], nodes=rec.bodyparts, fps=25.0)
    h5, nwb, plain = tmp_path / "s1.analysis.h5", tmp_path / "s1.nwb", tmp_path / "plain" / "s1.nwb"
    quiet_save(sio.save_analysis_h5, labels, str(h5))
    write_nwb(labels, nwb, frames=len(kp), fps=25.0)
    plain.parent.mkdir()
    quiet_save(sio.save_nwb, labels, str(plain), nwb_format="predictions")  # 1 Hz placeholder: config fps
    for f, fps in ((h5, 25.0), (nwb, 25.0), (plain, 30.0)):
        assert detect_format(f) == "sleap"
        (got,) = read(f)
        assert got.video_id == "s1" and got.fps == fps
        assert sorted(got.mouse_ids) == ["intruder", "resident"]
        order = [["resident", "intruder"].index(m) for m in got.mouse_ids]
        np.testing.assert_array_equal(np.isnan(got.keypoints), np.isnan(kp[:, order]))
        np.testing.assert_allclose(got.keypoints, kp[:, order], atol=1e-4, equal_nan=True)


def test_jabs_pose_file(tmp_path):
    from sleap_io.io.jabs import JABS_DEFAULT_SKELETON

    rng = np.random.default_rng(0)
    kp = rng.uniform(5, 500, (20, 2, 12, 2)).round()  # JABS stores whole pixels
    labels = labels_from({"sess1.avi": kp}, tracks=["1", "2"], nodes=JABS_DEFAULT_SKELETON.node_names)
    labels.skeletons[0] = JABS_DEFAULT_SKELETON
    for lf in labels.labeled_frames:
        for inst in lf.instances:
            inst.skeleton = JABS_DEFAULT_SKELETON
    quiet_save(sio.save_jabs, labels, 4, root_folder=str(tmp_path))
    (f,) = tmp_path.glob("*_pose_est_v4.h5")
    assert detect_format(f) == "sleap"
    (got,) = read(f)
    assert got.mouse_ids == ["1", "2"] and got.bodyparts[0] == "NOSE"
    np.testing.assert_allclose(got.keypoints, kp, atol=1.0)


# --------------------------------------------------------------------------- errors


def one_line(excinfo, *words):
    msg = str(excinfo.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_no_tracks_no_instances_unknown_skeleton(tmp_path):
    rec, kp = synthetic_kp(T=20)
    f = tmp_path / "untracked.slp"
    sio.save_slp(labels_from({"v.mp4": kp}, tracks=None, nodes=rec.bodyparts), str(f))
    with pytest.raises(DataError) as e:
        read(f)
    one_line(e, str(f), "no tracks", "tracker")

    single = tmp_path / "single.slp"  # one untracked animal per frame: one animal, by rule
    sio.save_slp(labels_from({"v.mp4": kp[:, :1]}, tracks=None, nodes=rec.bodyparts), str(single))
    (got,) = read(single)
    assert got.mouse_ids == ["mouse1"] and got.keypoints.shape[1] == 1

    empty = tmp_path / "empty.slp"
    sio.save_slp(sio.Labels(skeletons=[sio.Skeleton(rec.bodyparts)]), str(empty))
    with pytest.raises(DataError) as e:
        read(empty)
    one_line(e, str(empty), "no instances")

    two = labels_from({"v.mp4": kp}, tracks=["a", "b"], nodes=rec.bodyparts)
    other = sio.Skeleton(["head", "tail"], name="other")
    two.skeletons.append(other)
    two.labeled_frames[0].instances[0] = sio.Instance.from_numpy(np.ones((2, 2)), skeleton=other,
                                                                 track=two.tracks[0])
    mixed = tmp_path / "mixed.slp"
    sio.save_slp(two, str(mixed))
    with pytest.raises(DataError) as e:
        read(mixed)
    one_line(e, str(mixed), "2 skeletons")

    bad = tmp_path / "bad.slp"
    bad.write_text("not hdf5")
    with pytest.raises(DataError) as e:
        read(bad)
    one_line(e, str(bad), "cannot read")


def test_reader_hardening_shared_with_dlc(tmp_path, caplog):
    """The trust checks reach SLEAP too: BORIS times before 0 (pairing.py), empty files, fps, frame count."""
    rec, kp = synthetic_kp(T=95)
    (tmp_path / "slp").mkdir()
    sio.save_slp(labels_from({"v.mp4": kp}, tracks=["resident", "intruder"], nodes=rec.bodyparts), str(tmp_path / "slp" / "v.slp"))
    (tmp_path / "slp" / "broken.slp").write_bytes(b"")
    rows = ["-1.0,v.mp4,10,10,Resident,sniff,,,START", "-0.5,v.mp4,10,10,Resident,sniff,,,STOP",
            "-0.3,v.mp4,10,10,Resident,sniff,,,START", "0.4,v.mp4,10,10,Resident,sniff,,,STOP"]
    head = "Time,Media file path,Total length,FPS,Subject,Behavior,Behavioral category,Comment,Status\n"
    (tmp_path / "v.csv").write_text(head + "\n".join(rows) + "\n")
    (got,) = read(tmp_path / "slp", annotation_path=str(tmp_path / "v.csv"))
    lab = got.labels[:, got.mouse_ids.index("resident")]
    assert (lab[0:4] == got.class_names.index("sniff")).all() and (lab[4:] == 0).all()  # nothing at the end
    assert "2 before the start" in caplog.text
    assert f"{tmp_path / 'slp' / 'broken.slp'}: skipped as a pose file: the file is empty" in caplog.text

    fast = tmp_path / "fast.slp"
    sio.save_slp(labels_from({"v.mp4": kp}, tracks=["a", "b"], nodes=rec.bodyparts, fps=5000.0), str(fast))
    with pytest.raises(DataError) as e:
        read(fast)
    one_line(e, str(fast), "5000 fps")

    far = labels_from({"v.mp4": kp[:2]}, tracks=["a", "b"], nodes=rec.bodyparts)
    far.labeled_frames[-1].frame_idx = 20_000_000  # a corrupt frame index: refused before allocating
    huge = tmp_path / "huge.slp"
    sio.save_slp(far, str(huge))
    with pytest.raises(DataError) as e:
        read(huge)
    one_line(e, str(huge), "20,000,001 frames")


def test_without_the_extra_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sleap_io", None)  # what an environment without the extra imports
    with pytest.raises(DataError) as e:
        read(tmp_path / "x.slp")
    one_line(e, 'pip install -e ".[sleap]"')


def test_auto_detects_sleap_but_not_dlc_h5(tmp_path):
    rec, kp = synthetic_kp(T=20)
    sio.save_slp(labels_from({"v.mp4": kp}, tracks=["a", "b"], nodes=rec.bodyparts), str(tmp_path / "v.slp"))
    assert detect_format(tmp_path) == "sleap" and detect_format(tmp_path / "v.slp") == "sleap"
    pytest.importorskip("tables")
    cols = pd.MultiIndex.from_product([["DLC"], ["nose"], ["x", "y", "likelihood"]],
                                      names=["scorer", "bodyparts", "coords"])
    pd.DataFrame(np.ones((5, 3)), columns=cols).to_hdf(tmp_path / "d.h5", key="df_with_missing")
    assert detect_format(tmp_path / "d.h5") == "dlc"


# --------------------------------------------------------------------------- labels, training


def write_project(root: Path, n=3, T=90):
    """n one-video .slp files of two tracked animals + a BORIS file each (subjects Resident/Intruder)."""
    (root / "slp").mkdir(parents=True)
    (root / "ann").mkdir()
    for i in range(n):
        rec, kp = synthetic_kp(T=T, seed=i)
        labels = labels_from({f"/videos/session{i}.mp4": kp}, tracks=["resident", "intruder"], nodes=rec.bodyparts)
        sio.save_slp(labels, str(root / "slp" / f"session{i}.mp4.predictions.slp"))
        (root / "ann" / f"session{i}.csv").write_text(BORIS)


def test_boris_labels_like_dlc(tmp_path):
    write_project(tmp_path, n=1)
    (rec,) = read(tmp_path / "slp", annotation_path=str(tmp_path / "ann"))
    # the same BORIS file on a DLC file of the same animals gives the same labels
    write_dlc(tmp_path / "dlc" / "session0DLC_resnet50.csv", 90, ["resident", "intruder"], ["nose", "tail"])
    (ref,) = get_reader("dlc")(str(tmp_path / "dlc"), data=DataConfig(annotation_path=str(tmp_path / "ann")),
                               fps=30.0)
    assert rec.video_id == "session0" and rec.fps == 10.0  # BORIS FPS column; the .slp has none
    assert rec.class_names == ref.class_names and rec.pairs == ref.pairs
    np.testing.assert_array_equal(rec.labels, ref.labels)


@pytest.mark.slow
def test_sleap_project_trains_evaluates_predicts(tmp_path):
    from trainer import predict
    from trainer.evaluate import evaluate_checkpoint
    from trainer.run import train

    write_project(tmp_path / "data")
    overrides = {
        "data.format": "auto", "data.path": str(tmp_path / "data" / "slp"),
        "data.annotation_path": str(tmp_path / "data" / "ann"), "epochs": 1, "sequence_length": 16,
        "batch_size": 8, "model_type": "per_frame_mlp", "hidden_dim": 16, "num_layers": 1,
        "features": ["coords", "speed", "distances", "mask"], "output_dir": str(tmp_path / "runs"), "name": "sl",
        "data.val_fraction": 0.34,
    }
    final = train(make_config(None, [f"{k}={v}" for k, v in overrides.items()]))
    assert final["epochs_run"] == 1 and 0.0 <= final["val_macro_f1"] <= 1.0
    ck = tmp_path / "runs" / "sl" / "checkpoints" / "best"
    result = evaluate_checkpoint(ck)
    assert set(result["raw"]["frames"]["f1"]) == set(result["class_names"])
    out = tmp_path / "pred.csv"
    assert predict.main(["--checkpoint", str(ck), "--input", str(tmp_path / "data" / "slp"), "--format", "sleap",
                         "--out", str(out)]) == 0
    frames = pd.read_csv(out)
    assert set(frames["video_id"]) == {"session0", "session1", "session2"} and len(frames) > 0


# --------------------------------------------------------------------------- real data (rat46)


@pytest.mark.slow
@pytest.mark.skipif(not RAT46.is_dir(), reason="needs ../shared/data/rat46")
def test_rat46_video_roundtrip_and_caltech_labels(tmp_path):
    from trainer.data.dlc import read_dlc_table

    trk = sorted((RAT46 / "dlc").glob("11DLC_*.csv"))[0]
    kp, _, individuals, bodyparts = read_dlc_table(trk)
    labels = labels_from({"videos/11.mp4": kp}, tracks=individuals, nodes=bodyparts, fps=30.0)
    sio.save_slp(labels, str(tmp_path / "11.slp"))
    write_nwb(labels, tmp_path / "11.nwb", frames=len(kp), fps=30.0)
    ann = RAT46 / "annot" / "11_annot.txt"
    ref = get_reader("dlc")(str(trk), data=DataConfig(annotation_path=str(ann)), fps=30.0)[0]
    for f in ("11.slp", "11.nwb"):
        (got,) = read(tmp_path / f, annotation_path=str(ann))
        assert got.mouse_ids == individuals and got.bodyparts == bodyparts and got.fps == 30.0
        T = got.num_frames  # frames after the last detection have no instance
        np.testing.assert_array_equal(got.keypoints, kp[:T])
        assert np.isnan(kp[T:]).all()
        np.testing.assert_array_equal(got.labels, ref.labels[:T])
        assert got.class_names == ref.class_names
