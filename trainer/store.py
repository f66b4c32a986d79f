"""On-disk feature store: features computed once per video, read back window by window.

Layout under the store root (config key `feature_store`, default `<output_dir>/feature_store`):

    features/<kk>/<key>/x.npy       (P, T, F_raw) float32: `FeaturePipeline.raw` of every pair
    features/<kk>/<key>/DONE.json   completion marker: shape, byte size of every file, spec
    datasets/<dkey>/manifest.json   the videos of one configured data set: ids, fps, pairs,
                                    classes, meta, content hash (written last = marker)
    datasets/<dkey>/labels_<i>.npy  (T, P) int64 labels of video i
    events.jsonl                    one line per use: hits and misses (sweeps count these)

Keys (sha256 of canonical JSON):
  * feature entry = hash(video content, feature spec): the content hash covers keypoints,
    fps, body parts and pairs (after skeleton/unit harmonisation), the spec covers feature
    names, their parameters, the body-part list and `FEATURE_CODE_VERSION`. Features are a
    pure function of these, so an entry can never be stale.
  * data set = hash(reader name and every `data.*` option except the split keys, fallback
    fps, and the identity (path, size, mtime) of every source file). Touching a file
    changes the key: the data are read again, and only videos whose content changed are
    featurised again.

Entries are written into a private temporary directory and renamed into place, so a killed
writer never leaves a half entry under its final name; two writers of one entry both finish
and one rename wins. An entry whose files do not match its marker (truncated, deleted) is
rebuilt. Features are stored float32 and unstandardised: statistics fitted on the training
set live in the checkpoint (trainer/features.py), so predict on new data only needs the
checkpoint. A cold store of a format that lists its videos (`trainer.data.list_sides`) reads
and featurises them one at a time (`stream_featurise`). Windows are read with `os.pread`
(no memory map): a process's memory stays flat however large the store is, and the OS page
cache does the caching.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from trainer.data.recording import DataError, Recording
from trainer.features import FeaturePipeline

log = logging.getLogger("trainer.store")

STORE_VERSION = 1  # layout version: part of every key
SPLIT_KEYS = ("val_fraction", "split", "num_folds", "fold", "split_seed")  # choose videos, do not change them
KEYPOINT_SPLITS = ("by_time",)  # splits that slice keypoints into new recordings: featurised after splitting
OFF = ("none", "off", "false", "")  # feature_store values that mean: in memory (YAML reads off as false)


# ----------------------------------------------------------------------------- keys


def digest(obj) -> str:
    """sha256 (hex, 40 chars) of `obj` as canonical JSON."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:40]


def content_hash(rec: Recording) -> str:
    """Hash of everything in a recording that features depend on (keypoints, fps, body parts, pairs)."""
    h = hashlib.sha256(np.ascontiguousarray(rec.keypoints, dtype=np.float32).tobytes())
    h.update(json.dumps([float(rec.fps), list(rec.bodyparts), [list(p) for p in rec.pairs],
                         list(rec.keypoints.shape)]).encode())
    return h.hexdigest()[:40]


def feature_key(content: str, spec: dict) -> str:
    return digest({"store": STORE_VERSION, "content": content, "spec": spec})


def _file_identity(path: Path) -> list:
    st = path.stat()
    return [str(path), st.st_size, st.st_mtime_ns]


def source_identity(path: str) -> list:
    """(path, size, mtime) of `path` or of every file below it; [] for an empty path."""
    if not path:
        return []
    p = Path(path).expanduser().resolve()
    if p.is_file():
        return [_file_identity(p)]
    if p.is_dir():
        return [_file_identity(f) for f in sorted(p.rglob("*")) if f.is_file()]
    return [[str(p), "missing"]]  # the reader reports it; the key just must not collide


def dataset_identity(cfg) -> dict:
    """Everything that decides which videos, keypoints and labels `load_splits(cfg)` produces."""
    d = dataclasses.asdict(cfg.data)
    for k in SPLIT_KEYS:
        d.pop(k, None)
    sources = []
    if cfg.data.format != "synthetic":
        for p in (cfg.data.path or cfg.train_data_dir, cfg.data.val_path or cfg.val_data_dir, cfg.data.annotation_path):
            sources.append(source_identity(p))
        for pair in cfg.data.annotation_pairs or []:
            sources += [source_identity(str(x)) for x in pair]
    return {"store": STORE_VERSION, "data": d, "fps": cfg.fps, "train_data_dir": cfg.train_data_dir,
            "val_data_dir": cfg.val_data_dir, "sources": sources}


