"""Long-context rolling statistics of a compact set of per-frame signals, as a feature function.

A per-frame classifier (the GBDT, the per-frame MLP) sees temporal context only through
features like these, and sequence models can use them too: `features: [..., rolling_stats]`.
For each of ~20 + 2*B signals (B body parts) the feature holds the signal itself plus its
centred rolling mean and std over every window of `rolling_windows` (seconds, converted at
the video's fps), so a 30 fps and a 120 fps recording get the same context. Offline
classification may look ahead, hence centred windows; near the ends of a video the window
is cut short. Everything is O(T) per window (cumulative sums) and NaN-aware (NaN frames are
left out of a window's mean/std; a window with no finite value gives NaN, which the
pipeline maps to 0 after standardisation).

Signals (agent = mouse 0 of the pair, target = mouse 1; "front"/"back" = first body part
named like a nose/head resp. tail base, else the first/last part; "centre" = mean of all):
  * 9 distances agent {front, centre, back} to target {front, centre, back}, plus the
    minimum distance over all part pairs, in the Recording's units (px or cm);
  * approach speed: d/dt of the centroid distance, units/s;
  * per-keypoint speed of both animals, units/s (2*B);
  * relative heading, bearing of the target seen from the agent and of the agent seen from
    the target (sin, cos each), and both animals' turning speed |d heading/dt|, rad/s;
  * body length (front to back) of both animals.
"""

from __future__ import annotations

import warnings

import numpy as np

from trainer.geometry import xy_norm

ROLLING_WINDOWS = [1 / 6, 0.5, 1.5, 4.5, 13.5]  # seconds; the config default (rolling_windows) for callers without one
FRONT = ("nose", "snout", "head", "top", "neck")  # first found = the front of the body axis
BACK = ("tail_base", "tailbase", "tail_root", "tail", "tail1")  # first found = the back


def rolling_mean_std(x: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Centred rolling mean and (population) std over `window` frames, ignoring NaN.

    x: (T, k) float. Frame t's window is [t - window // 2, t - window // 2 + window), cut at
    the video's ends. Returns two (T, k) float64 arrays; NaN where a window has no finite
    value. O(T * k): cumulative sums of the values, their squares and the finite count.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    T, k = x.shape
    w = max(1, int(window))
    ok = np.isfinite(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN column: shift 0 below
        shift = np.nanmean(np.where(ok, x, np.nan), axis=0)
    v = np.where(ok, x - np.nan_to_num(shift), 0.0)  # shifted: sums of squares stay small, variance exact
    zero = np.zeros((1, k))
    c0 = np.concatenate([zero, np.cumsum(ok, axis=0, dtype=np.float64)])
    c1 = np.concatenate([zero, np.cumsum(v, axis=0)])
    c2 = np.concatenate([zero, np.cumsum(v * v, axis=0)])
    lo = np.clip(np.arange(T) - w // 2, 0, T)
    hi = np.clip(np.arange(T) - w // 2 + w, 0, T)
    n = c0[hi] - c0[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (c1[hi] - c1[lo]) / n
        ex2 = (c2[hi] - c2[lo]) / n
        var = ex2 - mean * mean
    var = np.where(var > 1e-10 * ex2, var, 0.0)  # below the sums' rounding: a constant window, std 0
    mean = np.where(n > 0, mean + np.nan_to_num(shift), np.nan)
    return mean, np.where(n > 0, np.sqrt(var), np.nan)


def _index(bodyparts: list[str], names: tuple[str, ...], default: int) -> int:
    norm = [b.lower().replace("-", "_") for b in bodyparts]
    for n in names:
        if n in norm:
            return norm.index(n)
    return default % len(bodyparts)


def _wrap(a: np.ndarray) -> np.ndarray:
    return (a + np.pi) % (2 * np.pi) - np.pi


def pair_signals(xy: np.ndarray, bodyparts: list[str], fps: float) -> np.ndarray:
    """The compact per-frame signals listed in the module docstring; xy (T, 2, B, 2) -> (T, 21 + 2*B)."""
    T = xy.shape[0]
    f, b = _index(bodyparts, FRONT, 0), _index(bodyparts, BACK, -1)
    pts = np.stack([xy[:, :, f], xy.mean(axis=2), xy[:, :, b]], axis=2)  # (T, 2, 3, 2) front/centre/back
    dist = xy_norm(pts[:, 0, :, None] - pts[:, 1, None, :]).reshape(T, 9)
    all_d = xy_norm(xy[:, 0, :, None] - xy[:, 1, None, :]).reshape(T, -1)
    centre_d = dist[:, 4]  # centre-centre
    approach = np.gradient(centre_d) * fps if T > 1 else np.zeros(T)
    speed = (xy_norm(np.gradient(xy, axis=0)) * fps).reshape(T, -1) if T > 1 else np.zeros((T, 2 * xy.shape[2]))
    axis = pts[:, :, 0] - pts[:, :, 2]  # (T, 2, 2) back -> front
    heading = np.arctan2(axis[..., 1], axis[..., 0])  # (T, 2)
    rel = _wrap(heading[:, 1] - heading[:, 0])
    d = pts[:, 1, 1] - pts[:, 0, 1]  # agent centre -> target centre
    bear_a = _wrap(np.arctan2(d[:, 1], d[:, 0]) - heading[:, 0])
    bear_t = _wrap(np.arctan2(-d[:, 1], -d[:, 0]) - heading[:, 1])
    turn = np.abs(np.gradient(np.unwrap(heading, axis=0), axis=0)) * fps if T > 1 else np.zeros((T, 2))
    length = xy_norm(axis)  # (T, 2)
    ang = np.stack([rel, bear_a, bear_t], axis=1)
    return np.column_stack([dist, all_d.min(axis=1), approach, speed, np.sin(ang), np.cos(ang), turn, length])


def rolling_stats(*, pose, fps, params, stats) -> np.ndarray:
    """Signals plus rolling mean and std over params["rolling_windows"] (seconds), (T, S * (1 + 2W)).

    pose: a trainer.features.PairPose; S = 21 + 2*B signals, W windows. Column order:
    signals, then for each window its S means and S stds.
    """
    sig = pair_signals(pose.xy, pose.bodyparts, fps)
    out = [sig]
    for seconds in params.get("rolling_windows", ROLLING_WINDOWS):
        mean, std = rolling_mean_std(sig, max(2, round(float(seconds) * fps)))
        out += [mean, std]
    return np.concatenate(out, axis=1)
