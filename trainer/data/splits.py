"""Train/validation splits beyond `by_video`: whole labs held out, k-fold over videos, time blocks.

by_lab and kfold keep every window of a video on one side (the split unit is the video or
the lab) and are deterministic given `data.split_seed`. by_time holds out a contiguous
block of every video (for data sets of one or two long videos); see split_by_time.
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
        raise DataError(f"data.split=kfold with {k} folds needs at least {k} videos, found {len(recs)}; lower "
                        "data.num_folds, or hold out time blocks of every video with data.split=by_time")
    order = np.random.default_rng(data.split_seed).permutation(len(recs))
    val_idx = set(np.array_split(order, k)[fold].tolist())
    train = [r for i, r in enumerate(recs) if i not in val_idx]
    val = [r for i, r in enumerate(recs) if i in val_idx]
    return train, val


def slice_recording(rec: Recording, start: int, stop: int) -> Recording:
    """Frames [start, stop) of `rec` as a Recording of their own (arrays are views, not copies).

    video_id becomes "<video>@<start>-<stop>"; meta["source_video"] and meta["frame_offset"]
    map its frames back to the original video (out-of-fold tables use them).
    """
    meta = dict(rec.meta, source_video=rec.meta.get("source_video", rec.video_id),
                frame_offset=int(rec.meta.get("frame_offset", 0)) + start)
    return Recording(
        video_id=f"{rec.video_id}@{start}-{stop}",
        keypoints=rec.keypoints[start:stop],
        fps=rec.fps,
        mouse_ids=list(rec.mouse_ids),
        bodyparts=list(rec.bodyparts),
        pairs=list(rec.pairs),
        labels=None if rec.labels is None else rec.labels[start:stop],
        class_names=list(rec.class_names),
        meta=meta,
        label_mask=rec.label_mask,
    )


def time_blocks(num_frames: int, k: int) -> list[tuple[int, int]]:
    """k contiguous [start, stop) blocks of near-equal length covering 0..num_frames once."""
    edges = np.linspace(0, num_frames, k + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def split_by_time(recs: list[Recording], data, *, gap_frames=None) -> tuple[list[Recording], list[Recording]]:
    """Block `data.fold` of `data.num_folds` contiguous time blocks of EVERY video as validation.

    For one or two long annotated videos, where a split by video is impossible. Around the
    validation block, `gap_frames(rec)` frames (at least one window, see load_splits) are
    left out on both sides, so no training window sits right next to a validation frame;
    the training frames before and after the block become two separate recordings, so no
    window or rolling feature straddles the hole. Running fold = 0..k-1 validates every
    frame of every video exactly once. Neighbouring blocks of one video are still
    correlated (same animals, same session): scores are optimistic next to a split by video.
    """
    k, fold = int(data.num_folds), int(data.fold)
    if k < 2:
        raise DataError(f"config key 'data.num_folds' must be >= 2 for data.split=by_time, got {k}")
    if not 0 <= fold < k:
        raise DataError(f"config key 'data.fold' must be in 0..{k - 1} for data.split=by_time, got {fold}")
    train, val = [], []
    for rec in recs:
        gap = int(gap_frames(rec)) if gap_frames is not None else 0
        start, stop = time_blocks(rec.num_frames, k)[fold]
        if stop <= start:
            raise DataError(f"{rec.video_id}: {rec.num_frames} frames cannot make {k} time blocks; "
                            "lower data.num_folds")
        val.append(slice_recording(rec, start, stop))
        for a, b in ((0, start - gap), (stop + gap, rec.num_frames)):
            if b > a:
                train.append(slice_recording(rec, a, b))
    if not train:
        raise DataError(f"data.split=by_time: nothing left to train on after the {k}-block split with its gap; "
                        "lower data.num_folds or sequence_length")
    return train, val


def time_gap_frames(cfg, fps: float) -> int:
    """by_time's gap in frames at `fps`: max(one window span, data.time_gap seconds)."""
    from trainer.data.windows import window_length  # windows imports torch; reading splits does not

    span = (window_length(cfg, fps) - 1) * cfg.frame_gap + 1
    return max(span, round(cfg.data.time_gap * fps))