# ----------------------------------------------------------------------------- reading rows


class OpenFiles:
    """Read-only descriptors of stored x.npy files, shared by every pair of a video, at most
    `limit` open per process (least recently used closed first).

    One descriptor per (video, pair) would hold tens of thousands open on a large data set
    (the usual limit is 1024). A forked DataLoader worker starts with an empty table: it
    never uses its parent's descriptors.
    """

    def __init__(self, limit: int = 256):
        self.limit = limit
        self._fds: dict[str, int] = {}  # path -> fd, in least- to most-recently used order
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def pread(self, path: str, n: int, offset: int) -> bytes:
        """`n` bytes of `path` from `offset` (under the lock: another thread cannot close the
        descriptor between finding and reading it)."""
        with self._lock:
            if self._pid != os.getpid():  # forked: the inherited descriptors are the parent's
                self._fds, self._pid = {}, os.getpid()
            fd = self._fds.pop(path, None)
            if fd is None:
                fd = os.open(path, os.O_RDONLY)
                while len(self._fds) >= self.limit:
                    os.close(self._fds.pop(next(iter(self._fds))))
            self._fds[path] = fd
            return os.pread(fd, n, offset)

    def __len__(self) -> int:
        return len(self._fds)


OPEN_FILES = OpenFiles()


class PairRows:
    """Rows of pair `pair` of a stored x.npy, read on demand with os.pread.

    Indexing like a (T, F_raw) array: x[a:b], x[int_array], x[rows, cols]. Integer arrays
    read the byte range min..max once (training windows are contiguous runs).
    """

    def __init__(self, path: Path, pair: int, shape: tuple[int, int, int], offset: int):
        self.path, self.pair, self.offset = str(path), int(pair), int(offset)
        _, self.T, self.F = (int(v) for v in shape)

    def __len__(self) -> int:
        return self.T

    @property
    def shape(self) -> tuple[int, int]:
        return (self.T, self.F)

    def _read(self, lo: int, hi: int) -> np.ndarray:
        row = self.F * 4
        start = self.offset + (self.pair * self.T + lo) * row
        n = (hi - lo) * row
        buf = OPEN_FILES.pread(self.path, n, start)
        if len(buf) != n:
            raise DataError(f"{self.path}: truncated feature store entry; run `python -m trainer.featurize` "
                            "again (it rebuilds damaged entries)")
        return np.frombuffer(buf, dtype=np.float32).reshape(hi - lo, self.F)

    def __getitem__(self, key):
        rows, cols = key if isinstance(key, tuple) else (key, slice(None))
        if isinstance(rows, slice):
            lo, hi, step = rows.indices(self.T)
            block = self._read(lo, max(lo, hi))[::step] if step > 0 else self._read(0, self.T)[rows]
        else:
            idx = np.asarray(rows, dtype=np.int64)
            if idx.size == 0:
                return np.zeros((0, self.F), np.float32)[:, cols]
            lo, hi = int(idx.min()), int(idx.max()) + 1
            block = self._read(lo, hi)[idx - lo]
        return block[:, cols]

    def __array__(self, dtype=None, copy=None):
        out = self._read(0, self.T)
        return out.astype(dtype) if dtype is not None else out



class FeatureRows:
    """(T, F) model-input features of one sequence, finished on read from stored rows.

    Behaves like an array for `x[idx]`, `len(x)`, `np.asarray(x)`: each read applies
    `finish` (PCA projection, standardisation) to just the rows asked for.
    """

    def __init__(self, raw, finish):
        self.raw, self.finish = raw, finish

    def __len__(self) -> int:
        return len(self.raw)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.raw), self.finish(np.atleast_2d(self.raw[:1])).shape[1])

    def __getitem__(self, idx):
        rows, cols = idx if isinstance(idx, tuple) else (idx, slice(None))
        out = self.finish(np.atleast_2d(self.raw[rows]))
        return out[:, cols]

    def __array__(self, dtype=None, copy=None):
        out = self.finish(np.asarray(self.raw[:]))
        return out.astype(dtype) if dtype is not None else out


# ----------------------------------------------------------------------------- videos without keypoints


