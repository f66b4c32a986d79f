"""Streaming cold path of the feature store: listed videos read, harmonised and featurised one at a time."""

from __future__ import annotations

import errno
import json
import multiprocessing as mp
import os
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from format_fixtures import BPS, write_mabe, write_tracking
from safetensors.numpy import load_file

import trainer.data as data_mod
from trainer.config import make_config
from trainer.data.mabe25 import MabeVideo
from trainer.data.recording import DataError
from trainer.run import train
from trainer.store import content_hash, featurised_splits

NAMES = ["coords", "speed", "distances", "mask"]
PARAMS: dict = {}
OTHER_BPS = ["nose", "neck", "center", "tail_base"]  # LabB's skeleton in the mixed layout


def _mabe(root, *, mixed=True, n=6):
    """MABe-2025 train layout of `n` videos over two labs; mixed: LabB tracks other body parts."""
    videos = [dict(lab_id=f"Lab{'AB'[i % 2]}", video_id=300 + i, fps=30.0, pix=10.0 + i, T=60 + 5 * i, mice=[1, 2],
                   bl=["mouse1,mouse2,sniff", "mouse2,mouse1,sniff", "mouse1,self,rear"],
                   ann=[(1, 2, "sniff", 10, 30), (2, 1, "sniff", 40, 55), (1, 1, "rear", 31, 39)]) for i in range(n)]
    videos.append(dict(lab_id="LabA", video_id=399, fps=30.0, pix=10.0, T=30, mice=[1, 2], bl=None, ann=None))
    write_mabe(root, videos=videos)
    if mixed:
        table = pd.read_csv(root / "train.csv")
        for i, v in enumerate(videos):
            if v["lab_id"] == "LabB":
                write_tracking(root / "train_tracking" / "LabB" / f"{v['video_id']}.parquet", v["T"], v["mice"],
                               bodyparts=OTHER_BPS, seed=i)
                table.loc[table["video_id"] == v["video_id"], "body_parts_tracked"] = json.dumps(OTHER_BPS)
        table.to_csv(root / "train.csv", index=False)
    return videos


def _cfg(tmp_path, data_dir, *extra, out="runs"):
    return make_config(None, ["data.format=mabe25", f"data.path={data_dir}", f"output_dir={tmp_path / out}",
                              "featurize_workers=1", *extra])


@pytest.fixture
def list_path(monkeypatch):
    """Make mabe25 a format without a lister: the cold path reads every video first (the old path)."""
    def use():
        monkeypatch.setattr(data_mod, "LISTERS", {k: v for k, v in data_mod.LISTERS.items() if k != "mabe25"})
    return use


@pytest.mark.parametrize("extra", [["data.units=cm"], ["data.skeleton=native", "data.unlabelled_behaviors=[rear]"],
                                   ["data.skeleton=canonical"], ["data.units=body"]],
                         ids=["auto-mixed-cm", "native", "canonical", "auto-mixed-body"])
def test_listed_videos_read_exactly_like_read_sides(tmp_path, extra):
    _mabe(tmp_path / "d", mixed=extra[0] != "data.skeleton=native")
    cfg = _cfg(tmp_path, tmp_path / "d", *extra)
    recs, num_train = data_mod.read_sides(cfg)
    videos, n, read = data_mod.list_sides(cfg)
    assert n == num_train is None and [v.video_id for v in videos] == [r.video_id for r in recs]
    assert "399" not in [v.video_id for v in videos]  # no behaviors_labeled: skipped by the listing too
    for v, r in zip(videos, recs):
        s = read(v)
        assert content_hash(s) == content_hash(r)  # keypoints, fps, body parts, pairs
        assert s.bodyparts == r.bodyparts and s.class_names == r.class_names and s.mouse_ids == r.mouse_ids
        assert np.array_equal(s.labels, r.labels) and np.array_equal(s.label_mask, r.label_mask)
        assert json.dumps(s.meta, default=str, sort_keys=True) == json.dumps(r.meta, default=str, sort_keys=True)
    if "data.units=cm" in extra:
        assert recs[0].bodyparts[:2] == ["nose", "ear_left"] and len(recs[0].bodyparts) == 8  # canonical: mixed
        assert recs[0].meta["units"] == "cm"
    if "data.units=body" in extra:  # each video in its own body lengths, the same when streamed
        assert all(r.meta["units"] == "body" and r.meta["body_length"] > 0 for r in recs)


