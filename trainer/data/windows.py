"""Fixed-length windows over per-pair feature sequences, and stitching them back to frames.

A *sequence* is one (video, agent-target pair): features (T, F), labels (T,), and the
classes known for it. Windows take `length` frames spaced `gap` apart.

* Training windows start every `stride` frames (plus a random +-`jitter` shift per epoch);
  sequences shorter than one window are skipped.
* Evaluation windows cover every frame exactly once per phase: for frame_gap g the video is
  split into g interleaved sub-sequences, each tiled by windows at half-window stride with
  the last one aligned to the end; short sequences are padded. `Stitcher` averages the
  overlapping logits so every frame gets exactly one prediction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from trainer.data.recording import UNLABELLED, DataError

log = logging.getLogger(__name__)


@dataclass
class Sequence:
    """Features and labels of one (video, pair). x: (T, F) float32; y: (T,) int64 (-1 unlabelled).

    x is an array or anything indexable like one (`x[int_array]`, `len(x)`, `np.asarray(x)`),
    e.g. trainer.store.FeatureRows, which reads and finishes rows from the feature store.
    """

    video_id: str
    pair: int
    x: np.ndarray
    y: np.ndarray
    class_mask: np.ndarray  # (C,) bool: classes annotated for this pair (others never negatives)

    @property
    def num_frames(self) -> int:
        return len(self.x)


def make_sequences(recs, feats, num_classes: int) -> list[Sequence]:
    """Zip recordings with their per-pair feature arrays into Sequences."""
    out = []
    for rec, per_pair in zip(recs, feats):
        for p, x in enumerate(per_pair):
            y = rec.labels[:, p] if rec.labels is not None else np.full(len(x), UNLABELLED, dtype=np.int64)
            cm = np.ones(num_classes, dtype=bool) if rec.label_mask is None else np.asarray(rec.label_mask[p], bool)
            out.append(Sequence(rec.video_id, p, x, y, cm))
    return out


def window_length(cfg, fps: float) -> int:
    """Frames per window: sequence_length, or window_seconds converted at the data's fps.

    cfg: a trainer.config.Config (only window_seconds, frame_gap and sequence_length are read).
    """
    if cfg.window_seconds > 0:
        return max(2, round(cfg.window_seconds * fps / cfg.frame_gap))
    return cfg.sequence_length


def window_fps(cfg, recs) -> float:
    """The one frame rate window_seconds is converted at; DataError when the videos disagree.

    One window length serves every video, so with window_seconds > 0 and videos of different
    frame rates the same seconds would be different frame counts (e.g. 30 and 120 fps).
    """
    rates: dict[float, list[str]] = {}
    for r in recs:
        rates.setdefault(round(float(r.fps), 2), []).append(r.video_id)
    if cfg.window_seconds > 0 and len(rates) > 1:
        listed = "; ".join(f"{f:g} fps: {len(v)} video(s), e.g. {v[0]}" for f, v in sorted(rates.items()))
        raise DataError(f"window_seconds={cfg.window_seconds:g} needs one frame rate, but the videos have "
                        f"{listed}; train one model per frame rate or set sequence_length (frames) instead")
    return float(recs[0].fps)


class WindowDataset(Dataset):
    """Windows of `length` frames; each item is a dict of tensors:

    x (L, F) float32, y (L,) int64 (-1 = pad/unlabelled), valid (L,) bool,
    class_mask (C,) bool, index (3,) int64 = (sequence, phase, start) for stitching.
    """

    def __init__(
        self,
        seqs: list[Sequence],
        *,
        length: int,
        gap: int = 1,
        stride: int | None = None,
        train: bool = False,
        jitter: int = 0,
        noise_std: float = 0.0,
        feature_dropout: float = 0.0,
        seed: int = 0,
    ):
        self.seqs, self.length, self.gap, self.train = seqs, int(length), int(gap), train
        self.jitter, self.noise_std, self.seed, self.epoch = int(jitter), float(noise_std), int(seed), 0
        self.feature_dropout = float(feature_dropout)
        span = (self.length - 1) * self.gap + 1  # original frames covered by one window
        if train:
            stride = max(1, stride or self.length // 2)
            items = []
            for i, s in enumerate(seqs):
                if s.num_frames >= span:
                    starts = list(range(0, s.num_frames - span + 1, stride))
                    items += [(i, 0, st) for st in starts]
            if not items:
                longest = max((s.num_frames for s in seqs), default=0)
                raise DataError(
                    f"sequence_length {self.length} x frame_gap {self.gap} = {span} frames is longer than "
                    f"every training video (longest: {longest} frames); lower sequence_length"
                )
            skipped = sum(s.num_frames < span for s in seqs)
            if skipped:
                log.warning("skipped %d training sequences shorter than one window (%d frames)", skipped, span)
        else:
            items = []
            half = max(1, self.length // 2)
            for i, s in enumerate(seqs):
                for phase in range(min(self.gap, s.num_frames)):
                    n = len(range(phase, s.num_frames, self.gap))
                    starts = list(range(0, max(1, n - self.length + 1), half))
                    if n > self.length and starts[-1] != n - self.length:
                        starts.append(n - self.length)  # last window aligned to the end
                    items += [(i, phase, st) for st in starts]
        self.items = np.asarray(items, dtype=np.int64).reshape(-1, 3)

    def windows_per_sequence(self) -> np.ndarray:
        """(num sequences,) how many items of this dataset belong to each sequence."""
        return np.bincount(self.items[:, 0], minlength=len(self.seqs))

    def set_epoch(self, epoch: int) -> None:
        """Training randomness (jitter, noise, feature dropout) depends on (seed, epoch, item) only: resumable."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def frames(self, i: int) -> np.ndarray:
        """Original frame indices of window i (may exceed the sequence end for padded windows)."""
        seq, phase, start = self.items[i]
        return phase + self.gap * (start + np.arange(self.length))

    def __getitem__(self, i: int) -> dict:
        epoch = self.epoch
        if self.train and i >= len(self.items):  # EpochSampler encodes the epoch: i = epoch * n + window
            epoch, i = divmod(i, len(self.items))
        seq_i, phase, start = (int(v) for v in self.items[i])
        s = self.seqs[seq_i]
        # one torch generator per (seed, epoch, window): resumable and the same in any worker; this
        # is the loader's hot path (num_workers=0 runs it between steps), and torch's samplers with
        # a cheap seed mix cost ~2.5x less per window than a numpy SeedSequence + normal()
        g = torch.Generator().manual_seed(_mix(self.seed, epoch, i)) if self.train else None
        if self.train and self.jitter:
            span = (self.length - 1) * self.gap + 1
            shift = int(torch.randint(-self.jitter, self.jitter + 1, (), generator=g))
            start = min(max(start + shift, 0), s.num_frames - span)
            idx = start + self.gap * np.arange(self.length)
        else:
            idx = phase + self.gap * (start + np.arange(self.length))
        valid = idx < s.num_frames
        padded = not valid.all()  # only evaluation windows at a video's end; training windows fit
        safe = np.minimum(idx, s.num_frames - 1) if padded else idx  # padding re-reads the last frame: a short read
        x = torch.from_numpy(np.asarray(s.x[safe], dtype=np.float32))  # fancy indexing copies: safe to edit
        y = np.where(valid, s.y[safe], UNLABELLED) if padded else s.y[safe]
        if self.train and self.noise_std > 0:
            x.add_(torch.randn(x.shape, generator=g), alpha=self.noise_std)
        if self.train and self.feature_dropout > 0:  # whole input channels to 0 (= their training mean)
            x.mul_((torch.rand(x.shape[1], generator=g) >= self.feature_dropout).to(x.dtype))
        if padded:
            x[~torch.from_numpy(valid)] = 0.0
        return {
            "x": x,
            "y": torch.from_numpy(np.asarray(y, dtype=np.int64)),
            "valid": torch.from_numpy(valid),
            "class_mask": torch.from_numpy(s.class_mask),
            "index": torch.from_numpy(np.array([seq_i, phase, start], dtype=np.int64)),
        }


