"""The per-frame GBDT (model_type=gbdt) and the rolling_stats feature: correctness, exact tree
export, a safetensors+JSON checkpoint, and the real CLI (train, predict, evaluate) on tiny data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from trainer import checkpoint as ckpt_io
from trainer.data.windows import Sequence
from trainer.features import FEATURES, FeaturePipeline, PairPose
from trainer.features_rolling import pair_signals, rolling_mean_std
from trainer.gbdt import export_trees, frame_rows, stopping_split
from trainer.models.gbdt import GBDTModel
from trainer.run import main

GBDT_TINY = ["model_type=gbdt", "features=[distances,speed]", "rolling_windows=[0.2,1.0]", "gbdt_max_iter=12",
             "gbdt_max_bins=32", "gbdt_eval_every=5", "gbdt_frame_stride=2", "gbdt_min_samples_leaf=5"]


# ----------------------------------------------------------------------------- rolling features


def _naive(x, w):
    T = len(x)
    mean, std = np.full(x.shape, np.nan), np.full(x.shape, np.nan)
    for t in range(T):
        win = x[max(0, t - w // 2):min(T, t - w // 2 + w)]
        for j in range(x.shape[1]):
            v = win[:, j][np.isfinite(win[:, j])]
            if len(v):
                mean[t, j], std[t, j] = v.mean(), v.std()
    return mean, std


@pytest.mark.parametrize("w", [1, 2, 5, 8, 45, 500])
def test_rolling_mean_std_matches_a_naive_loop_with_nans(w):
    rng = np.random.default_rng(w)
    x = rng.normal(size=(120, 4)) * 50 + 1000  # large offset: the cumulative sums must not lose the std
    x[rng.random(x.shape) < 0.2] = np.nan
    x[30:60, 2] = np.nan  # a long gap: short windows inside it have no value at all
    x[:, 3] = np.nan  # never observed
    mean, std = rolling_mean_std(x, w)
    ref_mean, ref_std = _naive(x, w)
    np.testing.assert_array_equal(np.isnan(mean), np.isnan(ref_mean))
    np.testing.assert_allclose(mean, ref_mean, rtol=0, atol=1e-8, equal_nan=True)
    np.testing.assert_allclose(std, ref_std, rtol=0, atol=1e-6, equal_nan=True)


def test_rolling_stats_feature_uses_seconds_and_is_registered():
    rng = np.random.default_rng(0)
    T, parts = 300, ["nose", "neck", "body", "tail_base"]
    xy = np.cumsum(rng.normal(size=(T, 2, 4, 2)), axis=0) + 100
    pose = PairPose(xy=xy, missing=np.zeros((T, 2, 4), bool), fps=60.0, bodyparts=parts)
    out = FEATURES["rolling_stats"].fn(pose=pose, fps=60.0, params={"rolling_windows": [0.5, 2.0]}, stats={})
    sig = pair_signals(xy, parts, 60.0)
    S = sig.shape[1]
    assert S == 21 + 2 * 4 and out.shape == (T, S * 5)
    np.testing.assert_allclose(out[:, :S], sig)
    mean, std = rolling_mean_std(sig, 30)  # 0.5 s at 60 fps = 30 frames
    np.testing.assert_allclose(out[:, S:2 * S], mean)
    np.testing.assert_allclose(out[:, 2 * S:3 * S], std)
    # the centre-centre distance is the 5th signal (agent centre x target centre)
    np.testing.assert_allclose(sig[:, 4], np.linalg.norm(xy[:, 0].mean(1) - xy[:, 1].mean(1), axis=-1))


def test_rolling_stats_in_a_pipeline_round_trips():
    from trainer.config import DataConfig, SyntheticConfig
    from trainer.data.synthetic import read_synthetic

    recs = read_synthetic("", data=DataConfig(synthetic=SyntheticConfig(num_videos=2, frames_per_video=200)), fps=30)
    params = {"rolling_windows": [0.5], "temporal_windows": [1.0], "pca_components": 4}
    fp = FeaturePipeline(["speed", "rolling_stats"], bodyparts=recs[0].bodyparts, params=params)
    a = fp.fit_transform(recs[:1])[0][0]
    b = FeaturePipeline.from_state(json.loads(json.dumps(fp.state_dict()))).transform(recs[0])[0]
    assert np.isfinite(a).all() and a.shape[1] == 14 + (21 + 14) * 3
    np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- trees


def _fit(C, n=3000, F=6, seed=0, labels=None):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, F))
    X[rng.random(X.shape) < 0.15] = np.nan
    X[:, 5] = np.where(rng.random(n) < 0.5, np.nan, X[:, 5])  # NaN carries signal: missing_go_to_left matters
    score = np.nan_to_num(X[:, 0]) + np.isnan(X[:, 5]) + 0.5 * np.nan_to_num(X[:, 1])
    y = np.digitize(score, np.quantile(score, np.linspace(0, 1, C + 1)[1:-1]))
    if labels is not None:
        y = np.asarray(labels)[y]
    clf = HistGradientBoostingClassifier(max_iter=25, max_leaf_nodes=15, categorical_features=None,
                                         random_state=0).fit(X, y)
    Xt = rng.normal(size=(1500, F)) * 1.5
    Xt[rng.random(Xt.shape) < 0.25] = np.nan
    return clf, Xt


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("C", [2, 3, 4])
def test_exported_trees_predict_exactly_like_sklearn(C):
    clf, Xt = _fit(C)
    ens = export_trees(clf)
    assert ens.missing_left.any() and (~ens.missing_left[~ens.is_leaf]).any()
    np.testing.assert_allclose(_softmax(ens.logits(Xt, C)), clf.predict_proba(Xt), rtol=0, atol=1e-6)
    # staged sums add up to the whole: what metrics.jsonl's per-iteration rows rely on
    staged = ens.raw_predict(Xt, 0, 10) + ens.raw_predict(Xt, 10, None)
    np.testing.assert_allclose(staged, ens.raw_predict(Xt), atol=1e-9)


def test_a_class_absent_from_training_gets_zero_probability():
    clf, Xt = _fit(2, labels=[0, 2])  # class 1 of 3 never seen
    p = _softmax(GBDTModel(input_dim=6, num_classes=3).set_ensemble(export_trees(clf)).ensemble().logits(Xt, 3))
    assert p[:, 1].max() < 1e-12
    np.testing.assert_allclose(p[:, [0, 2]], clf.predict_proba(Xt), atol=1e-6)


def test_model_state_round_trips_through_safetensors(tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    clf, Xt = _fit(3)
    model = GBDTModel(input_dim=6, num_classes=3).set_ensemble(export_trees(clf))
    save_file(dict(model.state_dict()), str(tmp_path / "m.safetensors"))
    loaded = GBDTModel(input_dim=6, num_classes=3)
    loaded.load_state_dict(load_file(str(tmp_path / "m.safetensors")))
    x = torch.from_numpy(np.nan_to_num(Xt[:40]).reshape(2, 20, 6)).float()
    np.testing.assert_array_equal(loaded(x, None).numpy(), model(x, None).numpy())
    p = torch.softmax(loaded(x, None), -1).reshape(-1, 3).double().numpy()
    np.testing.assert_allclose(p, clf.predict_proba(x.reshape(-1, 6).double().numpy()), atol=1e-6)


def test_frame_rows_skip_unlabelled_and_take_every_kth_frame():
    y = np.array([0, -1, 1, 1, -1, 2, 0, 0, -1, 1])
    s = Sequence("v", 0, np.arange(10, dtype=np.float32)[:, None], y, np.ones(3, bool))
    X, yy = frame_rows([s], 3)  # frames 0, 3, 6, 9
    np.testing.assert_array_equal(X[:, 0], [0, 3, 6, 9])
    X, yy = frame_rows([s], 2)  # frames 0, 2, 4 (unlabelled), 6, 8 (unlabelled)
    np.testing.assert_array_equal(X[:, 0], [0, 2, 6])
    np.testing.assert_array_equal(yy, [0, 1, 0])
    seqs = [Sequence(f"v{i}", 0, s.x, y, s.class_mask) for i in range(10)]
    fit, stop = stopping_split(seqs, 0.2, seed=0)
    assert len(stop) == 2 and not {s.video_id for s in fit} & {s.video_id for s in stop}


# ----------------------------------------------------------------------------- the real CLI


@pytest.mark.slow  # train, predict and evaluate
def test_gbdt_run_predict_evaluate_end_to_end(tiny, tmp_path, capsys):
    from trainer.evaluate import main as evaluate_main
    from trainer.predict import main as predict_main

    assert main([*tiny, *GBDT_TINY, "name=g"]) == 0
    run = tmp_path / "runs" / "g"
    for f in ["config.yaml", "command.txt", "env.json", "metrics.jsonl", "metrics.json"]:
        assert (run / f).is_file(), f
    assert "rolling_stats" in (run / "config.yaml").read_text()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iterations"] for r in rows][-1] == json.loads((run / "metrics.json").read_text())["gbdt"]["iterations"]
    final = json.loads((run / "metrics.json").read_text())
    assert set(final["f1"]) == {"other", "investigation", "mount", "attack"} and final["val_macro_f1"] > 0
    assert "macro F1" in capsys.readouterr().out
    for c in ("last", "best"):  # tensors and JSON only: nothing a loader would unpickle
        ck = run / "checkpoints" / c
        assert ckpt_io.resolve(ck) == ck
        assert sorted(p.suffix for p in ck.iterdir()) == [".json", ".json", ".json", ".safetensors"]  # meta, state, manifest
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run / "tb"))
    ea.Reload()
    assert {"val/macro_f1", "train/loss", "val_f1/investigation"} <= set(ea.Tags()["scalars"])

    out = tmp_path / "preds.csv"
    assert predict_main(["--checkpoint", str(run / "checkpoints/best"), "--out", str(out)]) == 0
    import pandas as pd

    df = pd.read_csv(out)
    probs = df[[c for c in df.columns if c.startswith("prob_")]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-3)
    res = tmp_path / "ev.json"
    assert evaluate_main(["--checkpoint", str(run / "checkpoints/best"), "--json", str(res)]) == 0
    ev = json.loads(res.read_text())["raw"]["frames"]
    assert ev["macro_f1"] == pytest.approx(final["val_macro_f1"], abs=1e-9)  # predict path == training's scores
    assert ev["confusion"] == final["confusion"]


def test_gbdt_bad_key_is_one_line(tiny, caplog):
    assert main([*tiny, *GBDT_TINY, "gbdt_frame_stride=0"]) == 2
    assert "gbdt_frame_stride" in caplog.text


@pytest.mark.slow  # two tiny folds through train() + evaluate: ~1 min on a busy 2-core machine
def test_cv_script_runs_every_fold_and_merges(tiny, tmp_path):
    from benchmarks import cv

    args = ["--folds", "2", "--runs", str(tmp_path / "cv"), "--name", "t", *tiny, *GBDT_TINY]
    assert cv.main([*args, "--out", str(tmp_path / "all.json"), "--evaluate"]) == 0
    res = json.loads((tmp_path / "all.json").read_text())
    assert [r["fold"] for r in res["per_fold"]] == [0, 1]
    assert res["summary"]["macro_f1"]["n"] == 2 and "other" not in res["summary"]["f1"]
    for r in res["per_fold"]:
        assert r["evaluate"]["macro_f1"] == pytest.approx(r["macro_f1"], abs=1e-9)  # the predict path agrees
    f1 = [r["macro_f1"] for r in res["per_fold"]]
    assert res["summary"]["macro_f1"]["mean"] == pytest.approx(np.mean(f1))
    assert res["summary"]["macro_f1"]["std"] == pytest.approx(np.std(f1, ddof=1))
    # folds run as separate processes (--only) are merged into the same summary
    for f in (0, 1):
        (tmp_path / f"f{f}.json").write_text(json.dumps(dict(res, per_fold=[res["per_fold"][f]])))
    assert cv.main(["--merge", str(tmp_path / "f1.json"), str(tmp_path / "f0.json"), "--out",
                    str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["summary"] == res["summary"]


def test_gbdt_checkpoint_carries_a_verified_manifest(tmp_path):
    """GBDT checkpoints are verified like the networks': a manifest with sizes and checksums."""
    from trainer import checkpoint as ckpt_io
    from trainer.config import make_config
    from trainer.run import train

    cfg = make_config(overrides=["model_type=gbdt", "data.synthetic.num_videos=4", "data.synthetic.frames_per_video=400",
                                 "gbdt_max_iter=5", f"output_dir={tmp_path}", "name=g"])
    train(cfg)
    best = tmp_path / "g" / "checkpoints" / "best"
    assert (best / "manifest.json").is_file()
    ckpt_io.verify(best)  # raises on a mismatch
