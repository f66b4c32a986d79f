"""The common in-memory form of one tracked video, produced by every reader.

A `Recording` holds the keypoints of all mice and, for each ordered (agent, target) pair
that carries labels, one integer label per frame. Readers (synthetic, CalMS21, MABe-2025,
DeepLabCut, SimBA, ...) all return `list[Recording]`; everything downstream (features,
windowing, training, predict, metrics) only sees this type.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

UNLABELLED = -1  # label value for frames (or whole pairs) whose behaviour is unknown


class DataError(ValueError):
    """A problem with user data (bad file, bad key, too-short video, ...).

    The message is one line naming the file/key and what to do; entry points print it
    without a traceback.
    """


@dataclass
class Recording:
    """One video: keypoints of every mouse plus per-frame labels per (agent, target) pair.

    Attributes:
        video_id: unique name of the video (used to split train/val by video).
        keypoints: (T, M, B, 2) float32 pixel coordinates (x, y); NaN = missing.
        fps: frames per second of the video.
        mouse_ids: M names, e.g. ["resident", "intruder"] or ["mouse1", ...].
        bodyparts: B names, e.g. the CalMS21 skeleton.
        pairs: P ordered (agent_index, target_index) pairs that carry labels;
            agent == target means a self behaviour (e.g. rearing).
        labels: (T, P) int64 class index per frame and pair; -1 = unlabelled. May be None
            for unannotated (test) videos.
        class_names: names of the class indices (index 0 is usually the background class).
        meta: free-form extras (lab_id, pix_per_cm, arena size, source file, ...).
        label_mask: optional (P, C) bool, which classes were annotated for each pair
            (MABe-2025 `behaviors_labeled`); None = every class is known.
    """

    video_id: str
    keypoints: np.ndarray
    fps: float
    mouse_ids: list[str]
    bodyparts: list[str]
    pairs: list[tuple[int, int]]
    labels: np.ndarray | None
    class_names: list[str]
    meta: dict = field(default_factory=dict)
    label_mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        kp = np.asarray(self.keypoints, dtype=np.float32)
        if kp.ndim != 4 or kp.shape[-1] != 2:
            raise DataError(
                f"{self.video_id}: keypoints must have shape (T, mice, bodyparts, 2), got {kp.shape}"
            )
        self.keypoints = kp
        T, M, B, _ = kp.shape
        if T == 0:
            raise DataError(f"{self.video_id}: video has no frames")
        if len(self.mouse_ids) != M:
            raise DataError(f"{self.video_id}: {len(self.mouse_ids)} mouse ids for {M} mice")
        if len(self.bodyparts) != B:
            raise DataError(f"{self.video_id}: {len(self.bodyparts)} body-part names for {B} body parts")
        if not self.fps or not np.isfinite(self.fps) or self.fps <= 0:
            raise DataError(f"{self.video_id}: fps must be a positive number, got {self.fps!r}")
        self.pairs = [(int(a), int(t)) for a, t in self.pairs]
        for a, t in self.pairs:
            if not (0 <= a < M and 0 <= t < M):
                raise DataError(f"{self.video_id}: pair ({a}, {t}) names a mouse outside 0..{M - 1}")
        if self.labels is not None:
            lab = np.asarray(self.labels, dtype=np.int64)
            if lab.ndim == 1:
                lab = lab[:, None]
            if lab.shape != (T, len(self.pairs)):
                raise DataError(
                    f"{self.video_id}: labels have shape {lab.shape}, expected (T={T}, pairs={len(self.pairs)})"
                )
            bad = (lab < UNLABELLED) | (lab >= len(self.class_names))
            if bad.any():
                raise DataError(
                    f"{self.video_id}: label value {int(lab[bad][0])} outside -1..{len(self.class_names) - 1}"
                )
            self.labels = lab

    @property
    def num_frames(self) -> int:
        return int(self.keypoints.shape[0])

    def pair_name(self, p: int) -> str:
        """Human-readable "agent->target" name of label column `p`."""
        a, t = self.pairs[p]
        return f"{self.mouse_ids[a]}->{self.mouse_ids[t]}"


def mirror_pairs(rec: Recording) -> Recording:
    """`rec` plus the (target, agent) view of every labelled pair that lacks one, same labels.

    A training augmentation for behaviours that belong to the pair rather than to one animal
    (e.g. rat46's social / nonsocial / aggression states): the features of the swapped view
    differ (agent-centred quantities move to the other animal), the label does not. Wrong for
    directed behaviours (attack, mount by the agent), hence opt-in (`mirror_pairs`).
    """
    have = set(rec.pairs)
    extra = [p for p, (a, t) in enumerate(rec.pairs) if a != t and (t, a) not in have]
    if not extra or rec.labels is None:
        return rec
    pairs = rec.pairs + [(rec.pairs[p][1], rec.pairs[p][0]) for p in extra]
    labels = np.concatenate([rec.labels, rec.labels[:, extra]], axis=1)
    mask = None if rec.label_mask is None else np.concatenate([rec.label_mask, rec.label_mask[extra]], axis=0)
    return Recording(rec.video_id, rec.keypoints, rec.fps, list(rec.mouse_ids), list(rec.bodyparts), pairs, labels,
                     list(rec.class_names), dict(rec.meta), mask)