def _mix(*ints: int) -> int:
    """A well-spread 63-bit seed from a few ints (splitmix64-style), in ~2 us."""
    h = 0x9E3779B97F4A7C15
    for v in ints:
        h = ((h ^ v) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h >> 1


class Stitcher:
    """Accumulates window logits back onto the frames of each sequence (mean over overlaps).

    With `on_done(seq_index, logits)` it works video by video: a sequence's (T, C) buffer is
    allocated at its first window and handed over (then freed) as soon as all its windows
    (`expected[seq]`, from the dataset) arrived, so memory holds only the sequences in
    flight, never every frame's logits. Without it, `logits()` returns all of them at the end.
    """

    def __init__(self, seqs: list[Sequence], num_classes: int, gap: int, length: int,
                 *, expected: np.ndarray | None = None, on_done=None):
        self.seqs, self.gap, self.length, self.C = seqs, gap, length, num_classes
        self.on_done = on_done
        self.expected = expected
        self.sum: dict[int, np.ndarray] = {}
        self.count: dict[int, np.ndarray] = {}
        self.seen = np.zeros(len(seqs), dtype=np.int64)
        self.done: dict[int, np.ndarray] = {}

    def add(self, logits: np.ndarray, index: np.ndarray) -> None:
        """logits (B, L, C); index (B, 3) = (sequence, phase, start)."""
        for lg, (seq_i, phase, start) in zip(logits, index):
            seq_i = int(seq_i)
            if seq_i not in self.sum:
                T = self.seqs[seq_i].num_frames
                self.sum[seq_i] = np.zeros((T, self.C), dtype=np.float64)
                self.count[seq_i] = np.zeros(T, dtype=np.int64)
            idx = phase + self.gap * (start + np.arange(self.length))
            ok = idx < self.seqs[seq_i].num_frames
            np.add.at(self.sum[seq_i], idx[ok], lg[ok])
            np.add.at(self.count[seq_i], idx[ok], 1)
            self.seen[seq_i] += 1
            if self.on_done is not None and self.expected is not None and self.seen[seq_i] == self.expected[seq_i]:
                self.on_done(seq_i, self._finish(seq_i))

    def _finish(self, seq_i: int) -> np.ndarray:
        sm, c = self.sum.pop(seq_i), self.count.pop(seq_i)
        if (c == 0).any():
            raise RuntimeError(f"{self.seqs[seq_i].video_id}: {int((c == 0).sum())} frames received no prediction")
        return sm / c[:, None]

    def logits(self) -> list[np.ndarray]:
        """Per sequence (T, C) mean logits; raises if a frame received no window."""
        for i in range(len(self.seqs)):
            if i not in self.sum:
                if self.seen[i] == 0:
                    raise RuntimeError(f"{self.seqs[i].video_id}: {self.seqs[i].num_frames} frames received no prediction")
                continue
            self.done[i] = self._finish(i)
        return [self.done.pop(i) for i in range(len(self.seqs))]
