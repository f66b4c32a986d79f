import numpy as np
import pytest

from trainer.data import DataError, Recording, split_by_video
from trainer.data.synthetic import CALMS21_BODYPARTS, CLASS_NAMES, generate_dataset, generate_recording


def test_deterministic_by_seed():
    a = generate_recording("a", frames=300, seed=7)
    b = generate_recording("a", frames=300, seed=7)
    c = generate_recording("a", frames=300, seed=8)
    assert np.array_equal(a.keypoints, b.keypoints, equal_nan=True) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.keypoints, c.keypoints, equal_nan=True)


@pytest.mark.slow  # generates 18,000 frames
def test_realistic_imbalance_and_tracking():
    recs = generate_dataset(6, frames=3000, seed=1)
    lab = np.concatenate([r.labels[:, 0] for r in recs])
    frac = np.bincount(lab, minlength=4) / len(lab)
    assert 0.55 < frac[0] < 0.75  # other
    assert 0.15 < frac[1] < 0.35  # investigation
    assert 0.005 < frac[2] < 0.10 and 0.005 < frac[3] < 0.08  # mount, attack: a few % each
    r = recs[0]
    assert r.keypoints.shape == (3000, 2, 7, 2) and r.bodyparts == CALMS21_BODYPARTS and r.fps == 30.0
    missing = np.isnan(r.keypoints).any(-1).mean()
    assert 0.002 < missing < 0.08
    assert r.class_names == CLASS_NAMES


@pytest.mark.slow  # generates 12,000 frames
def test_behaviour_kinematics_differ():
    recs = generate_dataset(4, frames=3000, seed=2)
    speed, dist = {c: [] for c in range(4)}, {c: [] for c in range(4)}
    for r in recs:
        c = np.nanmean(r.keypoints, axis=2)
        v = np.linalg.norm(np.diff(c[:, 0], axis=0), axis=-1) * r.fps
        d = np.linalg.norm(r.keypoints[:, 0, 0] - np.nanmean(r.keypoints[:, 1], axis=1), axis=-1)
        for k in range(4):
            m = r.labels[1:, 0] == k
            speed[k].append(v[m])
            dist[k].append(d[1:][m])
    med_speed = {k: np.nanmedian(np.concatenate(v)) for k, v in speed.items()}
    med_dist = {k: np.nanmedian(np.concatenate(v)) for k, v in dist.items()}
    assert med_speed[3] > 2 * med_speed[1]  # attack is fast, investigation slow
    assert med_dist[1] < med_dist[0] and med_dist[3] < med_dist[0]  # social behaviours are close


def test_four_mice_label_every_ordered_pair():
    r = generate_recording("m4", frames=600, num_mice=4, seed=3)
    assert r.keypoints.shape[1] == 4 and len(r.pairs) == 12 and r.labels.shape == (600, 12)
    assert all(a != t for a, t in r.pairs)
    assert (r.labels > 0).any()


def test_recording_validates_its_shapes():
    kp = np.zeros((10, 2, 3, 2), np.float32)
    with pytest.raises(DataError, match="no frames"):
        Recording("v", kp[:0], 30.0, ["a", "b"], ["x", "y", "z"], [(0, 1)], None, ["other"])
    with pytest.raises(DataError, match="labels have shape"):
        Recording("v", kp, 30.0, ["a", "b"], ["x", "y", "z"], [(0, 1)], np.zeros(9), ["other"])
    with pytest.raises(DataError, match="fps"):
        Recording("v", kp, 0.0, ["a", "b"], ["x", "y", "z"], [(0, 1)], None, ["other"])


def test_split_is_by_video():
    recs = generate_dataset(5, frames=200, seed=0)
    train, val = split_by_video(recs, val_fraction=0.2, seed=0)
    assert len(val) == 1 and len(train) == 4
    assert not {r.video_id for r in train} & {r.video_id for r in val}
    with pytest.raises(DataError, match="at least 2 videos"):
        split_by_video(recs[:1], val_fraction=0.2, seed=0)
