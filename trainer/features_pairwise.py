"""Egocentric and pairwise agent-target features, as pure functions.

Two layers:

* array helpers (`heading_angle`, `egocentric`, `scale_coordinates`) that work on plain
  numpy arrays and are usable anywhere;
* feature functions with the feature-table signature of trainer/features.py,
  `fn(*, pose, fps, params, stats) -> (T, k) float64`, where `pose` is a PairPose
  (`pose.xy` (T, 2, B, 2): [:, 0] = agent, [:, 1] = target, NaNs already interpolated):
  `egocentric_pair` and `pair_geometry`. Register them in `trainer.features.FEATURES`
  to use them as `features: [..., egocentric_pair, pair_geometry]`.

Units: coordinates are whatever the Recording holds: pixels, or cm when the data are read
with `data.units=cm` (each video divided by its pix_per_cm, see trainer/data/skeleton.py),
which is what makes distances and speeds comparable across labs and cameras. Speeds are
per second (multiplied by fps), so videos of different frame rates agree too.
Body parts are looked up by canonical name (nose, neck, body_center, tail_base; see
trainer/data/skeleton.py), falling back to the mouse's mean position when absent.
"""

from __future__ import annotations

import numpy as np

from trainer.data.skeleton import find_named_part
from trainer.geometry import xy_norm

# --------------------------------------------------------------------------- array helpers


def heading_angle(front: np.ndarray, back: np.ndarray) -> np.ndarray:
    """Angle (radians, in (-pi, pi]) of the vector back -> front; arrays (..., 2) -> (...)."""
    d = np.asarray(front, dtype=np.float64) - np.asarray(back, dtype=np.float64)
    return np.arctan2(d[..., 1], d[..., 0])


def egocentric(points: np.ndarray, *, origin: np.ndarray, heading: np.ndarray) -> np.ndarray:
    """Express points in a frame centred on `origin` whose +x axis points along `heading`.

    Args:
        points: (T, ..., 2) coordinates (any number of middle axes, e.g. mice and body parts).
        origin: (T, 2) origin per frame (e.g. the agent's body centre).
        heading: (T,) radians, the direction that becomes +x (e.g. the agent's body axis).

    Returns:
        (T, ..., 2) float64: x = distance ahead of the origin along the heading, y = to the
        left (counter-clockwise) of it, in the input units.
    """
    p = np.asarray(points, dtype=np.float64)
    extra = (1,) * (p.ndim - 2)
    rel = p - np.asarray(origin, dtype=np.float64).reshape(len(p), *extra, 2)
    c = np.cos(heading).reshape(len(p), *extra)
    s = np.sin(heading).reshape(len(p), *extra)
    # rotate by -heading
    return np.stack([c * rel[..., 0] + s * rel[..., 1], -s * rel[..., 0] + c * rel[..., 1]], axis=-1)


def scale_coordinates(xy: np.ndarray, *, pix_per_cm: float | None) -> np.ndarray:
    """Pixels -> cm: xy / pix_per_cm; unchanged (float64 copy) when pix_per_cm is unknown (None/<=0)."""
    xy = np.asarray(xy, dtype=np.float64)
    if pix_per_cm is None or not np.isfinite(pix_per_cm) or pix_per_cm <= 0:
        return xy.copy()
    return xy / float(pix_per_cm)


# --------------------------------------------------------------------------- pose helpers


def _point(pose, mouse: int, *names: str) -> np.ndarray:
    """(T, 2) the first of `names` (or a skeleton alias) tracked for `mouse` (0 agent, 1 target), else its mean position."""
    for n in names:
        i = find_named_part(pose.bodyparts, n)
        if i is not None:
            return pose.xy[:, mouse, i]
    return pose.xy[:, mouse].mean(axis=1)


def _axis(pose, mouse: int) -> tuple[np.ndarray, np.ndarray]:
    """(body centre (T, 2), heading (T,)) of `mouse`: heading = tail base -> neck (or nose)."""
    centre = _point(pose, mouse, "body_center", "center", "centroid")
    front = _point(pose, mouse, "neck", "head", "nose")
    back = _point(pose, mouse, "tail_base", "tailbase")
    return centre, heading_angle(front, back)


def _wrap(a: np.ndarray) -> np.ndarray:
    return (a + np.pi) % (2 * np.pi) - np.pi


# --------------------------------------------------------------------------- feature functions


def egocentric_pair(*, pose, fps, params, stats) -> np.ndarray:
    """Agent and target keypoints in the agent's frame (agent body centre, agent heading = +x).

    Returns (T, 2 * B * 2): [agent parts (x, y)..., target parts (x, y)...] in data units.
    Translation- and rotation-invariant, so the model sees where the target is relative to
    where the agent points, wherever the pair is in the arena.
    """
    centre, head = _axis(pose, 0)
    ego = egocentric(pose.xy, origin=centre, heading=head)  # (T, 2, B, 2)
    return ego.reshape(len(ego), -1)


PAIR_GEOMETRY_NAMES = [
    "target_x_ego", "target_y_ego", "centre_distance", "nose_nose", "nose_to_target_tail",
    "nose_to_target_centre", "target_nose_to_tail", "approach_speed", "agent_speed_to_target",
    "target_speed_to_agent", "sin_relative_heading", "cos_relative_heading", "cos_bearing", "sin_bearing",
]


def pair_geometry(*, pose, fps, params, stats) -> np.ndarray:
    """Social geometry of the (agent, target) pair, (T, 14); names in PAIR_GEOMETRY_NAMES.

    Target body centre in the agent's egocentric frame (x ahead, y left); centre-centre
    distance; agent nose to target nose / tail base / body centre; target nose to agent
    tail base (being investigated); approach speed (-d distance / dt, units/s: > 0 when
    closing in); each mouse's velocity component towards the other (units/s); relative
    heading and the bearing of the target seen from the agent, as (sin, cos).
    For self pairs (agent == target) distances, speeds and the bearing are 0.
    """
    ca, ha = _axis(pose, 0)
    ct, ht = _axis(pose, 1)
    nose_a, nose_t = _point(pose, 0, "nose", "neck"), _point(pose, 1, "nose", "neck")
    tail_a, tail_t = _point(pose, 0, "tail_base", "tailbase"), _point(pose, 1, "tail_base", "tailbase")
    ego_t = egocentric(ct[:, None], origin=ca, heading=ha)[:, 0]  # (T, 2)
    d = ct - ca
    dist = xy_norm(d)
    unit = d / np.maximum(dist, 1e-6)[:, None]
    va = np.gradient(ca, axis=0) * fps
    vt = np.gradient(ct, axis=0) * fps
    bearing = _wrap(np.arctan2(d[:, 1], d[:, 0]) - ha)
    apart = dist > 1e-6  # the bearing of a mouse to itself is undefined: 0 instead
    rel = _wrap(ht - ha)
    cols = [
        ego_t[:, 0], ego_t[:, 1], dist,
        xy_norm(nose_a - nose_t),
        xy_norm(nose_a - tail_t),
        xy_norm(nose_a - ct),
        xy_norm(nose_t - tail_a),
        -np.gradient(dist) * fps,
        (va * unit).sum(-1),
        -(vt * unit).sum(-1),
        np.sin(rel), np.cos(rel), np.where(apart, np.cos(bearing), 0.0), np.where(apart, np.sin(bearing), 0.0),
    ]
    return np.stack(cols, axis=1)
