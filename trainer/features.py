"""Per-frame features for one (agent, target) pair, as a table of pure functions.

Every feature function is keyword-only, takes a `PairPose` (agent = mouse 0, target =
mouse 1, missing keypoints already interpolated) and returns a (T, k) float array. A
feature that needs statistics fitted on the training set (PCA) also has a `fit` function;
the fitted statistics and the final standardisation (mean/std per channel, train only) are
kept in `FeaturePipeline.state_dict()`, which goes into every checkpoint so predict computes
exactly the training features.

Add a feature: write `def my_feature(*, pose, fps, params, stats) -> (T, k)` and one
`FEATURES` entry. Config: `features: [coords, speed, ...]`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from trainer.data.recording import DataError, Recording
from trainer.data.skeleton import ALIASES, find_part, norm_part
from trainer.features_pairwise import egocentric_pair, pair_geometry
from trainer.features_rolling import rolling_stats

# ----------------------------------------------------------------------------- helpers


@dataclass
class PairPose:
    """Keypoints of one (agent, target) pair, ready for feature functions.

    xy: (T, 2, B, 2) float64 pixels, NaNs interpolated; [:, 0] = agent, [:, 1] = target.
    missing: (T, 2, B) bool, True where the tracker had no keypoint.
    fps: frames per second. bodyparts: B names.
    """

    xy: np.ndarray
    missing: np.ndarray
    fps: float
    bodyparts: list[str]

    def part(self, *names: str) -> int:
        """Index of the first body part found among `names` or their skeleton aliases.

        Names are canonical parts (trainer/data/skeleton.py ALIASES), so a DLC project's
        `top`/`body`/`tail` or a lab's `snout`/`tailbase` are found too; a part the skeleton
        lacks falls through to the next name, and finally to the middle body part.
        """
        for n in names:
            i = find_part(self.bodyparts, [norm_part(n), *ALIASES.get(n, [])])
            if i is not None:
                return i
        return len(self.bodyparts) // 2

    @property
    def centroid(self) -> np.ndarray:  # (T, 2, 2)
        return self.xy.mean(axis=2)


def interpolate_missing(xy: np.ndarray) -> np.ndarray:
    """Linear interpolation over time of NaN keypoints; (T, ...) -> same shape, no NaN.

    Edges take the nearest tracked value; a keypoint never tracked takes its mouse's mean
    position over the other keypoints, and a mouse never tracked at all is set to 0 (its
    mask channels say so).
    """
    T = xy.shape[0]
    flat = xy.reshape(T, -1).astype(np.float64).copy()
    t = np.arange(T)
    for j in range(flat.shape[1]):
        col = flat[:, j]
        ok = ~np.isnan(col)
        if ok.all() or not ok.any():
            continue
        flat[:, j] = np.interp(t, t[ok], col[ok])
    out = flat.reshape(xy.shape)
    if np.isnan(out).any() and out.ndim == 4:  # never-tracked keypoints: use the mouse mean
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN mouse -> NaN, zeroed below
            mouse_mean = np.nanmean(out, axis=2, keepdims=True)
        out = np.where(np.isnan(out), mouse_mean, out)
    return np.nan_to_num(out, nan=0.0)


def pair_pose(rec: Recording, pair: int) -> PairPose:
    """Agent/target keypoints of label column `pair` of `rec` as a PairPose."""
    a, t = rec.pairs[pair]
    kp = rec.keypoints[:, [a, t]]  # self pairs (a == t) see the same mouse twice
    return PairPose(xy=interpolate_missing(kp), missing=np.isnan(kp).any(-1), fps=rec.fps, bodyparts=rec.bodyparts)


def _heading(pose: PairPose) -> np.ndarray:
    """(T, 2) body heading (tail base -> neck) of agent and target, radians."""
    front = pose.xy[:, :, pose.part("neck", "head", "nose")]
    back = pose.xy[:, :, pose.part("tail_base", "tailbase", "tail_base_", "spine3")]
    d = front - back
    return np.arctan2(d[..., 1], d[..., 0])


def _head_yaw(pose: PairPose) -> np.ndarray:
    """(T, 2) angle between head (neck -> nose) and body (tail base -> neck) direction."""
    nose = pose.xy[:, :, pose.part("nose", "neck")]
    neck = pose.xy[:, :, pose.part("neck", "head")]
    head = np.arctan2(*(nose - neck).transpose(2, 0, 1)[::-1])
    return _wrap(head - _heading(pose))


def _wrap(a: np.ndarray) -> np.ndarray:
    return (a + np.pi) % (2 * np.pi) - np.pi


def _rolling(x: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Centred rolling mean and std over `w` frames of (T, k) x, edges use shorter windows."""
    T = x.shape[0]
    w = max(1, min(int(w), T))
    c1 = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(x, axis=0)])
    c2 = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(x * x, axis=0)])
    lo = np.clip(np.arange(T) - w // 2, 0, T)
    hi = np.clip(lo + w, 0, T)
    n = (hi - lo)[:, None]
    mean = (c1[hi] - c1[lo]) / n
    var = np.maximum((c2[hi] - c2[lo]) / n - mean * mean, 0.0)
    return mean, np.sqrt(var)


def _egocentric(pose: PairPose) -> np.ndarray:
    """(T, 2, B, 2) each mouse's keypoints centred on its centroid, rotated to its heading."""
    rel = pose.xy - pose.centroid[:, :, None, :]
    th = -_heading(pose)[:, :, None]
    c, s = np.cos(th), np.sin(th)
    return np.stack([c * rel[..., 0] - s * rel[..., 1], s * rel[..., 0] + c * rel[..., 1]], axis=-1)


# ----------------------------------------------------------------------------- features


def coords(*, pose: PairPose, fps, params, stats) -> np.ndarray:
    """Raw pixel coordinates of agent and target, (T, 2*B*2); standardised later."""
    return pose.xy.reshape(len(pose.xy), -1)


def speed(*, pose: PairPose, fps, params, stats) -> np.ndarray:
    """Per-keypoint speed in px/s, (T, 2*B)."""
    v = np.gradient(pose.xy, axis=0) * fps
    return np.linalg.norm(v, axis=-1).reshape(len(v), -1)


def acceleration(*, pose: PairPose, fps, params, stats) -> np.ndarray:
    """Per-keypoint acceleration magnitude in px/s^2, (T, 2*B)."""
    a = np.gradient(np.gradient(pose.xy, axis=0), axis=0) * fps * fps
    return np.linalg.norm(a, axis=-1).reshape(len(a), -1)


def distances(*, pose: PairPose, fps, params, stats) -> np.ndarray:
    """Agent-to-target distances for every body-part pair plus centroid distance, (T, B*B+1)."""
    a, t = pose.xy[:, 0], pose.xy[:, 1]
    d = np.linalg.norm(a[:, :, None, :] - t[:, None, :, :], axis=-1).reshape(len(a), -1)
    c = np.linalg.norm(pose.centroid[:, 0] - pose.centroid[:, 1], axis=-1)[:, None]
    return np.concatenate([d, c], axis=1)


def angles(*, pose: PairPose, fps, params, stats) -> np.ndarray:
    """Headings, relative heading, bearings to the other mouse, head yaw, turning rates; (T, 16).

    All angles as (sin, cos) so the features are continuous across +-pi.
    """
    h = _heading(pose)  # (T, 2)
    rel = _wrap(h[:, 1] - h[:, 0])
    d = pose.centroid[:, 1] - pose.centroid[:, 0]
    bearing_a = _wrap(np.arctan2(d[:, 1], d[:, 0]) - h[:, 0])  # target seen from the agent
    bearing_t = _wrap(np.arctan2(-d[:, 1], -d[:, 0]) - h[:, 1])  # agent seen from the target
    yaw = _head_yaw(pose)
    turn = _wrap(np.gradient(np.unwrap(h, axis=0), axis=0)) * fps  # rad/s
    ang = np.stack([h[:, 0], h[:, 1], rel, bearing_a, bearing_t, yaw[:, 0], yaw[:, 1]], axis=1)
    return np.concatenate([np.sin(ang), np.cos(ang), turn], axis=1)


def fit_pca(poses: list[PairPose], params) -> dict:
    """PCA basis of the egocentric pose over all training frames (subsampled to 200k frames)."""
    X = np.concatenate([_egocentric(p).reshape(len(p.xy), -1) for p in poses])
    if len(X) > 200_000:
        X = X[np.random.default_rng(0).choice(len(X), 200_000, replace=False)]
    mean = X.mean(axis=0)
    _, s, vt = np.linalg.svd(X - mean, full_matrices=False)
    k = min(int(params["pca_components"]), vt.shape[0])
    return {"mean": mean, "components": vt[:k], "explained": (s[:k] ** 2 / (s**2).sum())}


def pca(*, pose: PairPose, fps, params, stats) -> np.ndarray:
    """Projection of the egocentric pose on the training PCA basis, (T, pca_components)."""
    X = _egocentric(pose).reshape(len(pose.xy), -1)
    return (X - stats["mean"]) @ np.asarray(stats["components"]).T


def temporal_stats(*, pose: PairPose, fps, params, stats) -> np.ndarray:
    """Rolling mean and std of 8 summary signals over each window in params["temporal_windows"] (s).

    Signals: centroid speed of agent and target, centroid distance, agent nose to target
    nose / tail base / centroid distances, cos of relative heading, agent head yaw.
    Output (T, 8 * 2 * len(windows)).
    """
    c = pose.centroid
    sp = np.linalg.norm(np.gradient(c, axis=0), axis=-1) * fps  # (T, 2)
    nose = pose.xy[:, 0, pose.part("nose", "neck")]
    tgt_nose = pose.xy[:, 1, pose.part("nose", "neck")]
    tgt_tail = pose.xy[:, 1, pose.part("tail_base", "tailbase")]
    h = _heading(pose)
    sig = np.column_stack(
        [
            sp,
            np.linalg.norm(c[:, 0] - c[:, 1], axis=-1),
            np.linalg.norm(nose - tgt_nose, axis=-1),
            np.linalg.norm(nose - tgt_tail, axis=-1),
            np.linalg.norm(nose - c[:, 1], axis=-1),
            np.cos(h[:, 1] - h[:, 0]),
            _head_yaw(pose)[:, 0],
        ]
    )
    out = []
    for w in params["temporal_windows"]:
        mean, std = _rolling(sig, max(2, round(float(w) * fps)))
        out += [mean, std]
    return np.concatenate(out, axis=1)


def mask(*, pose: PairPose, fps, params, stats) -> np.ndarray:
    """1 where a keypoint was missing (before interpolation), (T, 2*B)."""
    return pose.missing.reshape(len(pose.missing), -1).astype(np.float64)


@dataclass(frozen=True)
class Feature:
    fn: Callable[..., np.ndarray]
    fit: Callable[[list[PairPose], dict], dict] | None = None
    standardise: bool = True  # mask channels stay 0/1


FEATURES: dict[str, Feature] = {
    "coords": Feature(coords),
    "speed": Feature(speed),
    "acceleration": Feature(acceleration),
    "distances": Feature(distances),
    "angles": Feature(angles),
    "pca": Feature(pca, fit=fit_pca),
    "temporal_stats": Feature(temporal_stats),
    "mask": Feature(mask, standardise=False),
    # cross-lab features (trainer/features_pairwise.py): agent-centred, heading-aligned
    "egocentric_pair": Feature(egocentric_pair),
    "pair_geometry": Feature(pair_geometry),
    "rolling_stats": Feature(rolling_stats),  # long-context rolling mean/std (trainer/features_rolling.py)
}


# ----------------------------------------------------------------------------- pipeline


def _to_list(d: dict) -> dict:
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in d.items()}


