"""Per-frame features for one (agent, target) pair, as a table of pure functions.

Every feature function is keyword-only, takes a `PairPose` (agent = mouse 0, target =
mouse 1, missing keypoints already interpolated) and returns a (T, k) float array. A
feature that needs statistics fitted on the training set (PCA) also has a `fit` function;
the fitted statistics and the final standardisation (mean/std per channel, train only) are
kept in `FeaturePipeline.state_dict()`, which goes into every checkpoint so predict computes
exactly the training features.

Add a feature: write `def my_feature(*, pose, fps, params, stats) -> (T, k)` in a new module
and one `FEATURES` entry naming it ("module:function") and the config keys it reads from
`params` (docs/contributing.md). Config: `features: [coords, speed, ...]`.
"""

from __future__ import annotations

import functools
import importlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from trainer.config import all_keys
from trainer.data.recording import DataError, Recording
from trainer.data.skeleton import find_named_part
from trainer.geometry import xy_norm
from trainer.hints import did_you_mean

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
            i = find_named_part(self.bodyparts, n)
            if i is not None:
                return i
        return len(self.bodyparts) // 2

    @functools.cached_property
    def centroid(self) -> np.ndarray:  # (T, 2, 2)
        """Mean of the body parts; computed once per pose (several features use it)."""
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
    """Agent/target keypoints of label column `pair` of `rec` as a PairPose (reference path)."""
    a, t = rec.pairs[pair]
    kp = rec.keypoints[:, [a, t]]  # self pairs (a == t) see the same mouse twice
    return PairPose(xy=interpolate_missing(kp), missing=np.isnan(kp).any(-1), fps=rec.fps, bodyparts=rec.bodyparts)


def recording_poses(rec: Recording) -> list[PairPose]:
    """PairPose of every labelled pair, interpolating each mouse once (not once per pair).

    Interpolation is per keypoint column and the never-tracked fallback per mouse, so this
    gives exactly `pair_pose(rec, p)` for every p; with 4 mice and 12 pairs it interpolates
    4 mice instead of 24.
    """
    xy = interpolate_missing(rec.keypoints)  # (T, M, B, 2)
    missing = np.isnan(rec.keypoints).any(-1)  # (T, M, B)
    out = []
    for a, t in rec.pairs:
        out.append(PairPose(xy=xy[:, [a, t]], missing=missing[:, [a, t]], fps=rec.fps, bodyparts=rec.bodyparts))
    return out


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
    return xy_norm(v).reshape(len(v), -1)


def acceleration(*, pose: PairPose, fps, params, stats) -> np.ndarray:
    """Per-keypoint acceleration magnitude in px/s^2, (T, 2*B)."""
    a = np.gradient(np.gradient(pose.xy, axis=0), axis=0) * fps * fps
    return xy_norm(a).reshape(len(a), -1)


def distances(*, pose: PairPose, fps, params, stats) -> np.ndarray:
    """Agent-to-target distances for every body-part pair plus centroid distance, (T, B*B+1)."""
    a, t = pose.xy[:, 0], pose.xy[:, 1]
    d = xy_norm(a[:, :, None, :] - t[:, None, :, :]).reshape(len(a), -1)
    c = xy_norm(pose.centroid[:, 0] - pose.centroid[:, 1])[:, None]
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


PCA_SAMPLE = 200_000  # frames: PCA is fitted on at most this many training frames (uniform random sample)


def fit_pca(X: np.ndarray, params) -> dict:
    """PCA basis of egocentric poses X (n, 2*B*2): every training frame, or a uniform random
    sample of PCA_SAMPLE of them (trainer/store.py draws it video by video)."""
    X = np.asarray(X, dtype=np.float64)
    mean = X.mean(axis=0)
    _, s, vt = np.linalg.svd(X - mean, full_matrices=False)
    k = min(int(params["pca_components"]), vt.shape[0])
    return {"mean": mean, "components": vt[:k], "explained": (s[:k] ** 2 / (s**2).sum())}


