import numpy as np
import pytest
import torch

from trainer.data import DataError
from trainer.data.synthetic import generate_dataset, generate_recording
from trainer.data.windows import Sequence, Stitcher, WindowDataset
from trainer.engine import frame_loss
from trainer.features import FEATURES, FeaturePipeline, interpolate_missing, pair_pose, speed

PARAMS = {"pca_components": 4, "temporal_windows": [0.25, 1.0]}


def test_interpolation_fills_gaps_linearly():
    x = np.array([[0.0], [np.nan], [np.nan], [3.0], [np.nan]])
    out = interpolate_missing(x)
    assert np.allclose(out[:, 0], [0, 1, 2, 3, 3])


def test_speed_is_fps_aware():
    rec = generate_recording("v", frames=200, seed=0)
    pose = pair_pose(rec, 0)
    s30 = speed(pose=pose, fps=30.0, params={}, stats={})
    s60 = speed(pose=pose, fps=60.0, params={}, stats={})
    assert np.allclose(s60, 2 * s30)


def test_pipeline_fits_on_train_only_and_round_trips():
    recs = generate_dataset(3, frames=400, seed=0)
    fp = FeaturePipeline(list(FEATURES), bodyparts=recs[0].bodyparts, params=PARAMS)
    train_feats = fp.fit_transform(recs[:2])
    X = np.concatenate([f[0] for f in train_feats])
    assert X.shape[1] == fp.dim and X.dtype == np.float32 and np.isfinite(X).all()
    scaled = fp.scale_mask
    assert np.allclose(X[:, scaled].mean(0), 0, atol=1e-3)  # standardised with train statistics
    val = fp.transform(recs[2])[0]
    restored = FeaturePipeline.from_state(fp.state_dict())
    assert np.allclose(restored.transform(recs[2])[0], val)
    mask_cols = ~scaled
    assert set(np.unique(val[:, mask_cols])) <= {0.0, 1.0}  # mask channels stay 0/1


def test_pipeline_rejects_other_skeleton():
    recs = generate_dataset(2, frames=100, seed=0)
    fp = FeaturePipeline(["coords"], bodyparts=["nose"], params=PARAMS)
    with pytest.raises(DataError, match="body parts"):
        fp.fit_transform(recs)


def _seq(T, C=3):
    return Sequence("v", 0, np.random.rand(T, 2).astype(np.float32), np.zeros(T, np.int64), np.ones(C, bool))


@pytest.mark.parametrize("gap", [1, 2, 3])
def test_eval_windows_score_every_frame_once(gap):
    seqs = [_seq(101), _seq(7), _seq(64)]
    ds = WindowDataset(seqs, length=16, gap=gap)
    st = Stitcher(seqs, 3, gap, 16)
    for i in range(len(ds)):
        item = ds[i]
        # logits = original frame index, so the stitched mean must give back each frame's index
        idx = ds.frames(i).astype(np.float32)
        st.add(np.repeat(idx[None, :, None], 3, axis=2), item["index"][None].numpy())
    for s, lg in zip(seqs, st.logits()):
        assert np.allclose(lg[:, 0], np.arange(s.num_frames))


def test_training_windows_are_deterministic_per_epoch():
    ds = WindowDataset([_seq(300)], length=32, stride=16, train=True, jitter=3, noise_std=0.1, seed=1)
    ds.set_epoch(2)
    a = ds[3]["x"]
    ds.set_epoch(3)
    b = ds[3]["x"]
    ds.set_epoch(2)
    assert torch.equal(a, ds[3]["x"]) and not torch.equal(a, b)


def test_sequence_longer_than_every_video_is_a_clear_error():
    with pytest.raises(DataError, match="longer than every training video"):
        WindowDataset([_seq(50), _seq(60)], length=64, train=True)


def test_loss_ignores_unlabelled_and_unannotated_classes():
    logits = torch.randn(2, 5, 3, requires_grad=True)
    y = torch.tensor([[0, 1, -1, 2, 0], [-1, -1, -1, -1, -1]])
    base = frame_loss(logits, y)
    ref = torch.nn.functional.cross_entropy(logits.reshape(-1, 3), y.reshape(-1), ignore_index=-1)
    assert torch.allclose(base, ref)
    w = torch.tensor([1.0, 5.0, 2.0])
    ref_w = torch.nn.functional.cross_entropy(logits.reshape(-1, 3), y.reshape(-1), weight=w, ignore_index=-1)
    assert torch.allclose(frame_loss(logits, y, weight=w), ref_w)
    # class 2 not annotated for window 0: its logit must not influence the loss on class-0/1 frames
    mask = torch.tensor([[True, True, False], [True, True, True]])
    y2 = torch.tensor([[0, 1, 0, 1, 0], [-1] * 5])
    l1 = frame_loss(logits, y2, mask)
    bumped = logits.detach().clone()
    bumped[0, :, 2] += 10
    assert torch.allclose(l1, frame_loss(bumped, y2, mask))
    assert frame_loss(logits, torch.full((2, 5), -1)).item() == 0.0
    assert frame_loss(logits, y, focal_gamma=2.0) < base  # focal down-weights easy frames


