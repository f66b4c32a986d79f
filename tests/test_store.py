"""The on-disk feature store (trainer/store.py): keys, reuse, damage, concurrency, bad dirs."""

from __future__ import annotations

import errno
import json
import multiprocessing as mp
import os

import numpy as np
import pytest
import torch

import trainer.data as data_mod
from trainer.config import make_config
from trainer.data.recording import DataError
from trainer.data.synthetic import generate_dataset
from trainer.data.windows import Sequence, Stitcher, WindowDataset
from trainer.features import FEATURES, FeaturePipeline, Moments, pair_pose
from trainer.run import train
from trainer.store import FeatureRows, FeatureStore, content_hash, feature_key, featurised_splits

PARAMS = {"pca_components": 4, "temporal_windows": [0.25, 1.0]}
NAMES = ["coords", "speed", "distances", "angles", "pca", "temporal_stats", "mask"]


def _cfg(tmp_path, *extra):
    return make_config(None, ["data.synthetic.num_videos=3", "data.synthetic.frames_per_video=200",
                              "data.synthetic.num_mice=3", f"output_dir={tmp_path / 'runs'}", *extra])


def _events(cfg_or_root):
    root = cfg_or_root
    return [json.loads(x) for x in (root / "events.jsonl").read_text().splitlines()]


def _splits(cfg):
    return featurised_splits(cfg, names=NAMES, params=PARAMS)


def test_miss_then_hit_without_reading(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path)
    first = _splits(cfg)
    root = tmp_path / "runs" / "feature_store"
    assert _events(root)[-1]["misses"] == 3

    def no_reading(*a, **k):
        raise AssertionError("a warm store must not read the data")

    monkeypatch.setattr(data_mod, "read_sides", no_reading)
    second = _splits(cfg)
    assert _events(root)[-1] == {**_events(root)[-1], "hits": 3, "misses": 0}
    assert [v.video_id for v in second.train] == [v.video_id for v in first.train]
    for v in first.train + first.val:
        for a, b in zip(first.rows[v.video_id], second.rows[v.video_id]):
            assert np.array_equal(np.asarray(a), np.asarray(b))
        w = next(x for x in second.train + second.val if x.video_id == v.video_id)
        assert np.array_equal(np.asarray(w.labels), np.asarray(v.labels))


def test_stored_rows_equal_in_memory_features(tmp_path):
    recs = generate_dataset(2, frames=150, num_mice=3)
    fp = FeaturePipeline(NAMES, bodyparts=recs[0].bodyparts, params=PARAMS)
    store = FeatureStore(tmp_path / "s")
    keys = store.ensure(recs, fp)
    for r, k in zip(recs, keys):
        rows = store.rows(k)
        for p, x in enumerate(fp.raw(r)):
            assert np.array_equal(np.asarray(rows[p]), x)
            idx = np.array([5, 6, 7, 40])
            assert np.array_equal(rows[p][idx], x[idx])
            assert np.array_equal(rows[p][10:20, 3:9], x[10:20, 3:9])


def test_changed_feature_parameter_or_content_rebuilds(tmp_path):
    recs = generate_dataset(2, frames=120)
    store = FeatureStore(tmp_path / "s")
    fp = FeaturePipeline(NAMES, bodyparts=recs[0].bodyparts, params=PARAMS)
    k1 = store.ensure(recs, fp)
    fp2 = FeaturePipeline(NAMES, bodyparts=recs[0].bodyparts, params={**PARAMS, "temporal_windows": [0.5]})
    k2 = store.ensure(recs, fp2)
    assert set(k1).isdisjoint(k2) and store.misses == 4
    recs[0].keypoints[10, 0, 0, 0] += 1.0  # the source changed
    assert content_hash(recs[0]) != k1[0] and store.ensure(recs, fp)[0] != k1[0]
    assert store.misses == 5 and store.hits == 1