def pca_input(*, pose: PairPose, fps, params, stats) -> np.ndarray:
    """Egocentric pose (T, 2*B*2): what the store keeps for `pca` (the basis is fitted per run)."""
    return _egocentric(pose).reshape(len(pose.xy), -1)


def pca_project(X: np.ndarray, stats: dict) -> np.ndarray:
    """Projection of egocentric poses X (n, 2*B*2) on the training PCA basis, (n, pca_components)."""
    return (np.asarray(X, dtype=np.float64) - stats["mean"]) @ np.asarray(stats["components"]).T


def temporal_stats(*, pose: PairPose, fps, params, stats) -> np.ndarray:
    """Rolling mean and std of 8 summary signals over each window in params["temporal_windows"] (s).

    Signals: centroid speed of agent and target, centroid distance, agent nose to target
    nose / tail base / centroid distances, cos of relative heading, agent head yaw.
    Output (T, 8 * 2 * len(windows)).
    """
    c = pose.centroid
    sp = xy_norm(np.gradient(c, axis=0)) * fps  # (T, 2)
    nose = pose.xy[:, 0, pose.part("nose", "neck")]
    tgt_nose = pose.xy[:, 1, pose.part("nose", "neck")]
    tgt_tail = pose.xy[:, 1, pose.part("tail_base", "tailbase")]
    h = _heading(pose)
    sig = np.column_stack(
        [
            sp,
            xy_norm(c[:, 0] - c[:, 1]),
            xy_norm(nose - tgt_nose),
            xy_norm(nose - tgt_tail),
            xy_norm(nose - c[:, 1]),
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
    """One feature-table entry.

    fn: pose -> (T, k) block, what the feature store keeps (unstandardised, float32).
    fit: (sample rows of fn's block, params) -> stats, fitted on training videos only.
    post: (block rows, stats) -> finished block; for fitted features (PCA projection).
    """

    fn: Callable[..., np.ndarray] | str  # or "package.module:function", imported here
    fit: Callable[[np.ndarray, dict], dict] | None = None
    standardise: bool = True  # mask channels stay 0/1
    post: Callable[[np.ndarray, dict], np.ndarray] | None = None
    params: tuple[str, ...] = ()  # config keys the functions read from `params` (Config.feature_params)

    def __post_init__(self):
        valid = all_keys()
        for key in self.params:
            if key not in valid:  # programming error in a registry line: loud, at import
                name = self.fn if isinstance(self.fn, str) else self.fn.__qualname__
                raise ValueError(f"feature '{name}' declares config key '{key}', which is not a field of "
                                 f"trainer.config.Config{did_you_mean(key, valid)}")
        if isinstance(self.fn, str):
            module, attr = self.fn.split(":")
            object.__setattr__(self, "fn", getattr(importlib.import_module(module), attr))


FEATURES: dict[str, Feature] = {
    "coords": Feature(coords),
    "speed": Feature(speed),
    "acceleration": Feature(acceleration),
    "distances": Feature(distances),
    "angles": Feature(angles),
    "pca": Feature(pca_input, fit=fit_pca, post=pca_project, params=("pca_components",)),
    "temporal_stats": Feature(temporal_stats, params=("temporal_windows",)),
    "mask": Feature(mask, standardise=False),
    # cross-lab features: agent-centred, heading-aligned
    "egocentric_pair": Feature("trainer.features_pairwise:egocentric_pair"),
    "pair_geometry": Feature("trainer.features_pairwise:pair_geometry"),
    # long-context rolling mean/std
    "rolling_stats": Feature("trainer.features_rolling:rolling_stats", params=("rolling_windows",)),
}


def feature_params(cfg) -> dict:
    """{config key: value} for every key a registered feature declares, whether selected or not
    (so the feature store's key does not depend on which other features a run selects)."""
    keys = dict.fromkeys(k for f in FEATURES.values() for k in f.params)
    values = {k: getattr(cfg, k) for k in keys}
    return {k: list(v) if isinstance(v, list) else v for k, v in values.items()}  # copies: specs outlive cfg


# Bump when any feature function's output changes: the feature store (trainer/store.py)
# keys entries by it, so stale features are recomputed, never reused.
FEATURE_CODE_VERSION = 3  # 3: body parts found through skeleton aliases, nose falls back to the neck

# ----------------------------------------------------------------------------- pipeline


def _to_list(d: dict) -> dict:
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in d.items()}


class Moments:
    """Streaming per-channel count, mean and sum of squared deviations (Welford / Chan et al.).

    `add(X)` folds in a block of rows; `merge(other)` combines two partial results (e.g. from
    two workers) exactly as if one had seen all rows: the pooled variance formula of Chan,
    Golub & LeVeque (1979). float64 throughout; `std` is the population std (numpy's default).
    """

    def __init__(self, dim: int):
        self.n = 0
        self.mean = np.zeros(dim)
        self.m2 = np.zeros(dim)

    def add(self, X: np.ndarray) -> Moments:
        X = np.asarray(X, dtype=np.float64)
        if len(X):
            other = Moments(X.shape[1])
            other.n, other.mean = len(X), X.mean(axis=0)
            other.m2 = ((X - other.mean) ** 2).sum(axis=0)
            self.merge(other)
        return self

    def merge(self, other: Moments) -> Moments:
        n = self.n + other.n
        if other.n == 0:
            return self
        delta = other.mean - self.mean
        self.mean = self.mean + delta * (other.n / n)
        self.m2 = self.m2 + other.m2 + delta * delta * (self.n * other.n / n)
        self.n = n
        return self

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / max(self.n, 1))