def compact_labels(labels: np.ndarray | None) -> np.ndarray | None:
    """(T, P) class indices (-1 unlabelled) in the smallest integer type that holds them.

    Training keeps every video's labels in memory (windows convert theirs to int64): int8
    instead of int64 is what keeps `train()`'s memory flat at 16x the videos (400 videos x
    3000 frames x 12 pairs: 14 MB instead of 115 MB).
    """
    if labels is None:
        return None
    labels = np.asarray(labels)
    for dtype in (np.int8, np.int16):
        info = np.iinfo(dtype)
        if labels.size == 0 or (labels.min() >= info.min and labels.max() <= info.max):
            return labels.astype(dtype)
    return labels


@dataclass
class StoredVideo:
    """What training needs of a video once its features are stored: labels and metadata only.

    Has the Recording attributes splits and sequences use (video_id, meta, labels, pairs,
    class_names, label_mask, fps, bodyparts, mouse_ids); no keypoints.
    """

    video_id: str
    fps: float
    mouse_ids: list[str]
    bodyparts: list[str]
    pairs: list[tuple[int, int]]
    class_names: list[str]
    num_frames: int
    content: str
    labels: np.ndarray | None = None
    label_mask: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    @classmethod
    def of(cls, rec: Recording, content: str | None = None) -> StoredVideo:
        return cls(rec.video_id, float(rec.fps), list(rec.mouse_ids), list(rec.bodyparts),
                   [tuple(p) for p in rec.pairs], list(rec.class_names), rec.num_frames,
                   content if content is not None else content_hash(rec),  # "": no store, no hash
                   compact_labels(rec.labels), rec.label_mask, dict(rec.meta))

    def info(self) -> dict:
        return {"video_id": self.video_id, "fps": self.fps, "mouse_ids": self.mouse_ids, "bodyparts": self.bodyparts,
                "pairs": [list(p) for p in self.pairs], "class_names": self.class_names,
                "num_frames": self.num_frames, "content": self.content, "has_labels": self.labels is not None,
                "label_mask": None if self.label_mask is None else np.asarray(self.label_mask).tolist(),
                "meta": json.loads(json.dumps(self.meta, default=str))}