def test_validation_path_is_listed_after_training_path(tmp_path):
    _mabe(tmp_path / "a", n=2)
    _mabe(tmp_path / "b", n=3, mixed=False)
    cfg = _cfg(tmp_path, tmp_path / "a", f"data.val_path={tmp_path / 'b'}")
    recs, num_train = data_mod.read_sides(cfg)
    videos, n, read = data_mod.list_sides(cfg)
    assert n == num_train == 2 and len(videos) == len(recs) == 5
    assert [content_hash(read(v)) for v in videos] == [content_hash(r) for r in recs]


def _store_state(cfg):
    """(manifest without its time, {entry key: x.npy bytes}) of the store of `cfg`."""
    root = Path(cfg.output_dir) / "feature_store"
    (man,) = (root / "datasets").glob("*/manifest.json")
    manifest = json.loads(man.read_text())
    manifest.pop("created")
    entries = {p.parent.name: p.read_bytes() for p in (root / "features").glob("*/*/x.npy")}
    labels = {p.name: p.read_bytes() for p in man.parent.glob("labels_*.npy")}
    return man.parent.name, manifest, entries, labels


def test_streamed_store_equals_the_list_path(tmp_path, list_path):
    _mabe(tmp_path / "d")
    streamed = featurised_splits(_cfg(tmp_path, tmp_path / "d", "data.units=cm", out="s"), names=NAMES, params=PARAMS)
    list_path()
    listed = featurised_splits(_cfg(tmp_path, tmp_path / "d", "data.units=cm", out="l"), names=NAMES, params=PARAMS)
    assert [v.video_id for v in streamed.train] == [v.video_id for v in listed.train]
    assert [v.video_id for v in streamed.val] == [v.video_id for v in listed.val]
    assert streamed.pipeline.spec() == listed.pipeline.spec()
    a = _store_state(_cfg(tmp_path, tmp_path / "d", out="s"))
    b = _store_state(_cfg(tmp_path, tmp_path / "d", out="l"))
    assert a[0] == b[0] and a[1] == b[1] and a[2] == b[2] and len(a[2]) == 6 and a[3] == b[3] and len(a[3]) == 6
    for s, w in zip(streamed.train + streamed.val, listed.train + listed.val):
        assert s.labels.dtype == np.int8 and w.labels.dtype == np.int8  # both paths keep 1 byte per pair-frame
        assert np.array_equal(s.labels, w.labels) and s.meta.keys() == w.meta.keys()


@pytest.fixture
def counted(monkeypatch, tmp_path):
    """MabeVideo.read instrumented: how many of its Recordings are alive at once (per process),
    and which process read each video (lines "pid alive" in a file, so pool workers report too)."""
    log = tmp_path / "reads.txt"
    alive = {"now": 0, "max": 0}
    read = MabeVideo.read

    def gone():
        alive["now"] -= 1

    def counting(self):
        rec = read(self)
        alive["now"] += 1
        alive["max"] = max(alive["max"], alive["now"])
        weakref.finalize(rec, gone)
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {alive['now']}\n")
        return rec

    monkeypatch.setattr(MabeVideo, "read", counting)
    return alive, log


def test_cold_store_holds_one_video_at_a_time(tmp_path, counted, list_path):
    alive, log = counted
    _mabe(tmp_path / "d")
    featurised_splits(_cfg(tmp_path, tmp_path / "d", out="s"), names=NAMES, params=PARAMS)
    assert alive["max"] == 1 and len(log.read_text().splitlines()) == 6
    list_path()  # the instrument sees the old path hold every video at once
    alive["max"] = 0
    featurised_splits(_cfg(tmp_path, tmp_path / "d", out="l"), names=NAMES, params=PARAMS)
    assert alive["max"] == 6


def _featurise_in_child(cfg, pid_file):
    pid_file.write_text(str(os.getpid()))
    featurised_splits(cfg, names=NAMES, params=PARAMS)


def test_pool_workers_read_their_own_videos(tmp_path, counted):
    _, log = counted
    _mabe(tmp_path / "d")
    # in a forked child: it has one thread (the store featurises in-process in multi-threaded callers,
    # and earlier tests may have left threads in this one)
    cfg = _cfg(tmp_path, tmp_path / "d", "featurize_workers=2", out="s")
    child = mp.get_context("fork").Process(target=_featurise_in_child, args=(cfg, tmp_path / "pid"))
    child.start()
    child.join(120)
    assert child.exitcode == 0
    parent = int((tmp_path / "pid").read_text())
    reads = [tuple(map(int, x.split())) for x in log.read_text().splitlines()]
    assert len(reads) == 6
    assert sum(pid == parent for pid, _ in reads) == 1  # the featurising process reads only the first video
    assert len({pid for pid, _ in reads}) == 3 and max(n for _, n in reads) == 1


