"""Readers against tiny fixture files written here in the exact on-disk formats."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from format_fixtures import BORIS, BPS, calms_seq, write_calms_json, write_dlc, write_mabe, write_simba

from trainer.config import DataConfig
from trainer.data import READERS, SPLITTERS, get_reader
from trainer.data.detect import detect_format
from trainer.data.recording import DataError, Recording


def read(fmt, path, fps=30.0, **data):
    return get_reader(fmt)(str(path), data=DataConfig(**data), fps=fps)


def test_every_format_is_registered():
    for name in ("calms21", "mabe25", "dlc", "simba", "auto"):
        assert callable(get_reader(name)), name
    assert {"by_video", "by_lab", "kfold"} <= set(SPLITTERS)
    assert "synthetic" in READERS


# --------------------------------------------------------------------------- CalMS21


def test_calms21_json_layout_and_labels(tmp_path):
    seqs = {"task1/train/mouse001": calms_seq(12, 0), "task1/train/mouse002": calms_seq(9, 1, ann=False)}
    f = write_calms_json(tmp_path / "calms21_task1_train.json", seqs)
    recs = read("calms21", f)
    assert [r.video_id for r in recs] == list(seqs)
    r = recs[0]
    raw = np.asarray(seqs["task1/train/mouse001"]["keypoints"], dtype=np.float32)
    assert r.keypoints.shape == (12, 2, 7, 2)
    # (T, mouse, xy, part) on disk -> (T, mouse, part, xy) in memory
    assert r.keypoints[3, 1, 5, 0] == raw[3, 1, 0, 5] and r.keypoints[3, 1, 5, 1] == raw[3, 1, 1, 5]
    assert r.class_names[0] == "other" and r.pairs == [(0, 1)] and r.fps == 30.0
    names = [r.class_names[c] for c in r.labels[:, 0]]
    vocab = ["attack", "investigation", "mount", "other"]
    assert names == [vocab[i % 4] for i in range(12)]
    assert recs[1].labels is None
    assert detect_format(f) == "calms21"


def test_calms21_npy_variant(tmp_path):
    rng = np.random.default_rng(0)
    doc = {
        "vocabulary": {"attack": 0, "investigation": 1, "mount": 2, "other": 3},
        "sequences": {"seqA": {"keypoints": rng.random((10, 2, 2, 7)), "annotations": np.full(10, 2)}},
    }
    f = tmp_path / "train.npy"
    np.save(f, doc, allow_pickle=True)
    with pytest.raises(DataError, match="typed on|type data.format=calms21"):
        read("calms21", f)  # no consent given on a command line: never unpickled
    from trainer.data.calms21 import npy_consent

    with npy_consent(True):
        (r,) = read("calms21", f)
    assert r.keypoints.shape == (10, 2, 7, 2)
    assert {r.class_names[c] for c in r.labels[:, 0]} == {"mount"}
    with pytest.raises(DataError, match="not auto-detected"):
        detect_format(f)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda s: s.update(keypoints=np.zeros((5, 2, 7)).tolist()), "keypoints' has shape"),
        (lambda s: s.update(annotations=[0, 1]), "2 annotations for 12 frames"),
        (lambda s: s.update(annotations=[7] * 12), "annotation value 7"),
        (lambda s: s.update(keypoints=np.full((12, 2, 2, 7), np.nan).tolist()), "no valid keypoint"),
    ],
)
def test_calms21_malformed(tmp_path, mutate, match):
    seq = calms_seq(12, 0)
    mutate(seq)
    f = write_calms_json(tmp_path / "bad.json", {"s": seq})
    with pytest.raises(DataError, match=match) as e:
        read("calms21", f)
    assert str(f) in str(e.value) and "\n" not in str(e.value)


def test_calms21_bad_json_and_unknown_behaviour(tmp_path):
    f = tmp_path / "broken.json"
    f.write_text('{"a": {"s": {"keypoints": [1, 2,')
    with pytest.raises(DataError, match=r"broken.json: not valid JSON \(line 1"):
        read("calms21", f)
    g = write_calms_json(tmp_path / "ok.json", {"s": calms_seq(8, 0)})
    with pytest.raises(DataError, match="unknown behaviour 'attack'"):
        read("calms21", g, behaviors=["investigation", "mount"])


# --------------------------------------------------------------------------- MABe 2025

def test_mabe25_train_layout(tmp_path, caplog):
    videos = [
        dict(lab_id="LabA", video_id=101, fps=30.0, pix=12.5, T=40, mice=[1, 2, 3],
             missing=[(3, 7), (3, 8)],
             bl=["mouse1,mouse2,sniff", "mouse2,mouse1,attack", "mouse1,self,rear"],
             ann=[(1, 2, "sniff", 5, 15), (1, 2, "sniff", 30, 60), (2, 1, "attack", 10, 20), (1, 1, "rear", 0, 4)]),
        dict(lab_id="LabB", video_id=202, fps=25.0, pix=None, T=20, mice=[1, 2], bl=None, ann=None),
    ]
    write_mabe(tmp_path, videos=videos)
    with caplog.at_level(logging.INFO):
        recs = read("mabe25", tmp_path)
    assert [r.video_id for r in recs] == ["101"]  # 202 has no behaviors_labeled: skipped
    assert "without behaviors_labeled" in caplog.text
    assert "clipped" in caplog.text  # sniff [30, 60) runs past the 40 tracked frames
    r = recs[0]
    assert r.keypoints.shape == (40, 3, 5, 2) and r.fps == 30.0
    assert r.mouse_ids == ["mouse1", "mouse2", "mouse3"]
    assert r.bodyparts == BPS[::-1]  # order of body_parts_tracked
    assert np.isnan(r.keypoints[7:9, 2]).all() and np.isfinite(r.keypoints[6, 2]).all()
    assert r.meta["lab_id"] == "LabA" and r.meta["pix_per_cm"] == 12.5
    assert r.class_names == ["other", "attack", "rear", "sniff"]
    assert r.pairs == [(0, 0), (0, 1), (1, 0)]  # (agent, target) incl. self, from behaviors_labeled
    C = {n: i for i, n in enumerate(r.class_names)}
    assert r.label_mask.tolist() == [[True, False, True, False], [True, False, False, True], [True, True, False, False]]
    sniff = r.labels[:, 1]
    assert (sniff[5:15] == C["sniff"]).all() and (sniff[30:40] == C["sniff"]).all() and (sniff[15:30] == 0).all()
    assert (r.labels[10:20, 2] == C["attack"]).all() and (r.labels[:4, 0] == C["rear"]).all()
    assert sorted(r.meta["behaviors_labeled"]) == ["mouse1,mouse2,sniff", "mouse1,self,rear", "mouse2,mouse1,attack"]
    assert r.meta["intervals"]["stop_frame"].max() == 40


def test_mabe25_overlap_rule_later_start_wins(tmp_path):
    videos = [dict(lab_id="L", video_id=1, fps=30.0, pix=10.0, T=30, mice=[1, 2],
                   bl=["mouse1,mouse2,sniff", "mouse1,mouse2,attack"],
                   ann=[(1, 2, "sniff", 0, 20), (1, 2, "attack", 8, 12)])]
    write_mabe(tmp_path, videos=videos)
    (r,) = read("mabe25", tmp_path)
    names = np.array(r.class_names)[r.labels[:, 0]]
    assert (names[:8] == "sniff").all() and (names[8:12] == "attack").all() and (names[12:20] == "sniff").all()
    assert (names[20:] == "other").all()


def test_mabe25_test_layout_single_file_and_labs(tmp_path):
    write_mabe(tmp_path, split="test")
    recs = read("mabe25", tmp_path)
    assert len(recs) == 4 and all(r.labels is None for r in recs)
    r202 = next(r for r in recs if r.video_id == "202")
    assert r202.pairs == [(0, 0), (0, 1), (1, 0), (1, 1)]  # no whitelist: every ordered pair incl. self
    one = read("mabe25", tmp_path / "test_tracking" / "LabA" / "102.parquet")
    assert [r.video_id for r in one] == ["102"] and one[0].fps == 25.0
    assert {r.meta["lab_id"] for r in read("mabe25", tmp_path, labs=["LabB"])} == {"LabB"}
    assert detect_format(tmp_path) == "mabe25"


def test_mabe25_split_by_lab_and_kfold(tmp_path):
    write_mabe(tmp_path, split="test")
    recs = read("mabe25", tmp_path)
    train, val = SPLITTERS["by_lab"](recs, DataConfig(split="by_lab", val_fraction=0.5))
    assert {r.meta["lab_id"] for r in train}.isdisjoint({r.meta["lab_id"] for r in val}) and train and val
    seen = []
    for fold in range(2):
        tr, va = SPLITTERS["kfold"](recs, DataConfig(split="kfold", num_folds=2, fold=fold))
        assert {r.video_id for r in tr}.isdisjoint({r.video_id for r in va})
        seen += [r.video_id for r in va]
    assert sorted(seen) == sorted(r.video_id for r in recs)  # every video validated exactly once
    with pytest.raises(DataError, match="data.fold"):
        SPLITTERS["kfold"](recs, DataConfig(num_folds=2, fold=2))


def _one_video(**kw):
    v = dict(lab_id="L", video_id=7, fps=30.0, pix=10.0, T=10, mice=[1, 2], bl=["mouse1,mouse2,sniff"],
             ann=[(1, 2, "sniff", 0, 5)])
    v.update(kw)
    return [v]


@pytest.mark.parametrize(
    "break_it, match",
    [
        (lambda root: pd.read_parquet(root / "train_tracking/L/7.parquet").drop(columns="y")
         .to_parquet(root / "train_tracking/L/7.parquet"), "7.parquet: missing column 'y'"),
        (lambda root: pd.read_parquet(root / "train_tracking/L/7.parquet").iloc[:0]
         .to_parquet(root / "train_tracking/L/7.parquet"), "7.parquet: video has no frames"),
        (lambda root: pd.read_csv(root / "train.csv").assign(frames_per_second=None)
         .to_csv(root / "train.csv", index=False), "train.csv: video 7 has no valid frames_per_second"),
        (lambda root: (root / "train_annotation/L/7.parquet").unlink(), "7.parquet: annotation file not found"),
        (lambda root: pd.read_csv(root / "train.csv").drop(columns="lab_id")
         .to_csv(root / "train.csv", index=False), "train.csv: missing column 'lab_id'"),
        (lambda root: pd.read_parquet(root / "train_tracking/L/7.parquet")
         .assign(x=lambda d: d.x.where(d.mouse_id != 2), y=lambda d: d.y.where(d.mouse_id != 2))
         .to_parquet(root / "train_tracking/L/7.parquet"), "mouse 'mouse2' has no valid keypoint"),
        (lambda root: pd.DataFrame({"agent_id": [1], "target_id": [2], "action": ["sniff"], "start_frame": [4],
                                    "stop_frame": [2]}).to_parquet(root / "train_annotation/L/7.parquet"),
         r"interval \[4, 2\) is empty"),
        (lambda root: pd.read_csv(root / "train.csv").assign(behaviors_labeled='["mouse1,mouse3,sniff"]')
         .to_csv(root / "train.csv", index=False), "behaviors_labeled names mouse3"),
    ],
)
def test_mabe25_malformed(tmp_path, break_it, match):
    write_mabe(tmp_path, videos=_one_video())
    break_it(tmp_path)
    with pytest.raises(DataError, match=match) as e:
        read("mabe25", tmp_path)
    assert "\n" not in str(e.value)


def test_mabe25_explicit_behaviours_select_actions(tmp_path, caplog):
    write_mabe(tmp_path)
    with caplog.at_level(logging.WARNING):
        recs = read("mabe25", tmp_path, behaviors=["attack", "rear"])
    assert "ignored: sniff" in caplog.text and "outside the class list ignored" in caplog.text
    assert [r.video_id for r in recs] == ["101", "201"]  # 102 only had sniff labelled
    r = recs[0]
    assert r.class_names == ["other", "attack", "rear"] and r.pairs == [(0, 0), (1, 0)]
    assert (r.labels[12:14, 1] == 1).all()  # mouse2->mouse1 attack; its overlapping sniff bout is dropped


# --------------------------------------------------------------------------- DeepLabCut + BORIS / Caltech


def test_dlc_multi_animal_with_boris(tmp_path):
    vals = write_dlc(tmp_path / "trk" / "session1DLC_resnet50_projJan1shuffle1_1000.csv", 40, ["resident", "intruder"],
                     ["nose", "tail_base"], first_row_empty=True)
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "session1.csv").write_text(BORIS)
    (r,) = read("dlc", tmp_path / "trk", annotation_path=str(tmp_path / "ann"))
    # the mostly empty first data row is frame 0, not swallowed into the header
    assert r.keypoints.shape == (40, 2, 2, 2) and r.video_id == "session1"
    assert np.allclose(r.keypoints[0, 0, 0], vals[0, :2], atol=1e-3) and np.isnan(r.keypoints[0, 1]).all()
    assert np.allclose(r.keypoints[1, 1, 1], vals[1, 9:11], atol=1e-3)
    assert r.mouse_ids == ["resident", "intruder"] and r.fps == 10.0
    assert r.class_names == ["other", "attack", "jump", "sniff"]
    assert r.pairs == [(0, 1), (1, 0)]
    C = {n: i for i, n in enumerate(r.class_names)}
    res, intr = r.labels[:, 0], r.labels[:, 1]
    assert (res[5:10] == C["sniff"]).all() and res[10] == 0 and res[20] == C["jump"] and res[21] == 0
    assert (res[25:40] == C["sniff"]).all()  # STOP at 9.0 s = frame 90 clipped to the 40 tracked frames
    assert (intr[12:15] == C["attack"]).all() and intr[15] == 0 and (intr[:12] == 0).all()


def test_dlc_single_animal_caltech_stream_past_end(tmp_path, caplog):
    write_dlc(tmp_path / "vidA.csv", 30, None, ["nose", "ear_left", "tail_base"])
    annot = (
        "Caltech Behavior Annotator - Annotation File\n\nConfiguration file:\n"
        "other\to\ngroom\tg\nrear\tr\n\n"
        "S1: start\tend\ttype\n-----------------------------\n"
        "1\t10\tother\n11\t20\tgroom\n21\t45\trear\n\n"
        "S2: start\tend\ttype\n-----------------------------\n"
        "1\t30\tother\n"
    )
    (tmp_path / "vidA_annot.txt").write_text(annot)
    with caplog.at_level(logging.WARNING):
        (r,) = read("dlc", tmp_path / "vidA.csv", fps=25.0, annotation_path=str(tmp_path / "vidA_annot.txt"))
    assert "clipped" in caplog.text and "vidA_annot.txt" in caplog.text
    assert r.keypoints.shape == (30, 1, 3, 2) and r.pairs == [(0, 0)] and r.fps == 25.0
    names = np.array(r.class_names)[r.labels[:, 0]]
    assert (names[:10] == "other").all() and (names[10:20] == "groom").all() and (names[20:] == "rear").all()
    (r2,) = read("dlc", tmp_path / "vidA.csv", annotation_path=str(tmp_path / "vidA_annot.txt"), annotation_stream="S2")
    assert r2.class_names == ["other"] and (r2.labels == 0).all()
    with pytest.raises(DataError, match="stream 'S3' not found"):
        read("dlc", tmp_path / "vidA.csv", annotation_path=str(tmp_path / "vidA_annot.txt"), annotation_stream="S3")


def test_dlc_boris_aggregated_and_explicit_pairs(tmp_path):
    write_dlc(tmp_path / "a.csv", 20, ["m1", "m2"], ["nose"])
    agg = (
        "Observation id,Observation date,Media file,FPS,Subject,Behavior,Behavioral category,Behavior type,"
        "Start (s),Stop (s),Duration (s)\n"
        "obs,2024,a.mp4,5,M1,mount,,STATE,1.0,2.0,1.0\n"
        "obs,2024,a.mp4,5,No focal subject,rattle,,POINT,3.0,3.0,0\n"
    )
    (tmp_path / "obs_events.csv").write_text(agg)
    (r,) = read("dlc", "", annotation_pairs=[[str(tmp_path / "a.csv"), str(tmp_path / "obs_events.csv")]])
    C = {n: i for i, n in enumerate(r.class_names)}
    assert r.fps == 5.0 and r.pairs == [(0, 1)]  # "M1" matches individual "m1"; no subject -> first animal
    assert (r.labels[5:10, 0] == C["mount"]).all() and r.labels[15, 0] == C["rattle"] and r.labels[10, 0] == 0


@pytest.mark.parametrize(
    "content, match",
    [
        ("scorer,s,s\nbodyparts,nose,nose\nindividuals,m1,m1\ncoords,x,y\n0,1,2\n", "header of the wrong depth"),
        ("scorer,s,s\nbodyparts,nose,nose\ncoords,x,likelihood\n0,1,0.9\n", "missing column"),
        ("scorer,s,s\nbodyparts,nose,nose\ncoords,x,y\n", "video has no frames"),
        ("scorer,s,s\nbodyparts,nose,nose\ncoords,x,y\n0,1,2\n1,abc,3\n", "malformed data row"),
        ("scorer,s,s\nbodyparts,nose,nose\ncoords,x,y\n0,,\n1,,\n", "no valid keypoint"),
    ],
)
def test_dlc_malformed_tracking(tmp_path, content, match):
    f = tmp_path / "bad.csv"
    f.write_text(content)
    with pytest.raises(DataError, match=match) as e:
        read("dlc", f)
    assert str(f) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "boris, kw, match",
    [
        (BORIS.replace("9.0,/videos/session1.mp4,10,10,Resident,sniff,social,,STOP\n", ""), {},
         "START of 'sniff' has no matching STOP"),
        (BORIS, {"behaviors": ["sniff", "attack"]}, "unknown behaviour 'jump'"),
        (BORIS.replace("Intruder", "Stranger"), {}, "subject 'Stranger' matches no individual"),
        ("just,some\nrandom,csv\n", {"annotation_format": "boris"}, "no BORIS header row"),
    ],
)
def test_dlc_malformed_annotations(tmp_path, boris, kw, match):
    write_dlc(tmp_path / "session1.csv", 30, ["resident", "intruder"], ["nose"])
    (tmp_path / "ann.csv").write_text(boris)
    with pytest.raises(DataError, match=match) as e:
        read("dlc", tmp_path / "session1.csv", annotation_path=str(tmp_path / "ann.csv"), **kw)
    assert "ann.csv" in str(e.value)


def test_dlc_unannotated_and_detection(tmp_path):
    write_dlc(tmp_path / "v1.csv", 12, ["a", "b"], ["nose", "tail"])
    write_dlc(tmp_path / "v2.csv", 15, ["a", "b"], ["nose", "tail"])
    recs = read("auto", tmp_path)
    assert [r.num_frames for r in recs] == [12, 15] and all(r.labels is None for r in recs)
    assert recs[0].pairs == [(0, 1), (1, 0)]
    assert detect_format(tmp_path / "v1.csv") == "dlc"


def test_dlc_h5(tmp_path):
    pytest.importorskip("tables")
    cols = pd.MultiIndex.from_tuples(
        [("s", "m1", "nose", c) for c in ("x", "y", "likelihood")], names=["scorer", "individuals", "bodyparts", "coords"]
    )
    pd.DataFrame(np.arange(15.0).reshape(5, 3), columns=cols).to_hdf(tmp_path / "v.h5", key="df")
    (r,) = read("dlc", tmp_path / "v.h5")
    assert r.keypoints.shape == (5, 1, 1, 2) and r.keypoints[1, 0, 0].tolist() == [3.0, 4.0]


# --------------------------------------------------------------------------- SimBA


def test_simba_project_csv(tmp_path):
    T = 20
    attack = np.zeros(T, int)
    attack[2:8] = 1
    mount = np.zeros(T, int)
    mount[5:12] = 1  # overlaps attack on frames 5..7: mount started later and wins
    proj = tmp_path / "project_folder"
    df = write_simba(proj / "csv" / "targets_inserted" / "Video1.csv", T, behaviours={"Attack": attack, "Mount": mount})
    (proj / "logs").mkdir(parents=True)
    pd.DataFrame({"Video": ["Video1"], "fps": [25], "Resolution_width": [640], "Resolution_height": [480],
                  "Distance_in_mm": [100], "pixels/mm": [1.5]}).to_csv(proj / "logs" / "video_info.csv", index=False)
    (r,) = read("auto", proj / "csv" / "targets_inserted")
    assert r.keypoints.shape == (T, 2, 3, 2) and r.bodyparts == ["Nose", "Ear_left", "Tail_base"]
    assert r.mouse_ids == ["mouse1", "mouse2"] and r.pairs == [(0, 1)]
    assert np.allclose(r.keypoints[:, 1, 1, 0], df["Ear_left_2_x"], atol=1e-4)
    assert r.fps == 25.0 and r.meta["pix_per_cm"] == 15.0
    assert r.class_names == ["other", "Attack", "Mount"]  # the integer feature column is not a behaviour
    names = np.array(r.class_names)[r.labels[:, 0]]
    assert (names[2:5] == "Attack").all() and (names[5:12] == "Mount").all() and names[12] == "other"


def test_simba_malformed(tmp_path):
    df = write_simba(tmp_path / "v.csv", 10, behaviours={"Attack": np.zeros(10, int)})
    df.drop(columns="Nose_2_y").to_csv(tmp_path / "v.csv")
    with pytest.raises(DataError, match="v.csv: missing column 'Nose_2_y'"):
        read("simba", tmp_path / "v.csv")
    write_simba(tmp_path / "w.csv", 10, behaviours={"Attack": np.zeros(10, int)})
    with pytest.raises(DataError, match="w.csv: missing behaviour column 'Mount'"):
        read("simba", tmp_path / "w.csv", behaviors=["Attack", "Mount"])
    pd.DataFrame({"a": [1], "b": [2]}).to_csv(tmp_path / "x.csv")
    with pytest.raises(DataError, match="no pose columns"):
        read("simba", tmp_path / "x.csv")


def test_detect_format_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        detect_format(tmp_path / "nope")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="no file of a known format"):
        detect_format(tmp_path)
    write_dlc(tmp_path / "v1.csv", 5, None, ["nose"])
    write_simba(tmp_path / "s.csv", 5, behaviours={})
    with pytest.raises(DataError, match="several formats"):
        detect_format(tmp_path)


def test_unlabelled_behaviors_become_minus_one():
    """data.unlabelled_behaviors removes a class and marks its frames -1 (left out of loss and scores)."""
    from trainer.data import drop_classes

    rec = Recording(
        video_id="v", keypoints=np.zeros((5, 2, 1, 2), np.float32), fps=30.0, mouse_ids=["a", "b"],
        bodyparts=["n"], pairs=[(0, 1)], labels=np.array([0, 1, 2, -1, 3]),
        class_names=["other", "base", "social", "aggression"],
    )
    (out,) = drop_classes([rec], ["base"])
    assert out.class_names == ["other", "social", "aggression"]
    assert out.labels[:, 0].tolist() == [0, -1, 1, -1, 2]
