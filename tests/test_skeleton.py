"""Canonical skeleton mapping, pixel -> cm scaling and the egocentric / pairwise features."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.data.recording import DataError, Recording
from trainer.data.skeleton import (
    CANONICAL,
    body_length,
    canonical_keypoints,
    conform,
    harmonise,
    match_skeleton,
    to_body_lengths,
    to_canonical,
    to_cm,
)
from trainer.features import PairPose
from trainer.features_pairwise import (
    PAIR_GEOMETRY_NAMES,
    egocentric,
    egocentric_pair,
    heading_angle,
    pair_geometry,
    scale_coordinates,
)


def rec(bodyparts, T=4, M=2, seed=0, **meta):
    kp = np.random.default_rng(seed).random((T, M, len(bodyparts), 2)).astype(np.float32) * 100
    return Recording("v", kp, 30.0, [f"mouse{i + 1}" for i in range(M)], list(bodyparts), [(0, 1)],
                     None, ["other", "attack"], meta=dict(meta))


def test_aliases_and_documented_fallbacks():
    parts = ["Snout", "Left_Ear", "right ear", "Centroid", "lateral_left", "lateral_right", "TailBase"]
    r = rec(parts)
    c = to_canonical(r)
    assert c.bodyparts == CANONICAL and c.keypoints.shape == (4, 2, 8, 2)
    src = c.meta["skeleton"]
    kp = r.keypoints
    assert src["nose"] == "Snout" and src["ear_right"] == "right ear" and src["body_center"] == "Centroid"
    assert np.allclose(c.keypoints[:, :, 3], (kp[:, :, 1] + kp[:, :, 2]) / 2) and src["neck"] == "mid(ears)"
    assert np.allclose(c.keypoints[:, :, 5], kp[:, :, 4]) and src["hip_left"] == "lateral_left"
    assert c.labels is None and c.pairs == r.pairs and r.bodyparts == parts  # input untouched


def test_frame_by_frame_fallback_and_missing_axis_parts():
    r = rec(["nose", "neck", "tail_base"])
    r.keypoints[1, 0, 1] = np.nan  # neck lost on one frame
    kp, src = canonical_keypoints(r.keypoints, r.bodyparts)
    # body_center = mid(neck, tail_base); on frame 1 the neck falls back to mid(nose, body_center) ...
    assert np.isfinite(kp[0]).all() and src["neck"].startswith("neck")
    # ... which itself needs the body centre: frame 1 ends with the mean of the tracked parts
    assert np.allclose(kp[1, 0, 4], np.nanmean(r.keypoints[1, 0], axis=0))
    no_nose, src2 = canonical_keypoints(r.keypoints[:, :, 1:], ["neck", "tail_base"])
    assert np.isnan(no_nose[:, :, 0]).all() and src2["nose"] == "missing"  # never invented


def test_match_skeleton_and_harmonise():
    a, b = rec(["nose", "ear_left", "tail_base"]), rec(["nose", "tail_base"], seed=1)
    mixed = harmonise([a, b])
    assert all(r.bodyparts == CANONICAL for r in mixed)
    same = harmonise([a, a])
    assert same[0].bodyparts == a.bodyparts  # auto: one layout stays native
    assert match_skeleton(a, ["tail_base", "nose"]).keypoints[:, :, 0].tolist() == a.keypoints[:, :, 2].tolist()
    assert match_skeleton(b, CANONICAL).bodyparts == CANONICAL
    with pytest.raises(DataError, match="body part 'ear_left'"):
        match_skeleton(b, ["nose", "ear_left"])


def test_units_cm():
    r = rec(["nose"], pix_per_cm=20.0)
    c = to_cm(r)
    assert np.allclose(c.keypoints * 20, r.keypoints) and c.meta["units"] == "cm"
    with pytest.raises(DataError, match="no pixels-per-cm"):
        harmonise([rec(["nose"])], units="cm")
    assert np.allclose(scale_coordinates(np.ones((2, 2)) * 10, pix_per_cm=5), 2)
    assert np.allclose(scale_coordinates(np.ones((2, 2)), pix_per_cm=None), 1)


def test_units_body_scales_each_video_by_its_own_body_length():
    # two videos of the same scene filmed at different zooms end up identical in body lengths
    r = rec(["top", "body", "tail"], T=50)  # rat46's names: top = head/neck, tail = tail base
    r.keypoints[:, :, 2] = r.keypoints[:, :, 0] + np.array([30.0, 40.0], np.float32)  # body length 50
    r.keypoints[3, 0, 0] = np.nan  # an untracked head is left out of the median
    zoomed = rec(["top", "body", "tail"], T=50)
    zoomed.keypoints[:] = r.keypoints * 3
    assert body_length(r) == pytest.approx(50) and body_length(zoomed) == pytest.approx(150)
    a, b = harmonise([r], units="body")[0], harmonise([zoomed], units="body")[0]
    assert a.meta["units"] == "body" and a.meta["body_length"] == pytest.approx(50)
    assert np.allclose(a.keypoints, b.keypoints, equal_nan=True)
    assert np.allclose(a.keypoints * 50, r.keypoints, equal_nan=True)
    assert to_body_lengths(a) is a  # already converted: unchanged, not divided twice
    # predict/evaluate put new files on the model's units the same way
    assert np.allclose(conform([zoomed], bodyparts=a.bodyparts, units="body")[0].keypoints, a.keypoints, equal_nan=True)
    with pytest.raises(DataError, match="data.units=body needs a tracked front"):
        harmonise([rec(["nose", "ear_left"])], units="body")  # no tail base: no body axis


def test_egocentric_rotation():
    # agent at (10, 10) heading +y: a point 3 ahead of it is (10, 13) -> (3, 0); 2 to its left (8, 10) -> (0, 2)
    pts = np.array([[[10.0, 13.0], [8.0, 10.0]]])
    out = egocentric(pts, origin=np.array([[10.0, 10.0]]), heading=np.array([np.pi / 2]))
    assert np.allclose(out, [[[3, 0], [0, 2]]])
    assert heading_angle(np.array([0.0, 1.0]), np.array([0.0, 0.0])) == pytest.approx(np.pi / 2)


def _pose(agent_centre, agent_heading, target_centre, T=5):
    """Two 4-part mice (nose, neck, body_center, tail_base) laid out along their headings."""
    parts = ["nose", "neck", "body_center", "tail_base"]
    offs = np.array([3.0, 1.5, 0.0, -2.0])
    xy = np.zeros((T, 2, 4, 2))
    for m, (c, h) in enumerate([(agent_centre, agent_heading), (target_centre, 0.0)]):
        d = np.array([np.cos(h), np.sin(h)])
        xy[:, m] = np.asarray(c)[None, None, :] + offs[None, :, None] * d[None, None, :]
    return PairPose(xy=xy, missing=np.zeros((T, 2, 4), bool), fps=30.0, bodyparts=parts)


def test_pair_geometry_and_egocentric_pair():
    pose = _pose((0.0, 0.0), np.pi / 2, (0.0, 10.0))  # target 10 straight ahead of the agent
    g = pair_geometry(pose=pose, fps=30.0, params={}, stats={})
    f = dict(zip(PAIR_GEOMETRY_NAMES, g[0], strict=True))
    assert g.shape == (5, len(PAIR_GEOMETRY_NAMES))
    assert f["target_x_ego"] == pytest.approx(10) and f["target_y_ego"] == pytest.approx(0, abs=1e-9)
    assert f["centre_distance"] == pytest.approx(10) and f["cos_bearing"] == pytest.approx(1)
    assert f["nose_to_target_centre"] == pytest.approx(7) and f["approach_speed"] == pytest.approx(0)
    ego = egocentric_pair(pose=pose, fps=30.0, params={}, stats={})
    assert ego.shape == (5, 2 * 4 * 2) and np.allclose(ego[0, :2], [3, 0])  # agent nose 3 ahead
    self_pose = PairPose(xy=pose.xy[:, [0, 0]], missing=pose.missing, fps=30.0, bodyparts=pose.bodyparts)
    gs = pair_geometry(pose=self_pose, fps=30.0, params={}, stats={})
    assert np.isfinite(gs).all() and gs[0, 2] == 0 and gs[0, 12] == 0


def test_approach_speed_sign():
    T = 10
    pose = _pose((0.0, 0.0), 0.0, (20.0, 0.0), T=T)
    pose.xy[:, 1, :, 0] -= np.arange(T)[:, None] * 0.5  # target moves 0.5 px/frame towards the agent
    g = pair_geometry(pose=pose, fps=30.0, params={}, stats={})
    i = PAIR_GEOMETRY_NAMES.index("approach_speed")
    assert np.allclose(g[:, i], 15.0)  # 0.5 px/frame x 30 fps, closing in
    assert np.allclose(g[:, PAIR_GEOMETRY_NAMES.index("target_speed_to_agent")], 15.0)


def test_features_find_parts_through_aliases():
    """A rat DLC skeleton (top, body, tail, tail-m, tail-e): the head is `top`, the tail base `tail`."""
    import numpy as np

    from trainer.features import PairPose

    bps = ["top", "body", "tail", "tail-m", "tail-e"]
    pose = PairPose(xy=np.zeros((2, 2, 5, 2)), missing=np.zeros((2, 2, 5), bool), fps=30.0, bodyparts=bps)
    assert pose.part("neck", "head", "nose") == 0
    assert pose.part("nose", "neck") == 0
    assert pose.part("tail_base", "tailbase") == 2
    assert pose.part("ear_left") == 2  # absent: the middle part, as before