class FeaturePipeline:
    """Selected features -> (T, F) float32, standardised with statistics fitted on train only."""

    def __init__(self, names: list[str], *, bodyparts: list[str], params: dict):
        unknown = [n for n in names if n not in FEATURES]
        if unknown:
            raise DataError(f"unknown feature(s) {unknown}; valid: {', '.join(FEATURES)}")
        if not names:
            raise DataError("config key 'features' is empty; choose at least one of " + ", ".join(FEATURES))
        self.names = list(names)
        self.bodyparts = list(bodyparts)
        self.params = dict(params)
        self.stats: dict[str, dict] = {}
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        self.scale_mask: np.ndarray | None = None

    # -- computing
    def _check(self, rec: Recording) -> None:
        if list(rec.bodyparts) != self.bodyparts:
            raise DataError(
                f"{rec.video_id}: body parts {rec.bodyparts} differ from the training set's {self.bodyparts}; "
                "map every video to one skeleton (data readers' canonical skeleton) first"
            )

    def _raw(self, pose: PairPose) -> list[np.ndarray]:
        return [
            FEATURES[n].fn(pose=pose, fps=pose.fps, params=self.params, stats=self.stats.get(n, {}))
            for n in self.names
        ]

    def fit_transform(self, recs: list[Recording]) -> list[list[np.ndarray]]:
        """Fit PCA and standardisation on `recs` (training videos); return features per rec per pair."""
        for r in recs:
            self._check(r)
        poses = [[pair_pose(r, p) for p in range(len(r.pairs))] for r in recs]
        flat = [p for ps in poses for p in ps]
        for n in self.names:
            if FEATURES[n].fit is not None:
                self.stats[n] = FEATURES[n].fit(flat, self.params)
        raws = [[self._raw(p) for p in ps] for ps in poses]
        widths = [blk.shape[1] for blk in raws[0][0]]
        self.scale_mask = np.concatenate(
            [np.full(w, FEATURES[n].standardise) for n, w in zip(self.names, widths)]
        )
        X = np.concatenate([np.concatenate(blocks, axis=1) for rr in raws for blocks in rr])
        self.mean = np.where(self.scale_mask, X.mean(axis=0), 0.0)
        std = X.std(axis=0)
        self.std = np.where(self.scale_mask & (std > 1e-8), std, 1.0)
        return [[self._finish(np.concatenate(blocks, axis=1)) for blocks in rr] for rr in raws]

    def transform(self, rec: Recording) -> list[np.ndarray]:
        """Features of every labelled pair of `rec`: list of (T, F) float32."""
        if self.mean is None:
            raise RuntimeError("FeaturePipeline.transform called before fit")
        self._check(rec)
        return [self._finish(np.concatenate(self._raw(pair_pose(rec, p)), axis=1)) for p in range(len(rec.pairs))]

    def _finish(self, X: np.ndarray) -> np.ndarray:
        X = (X - self.mean) / self.std
        return np.clip(np.nan_to_num(X, nan=0.0, posinf=0.0, neginf=0.0), -20, 20).astype(np.float32)

    @property
    def dim(self) -> int:
        return int(len(self.mean)) if self.mean is not None else 0

    # -- persistence (plain lists so checkpoints load with torch.load(weights_only=True))
    def state_dict(self) -> dict:
        return {
            "names": self.names,
            "bodyparts": self.bodyparts,
            "params": self.params,
            "stats": {k: _to_list(v) for k, v in self.stats.items()},
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "scale_mask": self.scale_mask.tolist(),
        }

    @classmethod
    def from_state(cls, state: dict) -> FeaturePipeline:
        fp = cls(state["names"], bodyparts=state["bodyparts"], params=state["params"])
        fp.stats = {k: {kk: np.asarray(vv) for kk, vv in v.items()} for k, v in state["stats"].items()}
        fp.mean = np.asarray(state["mean"])
        fp.std = np.asarray(state["std"])
        fp.scale_mask = np.asarray(state["scale_mask"], dtype=bool)
        return fp


def raw_coordinate_count(bodyparts: list[str]) -> int:
    """The seeds' `input_dim`: x, y of every body part of the two mice of a pair."""
    return 2 * len(bodyparts) * 2