def test_touched_source_file_reads_again_but_reuses_unchanged_features(tmp_path):
    from format_fixtures import calms_seq, write_calms_json

    f = write_calms_json(tmp_path / "calms21_task1_train.json", {f"s{i}": calms_seq(80, i) for i in range(3)})
    cfg = make_config(None, ["data.format=calms21", f"data.path={f}", f"output_dir={tmp_path / 'runs'}"])
    root = tmp_path / "runs" / "feature_store"
    _splits(cfg)
    assert _events(root)[-1]["misses"] == 3
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))  # touched, same content
    _splits(cfg)
    assert _events(root)[-1] == {**_events(root)[-1], "hits": 3, "misses": 0}
    assert len(list((root / "datasets").iterdir())) == 2  # the data were read again under a new key
    seqs = {f"s{i}": calms_seq(80, i) for i in range(3)}
    seqs["s1"] = calms_seq(80, 99)
    write_calms_json(f, seqs)
    _splits(cfg)
    assert _events(root)[-1]["misses"] == 1


def test_truncated_entry_is_detected_and_rebuilt(tmp_path):
    recs = generate_dataset(1, frames=100)
    fp = FeaturePipeline(NAMES, bodyparts=recs[0].bodyparts, params=PARAMS)
    store = FeatureStore(tmp_path / "s")
    (key,) = store.ensure(recs, fp)
    x = store.entry(key) / "x.npy"
    good = x.read_bytes()
    x.write_bytes(good[: len(good) // 2])
    assert not store.valid(key)
    store.ensure(recs, fp)
    assert store.misses == 2 and store.valid(key) and x.read_bytes() == good
    (store.entry(key) / "DONE.json").unlink()  # killed before the marker: not an entry
    assert not store.valid(key)


def _write_same(root, seed, barrier):
    recs = generate_dataset(1, frames=400, num_mice=3)
    fp = FeaturePipeline(NAMES, bodyparts=recs[0].bodyparts, params=PARAMS)
    barrier.wait()
    FeatureStore(root).write_features(feature_key(content_hash(recs[0]), fp.spec()), recs[0], fp)


def test_two_processes_writing_one_entry(tmp_path):
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_write_same, args=(tmp_path / "s", i, barrier)) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    recs = generate_dataset(1, frames=400, num_mice=3)
    fp = FeaturePipeline(NAMES, bodyparts=recs[0].bodyparts, params=PARAMS)
    store = FeatureStore(tmp_path / "s")
    key = feature_key(content_hash(recs[0]), fp.spec())
    assert store.valid(key)
    for p, x in enumerate(fp.raw(recs[0])):
        assert np.array_equal(np.asarray(store.rows(key)[p]), x)
    leftovers = [d.name for d in store.entry(key).parent.iterdir() if d.name != key]
    assert leftovers == []


def test_streaming_statistics_equal_in_memory(tmp_path):
    rng = np.random.default_rng(0)
    blocks = [rng.normal(3.0, 2.0, (n, 5)) * [1, 10, 100, 1e3, 1e-3] for n in (1, 7, 300, 50)]
    X = np.concatenate(blocks)
    m = Moments(5)
    for b in blocks:
        m.add(b)
    half = Moments(5).add(blocks[0]).add(blocks[1]).merge(Moments(5).add(blocks[2]).add(blocks[3]))
    for mm in (m, half):
        assert np.allclose(mm.mean, X.mean(0), rtol=1e-10) and np.allclose(mm.std, X.std(0), rtol=1e-10)
    # the pipeline's streamed fit (chunked, from stored rows) against one in-memory pass
    recs = generate_dataset(3, frames=300, num_mice=3)
    fp = FeaturePipeline(NAMES, bodyparts=recs[0].bodyparts, params=PARAMS)
    store = FeatureStore(tmp_path / "s")
    rows = [x for k in store.ensure(recs, fp) for x in store.rows(k)]
    import trainer.features as features_mod

    old = features_mod.FIT_CHUNK
    features_mod.FIT_CHUNK = 37  # many chunks per sequence
    try:
        fp.fit(rows)
    finally:
        features_mod.FIT_CHUNK = old
    full = np.concatenate([fp.apply_post(np.asarray(x)) for x in rows])
    assert np.allclose(fp.mean[fp.scale_mask], full.mean(0)[fp.scale_mask], atol=1e-5, rtol=1e-5)
    std = full.std(0)
    keep = fp.scale_mask & (std > 1e-8)
    assert np.allclose(fp.std[keep], std[keep], atol=1e-5, rtol=1e-5)


def test_pca_sample_is_bounded(monkeypatch):
    import trainer.features as features_mod

    recs = generate_dataset(2, frames=200)
    fp = FeaturePipeline(["pca"], bodyparts=recs[0].bodyparts, params=PARAMS)
    seen = {}
    real = features_mod.fit_pca

    def spy(X, params):
        seen["n"] = len(X)
        return real(X, params)

    monkeypatch.setattr(features_mod, "PCA_SAMPLE", 150)
    monkeypatch.setitem(FEATURES, "pca", features_mod.Feature(features_mod.pca_input, fit=spy,
                                                              post=features_mod.pca_project))
    fp.fit([x for r in recs for x in fp.raw(r)])
    assert seen["n"] == 150


def test_vectorised_features_equal_the_per_pair_reference():
    recs = generate_dataset(1, frames=300, num_mice=4)
    names = [n for n in FEATURES if FEATURES[n].fit is None]
    fp = FeaturePipeline(names, bodyparts=recs[0].bodyparts, params=PARAMS)
    for p, x in enumerate(fp.raw(recs[0])):
        pose = pair_pose(recs[0], p)
        ref = np.concatenate([FEATURES[n].fn(pose=pose, fps=pose.fps, params=PARAMS, stats={}) for n in names], 1)
        assert np.allclose(x, ref.astype(np.float32), rtol=1e-6, atol=1e-5)


def test_stitching_video_by_video_equals_all_at_once():
    rng = np.random.default_rng(1)
    seqs = [Sequence(f"v{i}", 0, rng.normal(size=(T, 3)).astype(np.float32), rng.integers(0, 2, T), np.ones(2, bool))
            for i, T in enumerate((101, 7, 64))]
    for gap in (1, 2):
        ds = WindowDataset(seqs, length=16, gap=gap)
        batches = [(rng.normal(size=(5, 16, 2)), ds.items[i:i + 5]) for i in range(0, len(ds), 5)]
        whole = Stitcher(seqs, 2, gap, 16)
        got = {}
        streamed = Stitcher(seqs, 2, gap, 16, expected=ds.windows_per_sequence(),
                            on_done=got.__setitem__)
        for lg, idx in batches:
            whole.add(lg, idx)
            streamed.add(lg, idx)
            assert len(streamed.sum) <= 2  # only sequences in flight are held
        for i, lg in enumerate(whole.logits()):
            assert np.array_equal(lg, got[i])


def test_feature_rows_finish_on_read(tmp_path):
    recs = generate_dataset(2, frames=150)
    fp = FeaturePipeline(NAMES, bodyparts=recs[0].bodyparts, params=PARAMS)
    want = fp.fit_transform(recs)
    store = FeatureStore(tmp_path / "s")
    rows = [store.rows(k) for k in store.ensure(recs, fp)]
    for r, w in zip(rows, want):
        fr = FeatureRows(r[0], fp.finish)
        assert fr.shape == w[0].shape
        assert np.array_equal(np.asarray(fr), w[0]) and np.array_equal(fr[np.arange(3, 9)], w[0][3:9])


def test_metrics_identical_with_and_without_store(tiny, tmp_path):
    a = train(make_config(None, [*tiny, "name=a"]))
    b = train(make_config(None, [*tiny, "name=b", "feature_store=none"]))
    c = train(make_config(None, [*tiny, "name=c"]))  # warm store
    for k in ("val_macro_f1", "f1", "confusion", "accuracy"):
        assert a[k] == b[k] == c[k], k
    assert not (tmp_path / "runs" / "b" / "feature_store").exists()
    events = _events(tmp_path / "runs" / "feature_store")
    assert [e["misses"] for e in events] == [4, 0]


def test_store_path_that_is_a_file_is_one_clear_error(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(DataError, match="is not a directory") as e:
        _splits(_cfg(tmp_path, f"feature_store={f}"))
    assert "\n" not in str(e.value) and f.read_text() == "x"


def test_full_disk_is_one_clear_error_and_keeps_existing_entries(tmp_path, monkeypatch):
    recs = generate_dataset(2, frames=100)
    fp = FeaturePipeline(NAMES, bodyparts=recs[0].bodyparts, params=PARAMS)
    store = FeatureStore(tmp_path / "s")
    (k0,) = store.ensure(recs[:1], fp)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)  # where a full disk shows at the latest
    with pytest.raises(DataError, match="no space left") as e:
        store.ensure(recs, fp, workers=1)
    assert "\n" not in str(e.value)
    assert store.valid(k0)
    assert not [d for d in (tmp_path / "s" / "features").rglob(".tmp-*")]


def test_predict_from_store_equals_in_memory(tiny, tmp_path):
    from trainer.predict import Predictor

    train(make_config(None, [*tiny, "name=p", "epochs=1"]))
    pred = Predictor.load(tmp_path / "runs" / "p")
    recs = generate_dataset(2, frames=300, seed=5)
    a = pred.probabilities(recs)
    pred.cfg = make_config(base={**pred.cfg.to_dict(), "feature_store": "none"})
    b = pred.probabilities(recs)
    for x, y in zip(a, b):
        assert all(np.array_equal(p, q) for p, q in zip(x, y))
    assert torch.is_tensor(torch.zeros(1))


def test_featurize_cli_builds_lists_and_prunes(tmp_path, capsys):
    from trainer.featurize import main as featurize

    args = [f"output_dir={tmp_path / 'runs'}", "data.synthetic.num_videos=3", "data.synthetic.frames_per_video=150",
            "featurize_workers=2"]
    assert featurize(args) == 0
    root = tmp_path / "runs" / "feature_store"
    assert _events(root)[-1]["misses"] == 3
    partial = root / "features" / "ab" / ".tmp-abcd-1-x"
    partial.mkdir(parents=True)
    os.utime(partial, (1, 1))  # a killed writer's leftovers, long ago
    assert featurize(["--list", *args]) == 0
    out = capsys.readouterr().out
    assert "3 feature entries" in out and "INCOMPLETE" in out and "synthetic_002" in out
    assert featurize(["--prune", *args]) == 0
    assert not partial.exists() and len(list((root / "features").glob("*/*"))) == 3
    assert featurize(args) == 0 and _events(root)[-1]["misses"] == 0
    assert featurize(["--prune", "--all", *args]) == 0
    assert list((root / "features").glob("*/*")) == []


def test_featurize_cli_bad_store_dir_exit_2(tmp_path, caplog):
    from trainer.featurize import main as featurize

    f = tmp_path / "f"
    f.write_text("keep")
    assert featurize(["--list", f"feature_store={f}"]) == 2
    assert featurize([f"feature_store={f}", "data.synthetic.num_videos=2"]) == 2
    assert "is not a directory" in caplog.text and f.read_text() == "keep"


def test_by_time_split_stores_the_sliced_recordings(tmp_path):
    """by_time cuts keypoints (StoredVideo has none): split in memory, store each slice by content."""
    cfg = _cfg(tmp_path, "data.split=by_time", "sequence_length=16")
    train, val = data_mod.load_splits(cfg)
    feats = _splits(cfg)
    assert [v.video_id for v in feats.train] == [r.video_id for r in train]
    assert [v.video_id for v in feats.val] == [r.video_id for r in val] and "@" in feats.val[0].video_id
    fp = FeaturePipeline(NAMES, bodyparts=train[0].bodyparts, params=PARAMS)
    for r in train + val:
        for stored, x in zip(feats.rows[r.video_id], fp.raw(r)):
            assert np.array_equal(np.asarray(stored), x)


def test_cross_validation_folds_reuse_the_stores_per_video_features(tmp_path):
    """Building ahead for data.fold=-1 stores every fold's videos; each fold's train() then only hits."""
    from trainer.data import split_recordings
    from trainer.store import featurised_ahead

    cfg = _cfg(tmp_path, "data.split=kfold", "data.num_folds=3", "data.fold=-1")
    ahead = featurised_ahead(cfg, names=NAMES, params=PARAMS)
    assert len(ahead.train) == 3 and ahead.val == [] and ahead.store.misses == 3
    recs = data_mod.load_recordings(cfg)
    for i in range(3):
        fold = featurised_splits(cfg, names=NAMES, params=PARAMS, recordings=split_recordings(recs, cfg, fold=i))
        assert (fold.store.hits, fold.store.misses) == (3, 0)


def test_mirror_pairs_featurises_the_mirrored_training_videos(tmp_path):
    from trainer.build import prepare_data
    from trainer.data.recording import mirror_pairs

    cfg = _cfg(tmp_path, "mirror_pairs=true", "data.synthetic.num_mice=2", "sequence_length=16")
    train, _ = data_mod.load_splits(cfg)
    data = prepare_data(cfg)
    assert len(data.train_ds.seqs) == sum(len(mirror_pairs(r).pairs) for r in train) > sum(len(r.pairs) for r in train)


def _read_in_child(rows, conn):
    conn.send([np.asarray(r[:5]).sum() for r in rows])


def test_open_descriptors_stay_bounded_and_forks_reopen_their_own(tmp_path, monkeypatch):
    """Thousands of (video, pair) row sources share a bounded table of open files (the usual
    limit is 1024 descriptors), least recently used closed first; a fork opens its own."""
    from trainer import store as store_mod

    table = store_mod.OpenFiles(limit=2)
    monkeypatch.setattr(store_mod, "OPEN_FILES", table)
    feats = _splits(_cfg(tmp_path))
    rows = [r for v in feats.train + feats.val for r in feats.rows[v.video_id]]
    assert len({r.path for r in rows}) == 3 and len(rows) > 3
    want = [np.asarray(r[:5]).sum() for r in rows]  # in memory, every file read in turn
    assert len(table) == 2
    for r in rows[::-1]:  # again, in another order: reopened files read the same bytes
        assert np.asarray(r[:5]).sum() == want[rows.index(r)]
    assert len(table) == 2
    parent, child = mp.get_context("fork").Pipe()
    p = mp.get_context("fork").Process(target=_read_in_child, args=(rows, child))
    p.start()
    got = parent.recv()
    p.join(10)
    assert got == want and p.exitcode == 0
    assert len(table) == 2  # the child's reads left the parent's table as it was


def test_featurize_cli_also_fits_the_training_statistics(tmp_path, monkeypatch):
    """After `python -m trainer.featurize`, the first training run reuses the fitted mean/std
    and PCA: it starts as warm as a second run."""
    from trainer.featurize import main as featurize

    args = [f"output_dir={tmp_path / 'runs'}", "data.synthetic.num_videos=3", "data.synthetic.frames_per_video=150"]
    assert featurize(args) == 0
    cfg = make_config(None, args)

    def no_fit(self, rows):
        raise AssertionError("the statistics should come from the store")

    monkeypatch.setattr(FeaturePipeline, "fit", no_fit)
    feats = featurised_splits(cfg, names=cfg.feature_names(), params=cfg.feature_params())
    pipeline = feats.fit()
    assert pipeline.mean is not None and pipeline.std is not None
