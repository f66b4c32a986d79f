"""Data sources: a dispatch table {format name: reader} and the train/val split.

A reader is `reader(path: str, *, data: DataConfig, fps: float) -> list[Recording]`
(`fps` is the config's fallback for formats that do not store a frame rate). Adding a
format = one module + one `READERS` line (docs/contributing.md); nothing else changes.

A format may also have a lister (`LISTERS`, same arguments) that returns its videos without
reading them: objects with `video_id`, `bodyparts` (the body-part list `read()` will give,
or None when unknown before reading) and `read() -> Recording`, picklable, in the reader's
order. The feature store's cold path then reads and featurises one video at a time
(`list_sides`), so memory does not grow with the number of videos.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from trainer.data.recording import UNLABELLED, DataError, Recording
from trainer.data.skeleton import Harmonisation, harmonisation, harmonise
from trainer.hints import did_you_mean

Reader = Callable[..., list[Recording]]

# name -> "module:function"; modules are imported on first use so optional
# dependencies of one format never slow down or break another.
READERS: dict[str, str] = {
    "synthetic": "trainer.data.synthetic:read_synthetic",
    "calms21": "trainer.data.calms21:read_calms21",
    "mabe25": "trainer.data.mabe25:read_mabe25",
    "dlc": "trainer.data.dlc:read_dlc",
    "simba": "trainer.data.simba:read_simba",
    "sleap": "trainer.data.sleap:read_sleap",  # .slp / analysis .h5 / .nwb / JABS; needs the `sleap` extra
    "auto": "trainer.data.detect:read_auto",  # detect one of the above from the files
}

# name -> "module:function" listing the videos of a format without reading them (streaming
# featurisation); formats not listed here are read whole by the cold feature-store path
LISTERS: dict[str, str] = {
    "synthetic": "trainer.data.synthetic:list_synthetic",
    "mabe25": "trainer.data.mabe25:list_mabe25",
}

__all__ = ["READERS", "UNLABELLED", "DataError", "Recording", "get_reader", "load_recordings", "load_splits",
           "read_recordings", "split_recordings", "LISTERS", "ListingMismatch", "VideoReading", "list_sides"]


def register_reader(name: str, target: str) -> None:
    """Register `target` ("package.module:function") as the reader for `name`."""
    READERS[name] = target


def get_reader(name: str) -> Reader:
    if name not in READERS:
        hint = did_you_mean(name, READERS, cutoff=0.6, list_valid=True)
        raise DataError(f"config key 'data.format': unknown format '{name}'{hint}")
    module, fn = READERS[name].split(":")
    return getattr(importlib.import_module(module), fn)


def read_recordings(fmt: str, path: str, *, data, fps: float) -> list[Recording]:
    """Read every recording of `path` with the reader of `fmt`; error if there are none."""
    recs = get_reader(fmt)(path, data=data, fps=fps)
    if not recs:
        raise DataError(f"{path or fmt}: no recordings found (check data.path and data.format)")
    return drop_classes(recs, list(getattr(data, "unlabelled_behaviors", []) or []))


def drop_classes(recs: list[Recording], names: list[str]) -> list[Recording]:
    """Turn the frames of the behaviours `names` into unlabelled (-1) and remove those classes.

    For annotations that mark periods nobody should score, e.g. rat46's `base` (before the
    animals interact): they are left out of the loss and of every metric, never negatives.
    Names absent from the data are ignored (a prediction file may carry no labels).
    """
    if not names:
        return recs
    for r in recs:
        drop = [i for i, n in enumerate(r.class_names) if n in names]
        if not drop:
            continue
        keep = [i for i in range(len(r.class_names)) if i not in drop]
        remap = np.full(len(r.class_names) + 1, UNLABELLED, dtype=np.int64)  # last slot: -1 stays -1
        remap[keep] = np.arange(len(keep))
        if r.labels is not None:
            r.labels = remap[r.labels]
        if r.label_mask is not None:
            r.label_mask = r.label_mask[:, keep]
        r.class_names = [r.class_names[i] for i in keep]
    return recs


def split_by_video(
    recs: list[Recording], *, val_fraction: float, seed: int
) -> tuple[list[Recording], list[Recording]]:
    """Shuffle videos with `seed` and hold out round(val_fraction * n) (at least 1) for validation."""
    if len(recs) < 2:
        raise DataError(
            f"need at least 2 videos to split train/val by video, found {len(recs)}; "
            "add videos, set data.val_path, or hold out time blocks of every video with data.split=by_time"
        )
    order = np.random.default_rng(seed).permutation(len(recs))
    n_val = min(len(recs) - 1, max(1, round(val_fraction * len(recs))))
    val_idx = set(order[:n_val].tolist())
    train = [r for i, r in enumerate(recs) if i not in val_idx]
    val = [r for i, r in enumerate(recs) if i in val_idx]
    return train, val


def load_recordings(cfg) -> list[Recording]:
    """Read and harmonise `data.path` without splitting (cross-validation splits it once per fold)."""
    d = cfg.data
    if d.val_path or cfg.val_data_dir:
        raise DataError("cross-validation (data.fold=-1) splits data.path into folds itself; unset data.val_path")
    path = "" if d.format == "synthetic" else d.path or cfg.train_data_dir
    return harmonise(read_recordings(d.format, path, data=d, fps=cfg.fps), skeleton=d.skeleton, units=d.units)


def load_splits(cfg) -> tuple[list[Recording], list[Recording]]:
    """Read the configured data and split it into (train, val) recordings by video."""
    recs, num_train = read_sides(cfg)
    return split_videos(recs, num_train, cfg)


def side_paths(cfg) -> tuple[str, str]:
    """(training path, validation path or "") of `cfg`; both "" for synthetic data."""
    d = cfg.data
    if d.format == "synthetic":
        return "", ""
    return d.path or cfg.train_data_dir, d.val_path or cfg.val_data_dir


def read_sides(cfg) -> tuple[list[Recording], int | None]:
    """Every configured recording, harmonised; and how many of them (the first ones) come from
    the training path when a separate validation path is set (else None: split by `data.split`)."""
    d = cfg.data
    train_path, val_path = side_paths(cfg)
    recs = read_recordings(d.format, train_path, data=d, fps=cfg.fps)
    if val_path:
        val = read_recordings(d.format, val_path, data=d, fps=cfg.fps)
        return harmonise(recs + val, skeleton=d.skeleton, units=d.units), len(recs)  # one layout for both sides
    return harmonise(recs, skeleton=d.skeleton, units=d.units), None


class ListingMismatch(Exception):
    """A video's tracking does not hold the body parts its listing announced, so the
    harmonisation planned from the listing may be wrong: read every video first instead."""


@dataclass(frozen=True)
class VideoReading:
    """Reads one listed video into exactly the Recording `read_sides` gives for it.

    plan: the data set's harmonisation (decided from the listing); unlabelled: classes
    turned into -1 (`data.unlabelled_behaviors`); check_layout: the plan depends on the
    listed body parts (skeleton=auto), so a video that tracks others raises ListingMismatch.
    """

    plan: Harmonisation
    unlabelled: tuple[str, ...] = ()
    check_layout: bool = False

    def __call__(self, video) -> Recording:
        rec = video.read()
        if self.check_layout and list(rec.bodyparts) != list(video.bodyparts):
            raise ListingMismatch(f"video {video.video_id} tracks {list(rec.bodyparts)}, its listing says "
                                  f"{list(video.bodyparts)}")
        return self.plan.apply(drop_classes([rec], list(self.unlabelled))[0])


def _list(fmt: str, path: str, *, data, fps: float) -> list:
    module, fn = LISTERS[fmt].split(":")
    videos = getattr(importlib.import_module(module), fn)(path, data=data, fps=fps)
    if not videos:
        raise DataError(f"{path or fmt}: no recordings found (check data.path and data.format)")
    return videos


def list_sides(cfg) -> tuple[list, int | None, VideoReading] | None:
    """`read_sides` one video at a time: (listed videos, num_train, read) where `read(video)`
    is that video's Recording exactly as `read_sides(cfg)` would give it (harmonised with
    the plan of the whole data set, decided from the listing before any tracking is read).

    None when the format has no lister, or when skeleton=auto needs body-part lists the
    listing does not give: read_sides then.
    """
    d = cfg.data
    if d.format not in LISTERS:
        return None
    train_path, val_path = side_paths(cfg)
    videos = _list(d.format, train_path, data=d, fps=cfg.fps)
    num_train = None
    if val_path:
        num_train = len(videos)
        videos = videos + _list(d.format, val_path, data=d, fps=cfg.fps)
    layouts = {None if v.bodyparts is None else tuple(v.bodyparts) for v in videos}
    if d.skeleton == "auto" and None in layouts:
        return None
    plan = harmonisation(layouts, skeleton=d.skeleton, units=d.units)
    unlabelled = tuple(getattr(d, "unlabelled_behaviors", []) or [])
    return videos, num_train, VideoReading(plan, unlabelled, check_layout=d.skeleton == "auto")


def split_recordings(recs: list[Recording], cfg, *, fold: int | None = None) -> tuple[list[Recording], list[Recording]]:
    """(train, val) of already read recordings by `data.split`; `fold` overrides data.fold (cross-validation)."""
    return split_videos(recs, None, cfg, fold=fold)


def split_videos(recs: list, num_train: int | None, cfg, *, fold: int | None = None) -> tuple[list, list]:
    """(train, val): the first `num_train` / the rest, or `data.split` applied (any objects with
    `video_id` and `meta`, e.g. the feature store's StoredVideo, except for by_time, which slices
    keypoints); `fold` overrides data.fold (cross-validation)."""
    if num_train is not None:
        return recs[:num_train], recs[num_train:]
    d = cfg.data if fold is None else dataclasses.replace(cfg.data, fold=fold)
    splitter = SPLITTERS.get(d.split)
    if splitter is None:
        raise DataError(f"config key 'data.split': unknown split '{d.split}'")
    if d.fold == -1:
        raise DataError("data.fold=-1 trains every fold: run it with trainer/run.py or tune.py "
                        "(trainer.cv.cross_validate), not as one train() call")
    return splitter(recs, d, cfg=cfg)


def _split_by_video(recs, d, cfg=None):
    return split_by_video(recs, val_fraction=d.val_fraction, seed=d.split_seed)


def _split_by_lab(recs, d, cfg=None):
    from trainer.data.splits import split_by_lab

    return split_by_lab(recs, d)


def _split_kfold(recs, d, cfg=None):
    from trainer.data.splits import split_kfold

    return split_kfold(recs, d)


def _split_by_time(recs, d, cfg=None):
    from trainer.data.splits import split_by_time, time_gap_frames

    return split_by_time(recs, d, gap_frames=None if cfg is None else lambda r: time_gap_frames(cfg, r.fps))


# split name -> fn(recs, data_cfg, cfg=None) -> (train, val); cfg (the whole Config) when the split
# depends on the window (by_time's gap)
SPLITTERS: dict[str, Callable] = {"by_video": _split_by_video, "by_lab": _split_by_lab, "kfold": _split_kfold,
                                  "by_time": _split_by_time}