def test_listing_with_wrong_body_parts_falls_back_to_reading_everything(tmp_path, list_path, caplog):
    _mabe(tmp_path / "d")
    table = pd.read_csv(tmp_path / "d" / "train.csv")
    table["body_parts_tracked"] = json.dumps(BPS[::-1])  # LabB's videos really track OTHER_BPS
    table.to_csv(tmp_path / "d" / "train.csv", index=False)
    with caplog.at_level("INFO", logger="trainer.store"):
        got = featurised_splits(_cfg(tmp_path, tmp_path / "d", out="s"), names=NAMES, params=PARAMS)
    assert "its listing says" in caplog.text
    list_path()
    want = featurised_splits(_cfg(tmp_path, tmp_path / "d", out="l"), names=NAMES, params=PARAMS)
    assert [v.content for v in got.train + got.val] == [v.content for v in want.train + want.val]
    assert len(got.pipeline.bodyparts) == 8  # the two skeletons were mapped onto the canonical one


def test_bad_parquet_in_a_worker_is_one_line_naming_it(tmp_path):
    _mabe(tmp_path / "d")
    bad = tmp_path / "d" / "train_tracking" / "LabB" / "303.parquet"
    bad.write_bytes(b"not a parquet")
    cfg = _cfg(tmp_path, tmp_path / "d", "featurize_workers=2")
    with pytest.raises(DataError, match="303.parquet: cannot read as parquet") as e:
        featurised_splits(cfg, names=NAMES, params=PARAMS)
    assert "\n" not in str(e.value)
    assert not list((tmp_path / "runs" / "feature_store" / "datasets").iterdir())  # no half manifest left


def test_train_streamed_equals_list_path(tmp_path, list_path):
    _mabe(tmp_path / "d")
    keys = ["data.units=cm", "data.split=by_lab", "epochs=2", "sequence_length=16", "batch_size=8",
            "model_type=per_frame_mlp", "hidden_dim=16", "num_layers=1", "features=[coords,speed,distances,mask]",
            "name=rt", "learning_rate=1e-3"]
    a = train(_cfg(tmp_path, tmp_path / "d", *keys, out="s"))
    list_path()
    b = train(_cfg(tmp_path, tmp_path / "d", *keys, out="l"))
    for k in ("val_macro_f1", "f1", "confusion", "accuracy", "epochs_run"):
        assert a[k] == b[k], k
    wa = load_file(str(tmp_path / "s" / "rt" / "checkpoints" / "best" / "model.safetensors"))
    wb = load_file(str(tmp_path / "l" / "rt" / "checkpoints" / "best" / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)
    assert _store_state(_cfg(tmp_path, tmp_path / "d", out="s"))[1:] == _store_state(_cfg(tmp_path, tmp_path / "d",
                                                                                         out="l"))[1:]


def test_synthetic_videos_are_listed_and_generated_one_at_a_time(tmp_path):
    cfg = make_config(None, ["data.synthetic.num_videos=3", "data.synthetic.frames_per_video=100",
                             "data.synthetic.num_mice=3", f"output_dir={tmp_path}"])
    recs, num_train = data_mod.read_sides(cfg)
    videos, n, read = data_mod.list_sides(cfg)
    assert n == num_train is None and [v.video_id for v in videos] == [r.video_id for r in recs]
    assert [content_hash(read(v)) for v in videos] == [content_hash(r) for r in recs]


def test_mixed_skeletons_under_native_give_the_list_paths_error(tmp_path, list_path):
    _mabe(tmp_path / "d")
    errors = []
    for out in ("s", "l"):
        with pytest.raises(DataError) as e:
            featurised_splits(_cfg(tmp_path, tmp_path / "d", "data.skeleton=native", out=out), names=NAMES,
                              params=PARAMS)
        errors.append(str(e.value))
        list_path()
    assert errors[0] == errors[1] and "differ from the training set's" in errors[0]


def test_read_only_store_is_one_clear_line(tmp_path, monkeypatch):
    _mabe(tmp_path / "d", n=2)
    mkdir = Path.mkdir

    def read_only(self, *a, **k):
        if self.name.startswith(".tmp-"):
            raise OSError(errno.EROFS, "Read-only file system")
        return mkdir(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(DataError, match="read-only file system") as e:
        featurised_splits(_cfg(tmp_path, tmp_path / "d"), names=NAMES, params=PARAMS)
    assert "\n" not in str(e.value) and "feature_store=none" in str(e.value)
