"""Small array geometry shared by the feature modules (numpy only)."""

from __future__ import annotations

import numpy as np


def xy_norm(v: np.ndarray) -> np.ndarray:
    """Length of 2-D vectors: (..., 2) -> (...).

    Bit-for-bit what `np.linalg.norm(v, axis=-1)` gives (a two-term sum is exact in the same
    order), about 7x faster: numpy's reduction over a length-2 axis is the slow part of
    featurising (profile of FeatureStore.ensure, 2026-12-02).
    """
    x, y = v[..., 0], v[..., 1]
    return np.sqrt(x * x + y * y)