# ----------------------------------------------------------------------------- the store


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_npy(path: Path, shape: tuple[int, int, int], blocks) -> None:
    """A float32 .npy of `shape` written block by block (each `blocks` item: one (T, F) pair),
    appended in order and fsynced: the same bytes as filling np.lib.format.open_memmap, at
    about half the cost (no page faults on a fresh mapping, no second pass to flush it)."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                                                 "fortran_order": False, "shape": tuple(shape)})
        n = 0
        for block in blocks:
            block = np.ascontiguousarray(block, dtype=np.float32)
            if block.shape != tuple(shape[1:]):
                raise ValueError(f"{path}: pair block {block.shape}, expected {tuple(shape[1:])}")
            f.write(block.data)
            n += 1
        if n != shape[0]:
            raise ValueError(f"{path}: {n} pair blocks written, expected {shape[0]}")
        f.flush()
        os.fsync(f.fileno())


def _npy_offset(path: Path) -> tuple[tuple, int]:
    """(shape, byte offset of the data) of a .npy file."""
    m = np.load(path, mmap_mode="r")
    shape, offset = m.shape, m.offset
    del m
    return shape, offset


def _build_entry(root: str, key: str, rec: Recording, spec: dict) -> str:
    """Pool task: featurise `rec` into entry `key` (top level so it pickles)."""
    store = FeatureStore(root, create=False)
    pipeline = FeaturePipeline(spec["names"], bodyparts=spec["bodyparts"], params=spec["params"])
    store.write_features(key, rec, pipeline)
    return key


class FeatureStore:
    def __init__(self, root: str | Path, *, create: bool = True):
        self.root = Path(root).expanduser()
        if self.root.exists() and not self.root.is_dir():
            raise DataError(f"config key 'feature_store': '{self.root}' is not a directory; "
                            "point it at a directory (it is created) or set feature_store=none")
        if create:
            self.create()
        self.hits = self.misses = 0

    def create(self) -> None:
        """Make the store's directories (before the first write)."""
        try:
            (self.root / "features").mkdir(parents=True, exist_ok=True)
            (self.root / "datasets").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise self._error("cannot create", e) from None

    def _error(self, what: str, e: OSError) -> DataError:
        why = {errno.ENOSPC: "no space left on the device", errno.EACCES: "permission denied",
               errno.EROFS: "read-only file system", errno.EDQUOT: "disk quota exceeded"}.get(e.errno, str(e))
        return DataError(f"feature store '{self.root}': {what} ({why}); free space, fix permissions or set "
                         "feature_store=<writable dir> (feature_store=none computes features in memory)")

    # -- feature entries
    def entry(self, key: str) -> Path:
        return self.root / "features" / key[:2] / key

    def valid(self, key: str) -> bool:
        """True when entry `key` is complete: marker present and every file has its recorded size."""
        d = self.entry(key)
        try:
            done = json.loads((d / "DONE.json").read_text())
            return all((d / f).stat().st_size == size for f, size in done["files"].items())
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def rows(self, key: str) -> list[PairRows]:
        """Per pair a (T, F_raw) row reader of entry `key`."""
        path = self.entry(key) / "x.npy"
        shape, offset = _npy_offset(path)
        return [PairRows(path, p, shape, offset) for p in range(shape[0])]

    def _tmp(self, where: Path) -> Path:
        tmp = where.parent / f".tmp-{where.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        return tmp

    def _publish(self, tmp: Path, final: Path) -> None:
        """Rename `tmp` to `final`; a complete `final` written meanwhile by someone else wins."""
        for _ in range(3):
            try:
                os.rename(tmp, final)
                _fsync_dir(final.parent)
                return
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                if (final / "DONE.json").exists() or (final / "manifest.json").exists():
                    if final.parent.name == "datasets" or self.valid(final.name):
                        shutil.rmtree(tmp, ignore_errors=True)  # a concurrent writer finished first
                        return
                trash = final.parent / f".trash-{final.name}-{uuid.uuid4().hex[:8]}"
                try:
                    os.rename(final, trash)  # damaged entry: move aside, then take its place
                except FileNotFoundError:
                    pass
                shutil.rmtree(trash, ignore_errors=True)
        raise DataError(f"feature store '{self.root}': could not publish {final.name}; retry")

    def write_features(self, key: str, rec: Recording, pipeline: FeaturePipeline) -> None:
        """Featurise `rec` pair by pair into entry `key` (memory: one pair's features)."""
        final = self.entry(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._tmp(final)
        try:
            shape = (len(rec.pairs), rec.num_frames, pipeline.raw_dim)
            write_npy(tmp / "x.npy", shape, pipeline.raw(rec))
            done = {"files": {"x.npy": (tmp / "x.npy").stat().st_size}, "shape": list(shape), "dtype": "float32",
                    "video_id": rec.video_id, "spec": pipeline.spec(), "created": time.time()}
            (tmp / "DONE.json").write_text(json.dumps(done))
            self._publish(tmp, final)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise self._error(f"cannot write features of {rec.video_id}", e) from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def ensure(self, recs: list[Recording], pipeline: FeaturePipeline, *, workers: int = 0,
               contents: list[str] | None = None) -> list[str]:
        """Feature keys of `recs`, featurising (in `workers` processes) those not stored yet."""
        self.create()
        spec = pipeline.spec()
        contents = contents or [content_hash(r) for r in recs]
        keys = [feature_key(c, spec) for c in contents]
        todo = {k: r for k, r in zip(keys, recs) if not self.valid(k)}
        self.hits += len(keys) - len(todo)
        self.misses += len(todo)
        if todo:
            for r in todo.values():
                pipeline.check_skeleton(r)
            t0 = time.perf_counter()
            n = min(resolve_workers(workers), len(todo))
            if threading.active_count() > 1:
                n = 1  # forking a multi-threaded process (Ray/Modal workers) can deadlock: featurise here
            if n <= 1:
                for k, r in todo.items():
                    self.write_features(k, r, pipeline)
            else:
                # fork: workers start in milliseconds and only run numpy (spawn would re-import
                # the caller's main module, torch included, in every worker)
                with ProcessPoolExecutor(n, mp_context=get_context("fork")) as pool:
                    list(pool.map(_build_entry, [str(self.root)] * len(todo), list(todo), list(todo.values()),
                                  [spec] * len(todo)))
            log.info("feature store %s: featurised %d video(s) in %.1f s (%d worker(s)); %d reused",
                     self.root, len(todo), time.perf_counter() - t0, n, len(keys) - len(todo))
        self.log_event(len(keys) - len(todo), len(todo))
        return keys

    def log_event(self, hits: int, misses: int) -> None:
        try:
            with open(self.root / "events.jsonl", "a") as f:
                f.write(json.dumps({"time": time.time(), "pid": os.getpid(), "hits": hits, "misses": misses}) + "\n")
        except OSError:
            pass  # a read-only store can still be read

    # -- fitted statistics (PCA, mean/std) of one training set: sweeps and repeated runs skip the fit pass
    def read_fit(self, key: str) -> dict | None:
        try:
            return json.loads((self.root / "fits" / f"{key}.json").read_text())
        except (OSError, ValueError):
            return None

    def write_fit(self, key: str, state: dict) -> None:
        path = self.root / "fits" / f"{key}.json"
        try:
            path.parent.mkdir(exist_ok=True)
            tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            tmp.write_text(json.dumps(state))
            os.replace(tmp, path)
        except OSError:
            pass  # an optimisation only: a read-only store still trains

    # -- data-set manifests
    def dataset(self, dkey: str) -> Path:
        return self.root / "datasets" / dkey

    def read_dataset(self, dkey: str) -> tuple[list[StoredVideo], int | None] | None:
        """(videos, number of train-side videos or None) of manifest `dkey`; None if absent/damaged."""
        d = self.dataset(dkey)
        try:
            man = json.loads((d / "manifest.json").read_text())
            videos = []
            for i, v in enumerate(man["videos"]):
                labels = None
                if v["has_labels"]:
                    path = d / f"labels_{i}.npy"
                    if path.stat().st_size != man["label_sizes"][i]:
                        return None
                    labels = compact_labels(np.load(path))
                mask = None if v["label_mask"] is None else np.asarray(v["label_mask"], dtype=bool)
                videos.append(StoredVideo(v["video_id"], v["fps"], v["mouse_ids"], v["bodyparts"],
                                          [tuple(p) for p in v["pairs"]], v["class_names"], v["num_frames"],
                                          v["content"], labels, mask, v["meta"]))
            return videos, man["num_train"]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write_dataset(self, dkey: str, videos: list[StoredVideo], num_train: int | None) -> None:
        writer = DatasetWriter(self, dkey)
        for v in videos:
            writer.add(v)
        writer.finish(num_train)

    # -- listing and pruning
    def listing(self) -> list[dict]:
        """One dict per entry: kind, key, video, bytes, complete, age (s)."""
        out, now = [], time.time()
        for kind, pattern in (("features", "features/*/*"), ("dataset", "datasets/*")):
            for d in sorted(self.root.glob(pattern)):
                if not d.is_dir():
                    continue
                size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
                partial = d.name.startswith((".tmp-", ".trash-"))
                complete = not partial and (self.valid(d.name) if kind == "features" else
                                            (d / "manifest.json").exists())
                video = ""
                if kind == "features" and complete:
                    video = json.loads((d / "DONE.json").read_text()).get("video_id", "")
                elif kind == "dataset" and complete:
                    video = f"{len(json.loads((d / 'manifest.json').read_text())['videos'])} videos"
                out.append({"kind": kind, "key": d.name, "video": video, "bytes": size, "complete": complete,
                            "age_s": now - d.stat().st_mtime, "path": str(d)})
        return out

    def prune(self, *, older_than_s: float | None = None, everything: bool = False,
              min_age_partial_s: float = 3600.0) -> list[dict]:
        """Delete incomplete entries (left by killed writers, older than `min_age_partial_s`),
        entries older than `older_than_s`, or `everything`. Returns what was deleted."""
        gone = []
        for e in self.listing():
            old = older_than_s is not None and e["age_s"] > older_than_s
            stale_partial = not e["complete"] and e["age_s"] > min_age_partial_s
            if everything or old or stale_partial:
                shutil.rmtree(e["path"], ignore_errors=True)
                gone.append(e)
        return gone


class DatasetWriter:
    """Writes manifest `dkey` video by video: each video's labels go to disk as it arrives
    (`add` returns them compacted to int8, as a warm run reads them: 1 byte per pair-frame
    instead of 8), the manifest last (`finish`). Everything lives in a private temporary
    directory until `finish` renames it into place; `discard` (or a failed write) removes it."""

    def __init__(self, store: FeatureStore, dkey: str):
        self.store, self.final = store, store.dataset(dkey)
        try:
            self.tmp = store._tmp(self.final)
        except OSError as e:
            raise store._error("cannot write the data-set manifest", e) from None
        self.infos: list[dict] = []
        self.sizes: list[int] = []

    def add(self, v: StoredVideo) -> np.ndarray | None:
        """Write the labels of `v` (the next video); returns them compacted (compact_labels), or None."""
        path = self.tmp / f"labels_{len(self.infos)}.npy"
        try:
            out = None
            if v.labels is not None:
                np.save(path, np.asarray(v.labels, dtype=np.int64))
                out = v.labels  # already compact (StoredVideo.of)
            self.sizes.append(path.stat().st_size if v.labels is not None else 0)
        except OSError as e:
            self.discard()
            raise self.store._error("cannot write the data-set manifest", e) from None
        self.infos.append(v.info())
        return out

    def finish(self, num_train: int | None) -> None:
        man = {"videos": self.infos, "num_train": num_train, "label_sizes": self.sizes, "created": time.time()}
        try:
            (self.tmp / "manifest.json").write_text(json.dumps(man))
            self.store._publish(self.tmp, self.final)
        except OSError as e:
            self.discard()
            raise self.store._error("cannot write the data-set manifest", e) from None

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def resolve_workers(n: int) -> int:
    """featurize_workers: 0 = the CPUs this process may use."""
    if n > 0:
        return n
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def store_root(cfg) -> Path | None:
    """The configured store directory, or None when feature_store=none."""
    s = str(cfg.feature_store).strip()
    if s.lower() in OFF:
        return None
    return Path(cfg.output_dir) / "feature_store" if s == "auto" else Path(s)


def open_store(cfg, *, create: bool = True) -> FeatureStore | None:
    """The configured store, or None (feature_store=none); create=False: its directories are made
    at the first write (a run that fails reading its data leaves nothing behind)."""
    root = store_root(cfg)
    return FeatureStore(root, create=create) if root is not None else None


# ----------------------------------------------------------------------------- data for training


@dataclass
class Featurised:
    """Videos split into train/val with their stored (unstandardised) features.

    rows[video_id]: per pair a (T, F_raw) float32 row source (PairRows from the store, or an
    in-memory array when feature_store=none). `pipeline` is not fitted yet.
    """

    train: list[StoredVideo]
    val: list[StoredVideo]
    rows: dict
    pipeline: FeaturePipeline
    store: FeatureStore | None

    def fit(self) -> FeaturePipeline:
        """Fit the pipeline on the training videos' stored rows (one streaming pass), or reuse the
        statistics the store kept for exactly these training videos and this feature spec."""
        from trainer import features

        key = None
        if self.store is not None and all(v.content for v in self.train):
            key = digest({"train": sorted(v.content for v in self.train), "spec": self.pipeline.spec(),
                          "pca_sample": features.PCA_SAMPLE, "chunk": features.FIT_CHUNK})
            state = self.store.read_fit(key)
            if state is not None:
                fitted = FeaturePipeline.from_state(state)
                self.pipeline.stats, self.pipeline.mean = fitted.stats, fitted.mean
                self.pipeline.std, self.pipeline.scale_mask = fitted.std, fitted.scale_mask
                return self.pipeline
        self.pipeline.fit([x for v in self.train for x in self.rows[v.video_id]])
        if key is not None:
            self.store.write_fit(key, self.pipeline.state_dict())
        return self.pipeline


def _pipeline(names: list[str], params: dict, bodyparts: list[str]) -> FeaturePipeline:
    return FeaturePipeline(names, bodyparts=list(bodyparts), params=params)


def featurise_recordings(recs: list[Recording], pipeline: FeaturePipeline, store: FeatureStore | None,
                         workers: int = 0, contents: list[str] | None = None) -> tuple[list[StoredVideo], list[list]]:
    """StoredVideos of `recs` and per video its per-pair feature rows, from the store (built
    where missing) or computed in memory when `store` is None. contents: content_hash of each
    recording when the caller has them."""
    if store is None:
        return [StoredVideo.of(r, content="") for r in recs], [list(pipeline.raw(r)) for r in recs]
    contents = contents or [content_hash(r) for r in recs]
    keys = store.ensure(recs, pipeline, workers=workers, contents=contents)
    return [StoredVideo.of(r, c) for r, c in zip(recs, contents)], [store.rows(k) for k in keys]


def _store_video(store: FeatureStore, pipeline: FeaturePipeline, rec: Recording) -> tuple[StoredVideo, bool]:
    """Featurise `rec` into `store` unless its entry is complete: (its StoredVideo, was it stored already)."""
    content = content_hash(rec)
    key = feature_key(content, pipeline.spec())
    hit = store.valid(key)
    if not hit:
        pipeline.check_skeleton(rec)
        store.write_features(key, rec, pipeline)
    return StoredVideo.of(rec, content), hit


def _stream_video(root: str, spec: dict, read, video) -> tuple[StoredVideo, bool]:
    """Pool task: read one listed video in this worker and store its features (top level so it pickles)."""
    pipeline = FeaturePipeline(spec["names"], bodyparts=spec["bodyparts"], params=spec["params"])
    return _store_video(FeatureStore(root, create=False), pipeline, read(video))


def stream_featurise(store: FeatureStore, videos: list, read, names: list[str], params: dict, workers: int = 0,
                     writer: DatasetWriter | None = None) -> tuple[list[StoredVideo], FeaturePipeline]:
    """Read, harmonise and featurise listed videos one at a time (`trainer.data.list_sides`):
    memory holds one video's keypoints per process, and only StoredVideos (labels, metadata)
    stay. The first video is read here (its body parts make the pipeline); with
    `workers` > 1 the others are read and featurised in a fork pool, each worker reading
    its own files. Same videos, order and entries as `featurise_recordings` on the list.
    writer: each video's labels are written to this manifest as it arrives and kept in RAM
    as compact ints (compact_labels)."""
    store.create()
    t0 = time.perf_counter()
    done: list[tuple[StoredVideo, bool]] = []

    def take(result: tuple[StoredVideo, bool]) -> None:
        if writer is not None:
            result[0].labels = writer.add(result[0])
        done.append(result)

    first = read(videos[0])
    pipeline = _pipeline(names, params, first.bodyparts)
    take(_store_video(store, pipeline, first))
    del first
    n = min(resolve_workers(workers), len(videos) - 1)
    if threading.active_count() > 1:
        n = 1  # forking a multi-threaded process (Ray/Modal workers) can deadlock: featurise here
    if n <= 1:
        for v in videos[1:]:
            take(_store_video(store, pipeline, read(v)))  # the recording is freed when the call returns
    else:
        rest = videos[1:]
        pool = ProcessPoolExecutor(n, mp_context=get_context("fork"))
        try:
            for result in pool.map(_stream_video, [str(store.root)] * len(rest), [pipeline.spec()] * len(rest),
                                   [read] * len(rest), rest):
                take(result)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # a failed video stops the queue, not after every video
    hits = sum(hit for _, hit in done)
    store.hits += hits
    store.misses += len(done) - hits
    log.info("feature store %s: read and featurised %d video(s) one at a time in %.1f s (%d worker(s)); %d reused",
             store.root, len(done) - hits, time.perf_counter() - t0, max(n, 1), hits)
    store.log_event(hits, len(done) - hits)
    return [v for v, _ in done], pipeline


def _warm(store: FeatureStore, dkey: str, names, params):
    """(videos, num_train, rows, pipeline) from a complete manifest and complete entries, else None."""
    found = store.read_dataset(dkey)
    if found is None or not found[0]:
        return None
    videos, num_train = found
    pipeline = _pipeline(names, params, videos[0].bodyparts)
    if any(list(v.bodyparts) != pipeline.bodyparts for v in videos):
        return None  # mixed skeletons: let the reading path raise its error
    keys = [feature_key(v.content, pipeline.spec()) for v in videos]
    if not all(store.valid(k) for k in keys):
        return None
    store.hits += len(keys)
    store.log_event(len(keys), 0)
    return videos, num_train, {v.video_id: store.rows(k) for v, k in zip(videos, keys)}, pipeline


def stream_sides(cfg, store: FeatureStore, names: list[str], params: dict, *, indices: list[int] | None = None,
                 dkey: str | None = None) -> tuple[list[StoredVideo], int | None, FeaturePipeline] | None:
    """The configured videos (`read_sides`) featurised one at a time into `store`:
    (videos, num_train, pipeline), or None when the format cannot list its videos or its
    listing announced the wrong body parts (the caller then reads them all). indices: only
    these positions of the data set (a Modal container's share). dkey: also write the
    data-set manifest `dkey`, labels video by video (the videos keep theirs as compact ints)."""
    from trainer.data import ListingMismatch, list_sides

    listed = list_sides(cfg)
    if listed is None:
        return None
    videos, num_train, read = listed
    if indices is not None:
        videos = [videos[i] for i in indices]
    store.create()
    writer = DatasetWriter(store, dkey) if dkey is not None else None
    try:
        stored, pipeline = stream_featurise(store, videos, read, names, params, cfg.featurize_workers, writer)
    except ListingMismatch as e:
        if writer is not None:
            writer.discard()
        log.info("%s; reading every video before harmonising", e)
        return None
    except BaseException:
        if writer is not None:
            writer.discard()
        raise
    if writer is not None:
        writer.finish(num_train)
    return stored, num_train, pipeline


def featurised_splits(cfg, *, names: list[str], params: dict, recordings=None) -> Featurised:
    """Train/val videos of `cfg` with their features, reading the data only when the store lacks them.

    recordings: optional (train, val) lists of Recording (skips reading and splitting).
    Warm store: no reader runs at all; labels come from the data-set manifest.
    """
    from trainer.data import load_splits, read_sides, split_videos

    store = open_store(cfg, create=False)
    workers = cfg.featurize_workers
    if recordings is None and cfg.data.split in KEYPOINT_SPLITS and not (cfg.data.val_path or cfg.val_data_dir):
        # these splits cut keypoints (StoredVideo has none): split in memory, then store the pieces by content
        recordings = load_splits(cfg)
    if recordings is not None:
        train, val = recordings
        if not train or not val:
            raise DataError("empty data: need at least one training and one validation video")
        pipeline = _pipeline(names, params, train[0].bodyparts)
        videos, rows = featurise_recordings(list(train) + list(val), pipeline, store, workers)
        rows = {v.video_id: r for v, r in zip(videos, rows)}
        return Featurised(videos[: len(train)], videos[len(train):], rows, pipeline, store)
    dkey = digest(dataset_identity(cfg))
    warm = _warm(store, dkey, names, params) if store is not None else None
    if warm is not None:
        videos, num_train, rows, pipeline = warm
        log.info("feature store %s: %d videos reused, nothing read", store.root, len(videos))
    else:
        streamed = stream_sides(cfg, store, names, params, dkey=dkey) if store is not None else None
        if streamed is not None:  # one video at a time; the manifest is written
            videos, num_train, pipeline = streamed
            spec = pipeline.spec()
            rows = {v.video_id: store.rows(feature_key(v.content, spec)) for v in videos}
        else:
            recs, num_train = read_sides(cfg)
            pipeline = _pipeline(names, params, recs[0].bodyparts)
            videos, rows = featurise_recordings(recs, pipeline, store, workers)
            rows = {v.video_id: r for v, r in zip(videos, rows)}
            del recs
            if store is not None:
                store.write_dataset(dkey, videos, num_train)
    train, val = split_videos(videos, num_train, cfg)
    return Featurised(train, val, rows, pipeline, store)


def featurised_ahead(cfg, *, names: list[str], params: dict) -> Featurised:
    """Build the store ahead of training (`python -m trainer.featurize`, sweeps before their trials).

    Plain configs: featurised_splits. Cross-validation (data.fold=-1), by_time slices and
    mirror_pairs: the recordings training will featurise - every fold's, sliced or mirrored -
    keyed by content exactly as their train() calls key them, all returned as train (val empty).
    """
    from trainer.data import load_recordings, load_splits, split_recordings
    from trainer.data.recording import mirror_pairs

    if cfg.data.fold != -1 and not cfg.mirror_pairs and cfg.data.split not in KEYPOINT_SPLITS:
        return featurised_splits(cfg, names=names, params=params)
    if cfg.data.fold == -1:
        recs = load_recordings(cfg)
        sides = [split_recordings(recs, cfg, fold=i) for i in range(cfg.data.num_folds)]
    else:
        sides = [load_splits(cfg)]
    pieces: dict[tuple[str, str], Recording] = {}
    seen: dict[tuple[int, bool], tuple[tuple[str, str], Recording]] = {}  # folds share recording objects:
    for train, val in sides:                                             # mirror and hash each once
        for r, mirror in [(r, cfg.mirror_pairs) for r in train] + [(r, False) for r in val]:
            if (id(r), mirror) not in seen:
                piece = mirror_pairs(r) if mirror else r
                seen[id(r), mirror] = ((piece.video_id, content_hash(piece)), piece)
            key, piece = seen[id(r), mirror]
            pieces.setdefault(key, piece)
    if not pieces:
        raise DataError("empty data: no videos to featurise")
    recs = list(pieces.values())
    store = open_store(cfg)
    pipeline = _pipeline(names, params, recs[0].bodyparts)
    videos, rows = featurise_recordings(recs, pipeline, store, cfg.featurize_workers, contents=[c for _, c in pieces])
    return Featurised(videos, [], {v.video_id: r for v, r in zip(videos, rows)}, pipeline, store)