def test_persistent_workers_see_each_epoch():
    """The sampler encodes the epoch in the index: workers that never see set_epoch still vary per epoch."""
    from torch.utils.data import DataLoader

    from trainer.build import EpochSampler

    ds = WindowDataset([_seq(400)], length=32, stride=16, train=True, jitter=3, noise_std=0.1, seed=1)

    def epochs(workers):
        sampler = EpochSampler(len(ds), seed=0)
        loader = DataLoader(ds, batch_size=8, sampler=sampler, num_workers=workers,
                            persistent_workers=workers > 0)
        out = []
        for epoch in (1, 2):
            sampler.set_epoch(epoch)
            out.append(torch.cat([b["x"] for b in loader]))
        return out

    in_process, workers = epochs(0), epochs(2)
    assert not torch.equal(in_process[0], in_process[1])
    assert all(torch.equal(a, b) for a, b in zip(in_process, workers))


def test_mirror_pairs_adds_swapped_view_with_same_labels():
    from trainer.data.recording import Recording, mirror_pairs

    kp = np.random.default_rng(0).normal(size=(6, 3, 2, 2)).astype(np.float32)
    rec = Recording("v", kp, 30.0, ["a", "b", "c"], ["n", "t"], [(0, 1), (1, 0), (2, 2)],
                    np.array([[1, 2, 0]] * 6), ["other", "x", "y"])
    assert mirror_pairs(rec).pairs == rec.pairs  # (0,1)/(1,0) both labelled, self pair skipped
    rec2 = Recording("v", kp, 30.0, ["a", "b", "c"], ["n", "t"], [(0, 1), (2, 2)], np.array([[1, 0]] * 6), ["other", "x"])
    out = mirror_pairs(rec2)
    assert out.pairs == [(0, 1), (2, 2), (1, 0)]
    assert (out.labels[:, 2] == out.labels[:, 0]).all()


def test_soft_macro_f1_loss_is_one_minus_f1_and_leaves_out_background_and_absent_classes():
    from trainer.engine import soft_macro_f1_loss

    y = torch.tensor([0, 1, 1, 2, 0])
    hard = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 2, 0]), 4).float()  # class 3 absent
    # class 1: TP 1, FN 1 -> 2/3; class 2: TP 1, FP 1 -> 2/3; classes 0 and 3 left out
    assert torch.allclose(soft_macro_f1_loss(hard, y), torch.tensor(1 - 2 / 3))
    assert soft_macro_f1_loss(torch.nn.functional.one_hot(y, 4).float(), y).item() == 0.0
    assert soft_macro_f1_loss(hard, torch.zeros(5, dtype=torch.long)).item() == 0.0  # background only
    logits = torch.randn(1, 5, 4, requires_grad=True)
    with_f1 = frame_loss(logits, y[None], soft_f1=0.5)
    assert torch.allclose(with_f1, frame_loss(logits, y[None])
                          + 0.5 * soft_macro_f1_loss(torch.softmax(logits[0], -1), y), atol=1e-6)
    with_f1.backward()
    assert torch.isfinite(logits.grad).all()


def test_feature_dropout_zeroes_whole_channels_per_window_reproducibly():
    seq = _seq(300)
    seq.x[:] = 1.0
    ds = WindowDataset([seq], length=32, stride=16, train=True, feature_dropout=0.5, seed=3)
    x = ds[2]["x"]
    per_channel = x.sum(0)
    assert set(per_channel.tolist()) <= {0.0, 32.0}  # a channel is dropped for the whole window or kept
    dropped = torch.stack([(ds[i]["x"].sum(0) == 0).float() for i in range(len(ds))]).mean()
    assert 0.3 < float(dropped) < 0.7
    assert torch.equal(WindowDataset([seq], length=32, stride=16, train=True, feature_dropout=0.5, seed=3)[2]["x"], x)
    assert torch.equal(WindowDataset([seq], length=32, stride=16)[2]["x"], torch.ones_like(x))  # validation: never