FIT_CHUNK = 65_536  # rows per block in the streaming fit: bounds its memory at ~F x 0.5 MB


class FeaturePipeline:
    """Selected features -> (T, F) float32, standardised with statistics fitted on train only.

    Two stages, so that the expensive part can be computed once and stored on disk:

    * `raw(rec)`: per pair a (T, F_raw) float32 array of every feature function's output,
      unstandardised and independent of the training set (what trainer/store.py keeps);
      for fitted features (PCA) it holds their input (the egocentric pose).
    * `fit(raw_seqs)` (training sequences, streamed: bounded memory) and then
      `finish(rows)`: PCA projection, standardisation and clipping of any rows, e.g. one
      training window read from a memory-mapped store entry.
    """

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
        self._widths: list[int] | None = None

    # -- computing
    def check_skeleton(self, rec: Recording) -> None:
        """DataError unless `rec` has the body parts this pipeline was built for."""
        if list(rec.bodyparts) != self.bodyparts:
            raise DataError(
                f"{rec.video_id}: body parts {rec.bodyparts} differ from the training set's {self.bodyparts}; "
                "map every video to one skeleton (data readers' canonical skeleton) first"
            )

    def spec(self) -> dict:
        """Everything that changes `raw` values except the keypoints: the feature store's key."""
        return {"names": self.names, "params": self.params, "bodyparts": self.bodyparts,
                "code_version": FEATURE_CODE_VERSION}

    def raw_blocks(self, pose: PairPose) -> list[np.ndarray]:
        return [FEATURES[n].fn(pose=pose, fps=pose.fps, params=self.params, stats={}) for n in self.names]

    def raw(self, rec: Recording):
        """Yield per labelled pair of `rec` its (T, F_raw) float32 stored features."""
        self.check_skeleton(rec)
        for pose in recording_poses(rec):
            yield np.concatenate(self.raw_blocks(pose), axis=1).astype(np.float32)

    @property
    def raw_widths(self) -> list[int]:
        """Columns of each feature's stored block (from a small probe pose; fixed per bodyparts/params)."""
        if self._widths is None:
            T, B = 32, len(self.bodyparts)
            xy = np.random.default_rng(0).normal(100, 20, (T, 2, B, 2))
            probe = PairPose(xy=xy, missing=np.zeros((T, 2, B), bool), fps=30.0, bodyparts=self.bodyparts)
            self._widths = [blk.shape[1] for blk in self.raw_blocks(probe)]
        return self._widths

    @property
    def raw_dim(self) -> int:
        return int(sum(self.raw_widths))

    def apply_post(self, rows: np.ndarray) -> np.ndarray:
        """Rows (n, F_raw) -> (n, F) float64 with every fitted feature's `post` applied."""
        edges = np.cumsum([0, *self.raw_widths])
        out = []
        for n, lo, hi in zip(self.names, edges[:-1], edges[1:]):
            blk = np.asarray(rows[:, lo:hi], dtype=np.float64)
            post = FEATURES[n].post
            out.append(post(blk, self.stats[n]) if post is not None else blk)
        return np.concatenate(out, axis=1)

    # -- fitting (streamed over sequences; memory bounded by FIT_CHUNK and PCA_SAMPLE rows)
    def fit(self, raw_seqs: list[np.ndarray]) -> FeaturePipeline:
        """Fit PCA and standardisation on training sequences, each (T, F_raw) (memmaps are fine).

        PCA: on every training frame, or on a uniform random sample of PCA_SAMPLE frames
        (seed 0) gathered sequence by sequence. Mean/std: one streaming pass (`Moments`).
        """
        lengths = np.array([len(x) for x in raw_seqs])
        total = int(lengths.sum())
        edges = np.cumsum([0, *self.raw_widths])
        pick = None
        if total > PCA_SAMPLE:
            pick = np.sort(np.random.default_rng(0).choice(total, PCA_SAMPLE, replace=False))
        starts = np.concatenate([[0], np.cumsum(lengths)])
        for k, n in enumerate(self.names):
            if FEATURES[n].fit is None:
                continue
            lo, hi = edges[k], edges[k + 1]
            parts = []
            for i, x in enumerate(raw_seqs):
                rows = slice(None) if pick is None else pick[(pick >= starts[i]) & (pick < starts[i + 1])] - starts[i]
                parts.append(np.asarray(x[rows, lo:hi], dtype=np.float64))
            self.stats[n] = FEATURES[n].fit(np.concatenate(parts), self.params)
        moments = None
        for x in raw_seqs:
            for a in range(0, len(x), FIT_CHUNK):
                blk = self.apply_post(x[a:a + FIT_CHUNK])
                moments = (moments or Moments(blk.shape[1])).add(blk)
        widths = [hi - lo for lo, hi in zip(*self._finished_edges())]
        self.scale_mask = np.concatenate([np.full(w, FEATURES[n].standardise) for n, w in zip(self.names, widths)])
        std = moments.std
        self.mean = np.where(self.scale_mask, moments.mean, 0.0)
        self.std = np.where(self.scale_mask & (std > 1e-8), std, 1.0)
        return self

    def _finished_edges(self) -> tuple[list[int], list[int]]:
        """Column ranges of each feature in the finished (n, F) array."""
        widths = [len(self.stats[n]["components"]) if FEATURES[n].post is not None else w
                  for n, w in zip(self.names, self.raw_widths)]
        e = np.cumsum([0, *widths])
        return list(e[:-1]), list(e[1:])

    def finish(self, rows: np.ndarray) -> np.ndarray:
        """Stored rows (n, F_raw) -> model input (n, F) float32: post, standardise, clip."""
        X = (self.apply_post(rows) - self.mean) / self.std
        return np.clip(np.nan_to_num(X, nan=0.0, posinf=0.0, neginf=0.0), -20, 20).astype(np.float32)

    # -- in-memory convenience (tests, benchmarks): raw + fit + finish in one call
    def fit_transform(self, recs: list[Recording]) -> list[list[np.ndarray]]:
        """Fit on `recs` (training videos); return finished features per rec per pair."""
        raws = [list(self.raw(r)) for r in recs]
        self.fit([x for rr in raws for x in rr])
        return [[self.finish(x) for x in rr] for rr in raws]

    def transform(self, rec: Recording) -> list[np.ndarray]:
        """Features of every labelled pair of `rec`: list of (T, F) float32."""
        if self.mean is None:
            raise RuntimeError("FeaturePipeline.transform called before fit")
        return [self.finish(x) for x in self.raw(rec)]

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
