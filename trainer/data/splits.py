"""Train/validation splits beyond `by_video`: whole labs held out, and k-fold over videos.

Both keep every window of a video on one side (the split unit is the video or the lab),
and both are deterministic given `data.split_seed`.
"""

from __future__ import annotations

import numpy as np

from trainer.data.recording import DataError, Recording


def split_by_lab(recs: list[Recording], data) -> tuple[list[Recording], list[Recording]]:
    """Hold out round(val_fraction x labs) whole labs (at least one) for validation.

    Uses `meta["lab_id"]` (set by the mabe25 reader). Labs are shuffled with
    `data.split_seed`; every video of a lab lands on the same side.
    """
    labs = [r.meta.get("lab_id") for r in recs]
    if any(lab is None for lab in labs):
        raise DataError("data.split=by_lab needs a lab id per video (data.format=mabe25); use data.split=by_video")
    uniq = sorted(set(labs))
    if len(uniq) < 2:
        raise DataError(f"data.split=by_lab needs at least 2 labs, found {len(uniq)} ({uniq[0]}); use data.split=by_video")
    order = np.random.default_rng(data.split_seed).permutation(len(uniq))
    n_val = min(len(uniq) - 1, max(1, round(data.val_fraction * len(uniq))))
    val_labs = {uniq[i] for i in order[:n_val]}
    train = [r for r in recs if r.meta["lab_id"] not in val_labs]
    val = [r for r in recs if r.meta["lab_id"] in val_labs]
    return train, val


def split_kfold(recs: list[Recording], data) -> tuple[list[Recording], list[Recording]]:
    """Fold `data.fold` of `data.num_folds` as validation, the other folds as training.

    Videos are shuffled with `data.split_seed` and dealt into `num_folds` folds of
    near-equal size, so running fold = 0 .. k-1 validates every video exactly once.
    """
    k, fold = int(data.num_folds), int(data.fold)
    if k < 2:
        raise DataError(f"config key 'data.num_folds' must be >= 2 for data.split=kfold, got {k}")
    if not 0 <= fold < k:
        raise DataError(f"config key 'data.fold' must be in 0..{k - 1}, got {fold}")
    if len(recs) < k:
        raise DataError(f"data.split=kfold with {k} folds needs at least {k} videos, found {len(recs)}")
    order = np.random.default_rng(data.split_seed).permutation(len(recs))
    val_idx = set(np.array_split(order, k)[fold].tolist())
    train = [r for i, r in enumerate(recs) if i not in val_idx]
    val = [r for i, r in enumerate(recs) if i in val_idx]
    return train, val
