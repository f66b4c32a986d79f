"""MABe 2025 (Kaggle "Social Action Recognition in Mice") reader.

Layout (train; the test layout has `test.csv` + `test_tracking/` and no annotations):

    <root>/train.csv                                   one row per video
    <root>/train_tracking/<lab_id>/<video_id>.parquet  video_frame, mouse_id, bodypart, x, y
    <root>/train_annotation/<lab_id>/<video_id>.parquet agent_id, target_id, action,
                                                        start_frame, stop_frame (stop exclusive)

`data.path` may be the root, the csv itself, or one tracking parquet (its row is looked up
in `<root>/<split>.csv`). Samples are ordered (agent, target) pairs including self
(target == agent). Only the triples of a video's `behaviors_labeled` were annotated:
`label_mask[p, c]` is True exactly for those (plus the background of every pair that has
any), every frame of a pair without any labelled action is -1, and the loss/metric must
ignore masked classes instead of counting them as negatives. Train videos without any
`behaviors_labeled` (unannotated extra data) are skipped with a log line.

Tracking is pivoted with numpy indexing (no loop over rows); one video is read at a time,
so a lab is never held in memory twice. `list_mabe25` lists the videos from the csv alone
(`MabeVideo.read()` reads one), so a cold feature store never holds every video at once.
The competition's grammar (triples, ids, `self`) and the scorer's solution table live in
trainer/kaggle_mabe.py.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from trainer.data.common import (
    check_fps,
    check_frame_count,
    check_tracking,
    class_list,
    clip_intervals,
    paint_pair,
)
from trainer.data.recording import UNLABELLED, DataError, Recording
from trainer.kaggle_mabe import ANNOTATION_COLUMNS, mouse_number, parse_behaviors_labeled, triple_text

log = logging.getLogger(__name__)

TRACKING_COLUMNS = ["video_frame", "mouse_id", "bodypart", "x", "y"]
VIDEO_COLUMNS = ["lab_id", "video_id", "frames_per_second"]


def read_mabe25(path: str, *, data, fps: float) -> list[Recording]:
    """Read a MABe-2025 train or test layout into one Recording per video.

    Args:
        path: dataset root, `train.csv`/`test.csv`, or one `*_tracking/<lab>/<video>.parquet`.
        data: DataConfig (uses background_class, behaviors, labs). An explicit
            `data.behaviors` selects actions: other whitelisted actions and their bouts are
            ignored (logged), so a model can be trained on (or predict) a subset.
        fps: ignored; every video's fps comes from the csv (`frames_per_second`).

    Returns:
        Recordings with keypoints (T, M, B, 2) pixels (T = last tracked frame + 1, frames
        missing for a mouse are NaN), mouse_ids "mouse<N>", pairs (agent, target) of the
        video's `behaviors_labeled` (all ordered pairs incl. self when it has none), labels
        (T, P) or None (test), label_mask (P, C), and meta lab_id, pix_per_cm,
        behaviors_labeled (canonical "mouseA,mouseB|self,action" strings), intervals
        (the raw annotation table, clipped, for the official score).
    """
    videos = list_mabe25(path, data=data, fps=fps)
    recs = [v.read() for v in videos]
    log.info("mabe25: read %d video(s) of %d lab(s) from %s", len(recs),
             pd.Series([v.row["lab_id"] for v in videos]).nunique(), videos[0].csv_path)
    return recs


@dataclass
class MabeVideo:
    """One row of train.csv/test.csv, ready to be read on its own (`read()`); pickles, so a
    process pool can read and featurise videos in its workers.

    row: the csv row (column -> value, as `itertuples` gives it); whitelist: its
    (agent, target, action) triples of the chosen actions; classes: the class list of the
    whole file (the same for every video).
    """

    row: dict
    root: Path
    split: str
    csv_path: Path
    whitelist: list
    classes: list[str]
    annotated: bool

    @property
    def video_id(self) -> str:
        return str(self.row["video_id"])

    @property
    def bodyparts(self) -> list[str] | None:
        """Body parts as `read()` will return them when the tracking holds exactly the parts of
        `body_parts_tracked` (the usual case); None when the csv does not say."""
        text = self.row.get("body_parts_tracked")
        if not isinstance(text, str) or not text.strip():
            return None
        try:
            parts = json.loads(text)
        except json.JSONDecodeError:
            return None  # read() reports it
        return [str(b) for b in parts] if isinstance(parts, list) else None

    def read(self) -> Recording:
        """This video's Recording (reads its tracking and annotation parquets)."""
        return _read_video(SimpleNamespace(**self.row), self.root, self.split, self.csv_path, self.whitelist,
                           self.classes, self.annotated)


def list_mabe25(path: str, *, data, fps: float) -> list[MabeVideo]:
    """The videos `read_mabe25` returns, in its order, without reading any parquet (only the
    csv): class list, whitelists, lab filter and skipped videos are decided here."""
    root, split, csv_path, only_video = locate(path)
    table = read_video_table(csv_path)
    labs = [str(x) for x in getattr(data, "labs", []) or []]
    if labs:
        table = table[table["lab_id"].isin(labs)]
        if table.empty:
            raise DataError(f"{csv_path}: no video of data.labs={labs} in this file")
    if only_video is not None:
        table = table[table["video_id"] == only_video]
        if table.empty:
            raise DataError(f"{csv_path}: video '{only_video}' has no row in this file")
    whitelists = {
        row.video_id: parse_behaviors_labeled(row.behaviors_labeled, source=f"{csv_path} video {row.video_id}")
        for row in table.itertuples(index=False)
    }
    actions = {a for wl in whitelists.values() for _, _, a in wl}
    classes = class_list(actions, behaviors=list(data.behaviors), background=data.background_class,
                         unlabelled=getattr(data, "unlabelled_behaviors", ()))
    if data.behaviors:
        # an explicit class list selects actions: the others are not modelled (never negatives either)
        dropped = sorted(actions - set(classes))
        if dropped:
            log.warning("mabe25: actions not in data.behaviors are ignored: %s", ", ".join(dropped))
        whitelists = {v: [tr for tr in wl if tr[2] in classes] for v, wl in whitelists.items()}
    annotated = split != "test"
    if annotated:
        keep = [bool(whitelists[v]) for v in table["video_id"]]
        skipped = len(table) - sum(keep)
        if skipped:
            log.info("mabe25: %d video(s) without behaviors_labeled (of the chosen actions) skipped", skipped)
        table = table[keep]
        if table.empty:
            raise DataError(f"{csv_path}: no video has behaviors_labeled (for data.behaviors), nothing to train on")
    return [MabeVideo(row._asdict(), root, split, csv_path, whitelists[row.video_id], classes, annotated)
            for row in table.itertuples(index=False)]


# --------------------------------------------------------------------------- layout


def locate(path: str | Path) -> tuple[Path, str, Path, str | None]:
    """(root, split, csv path, single video id or None) for a root, csv or tracking parquet."""
    p = Path(path)
    if not str(path) or not p.exists():
        raise DataError(f"{p}: no such file or directory (point data.path at the MABe-2025 root)")
    if p.is_file() and p.suffix == ".parquet":
        # <root>/<split>_tracking/<lab>/<video>.parquet
        m = re.fullmatch(r"(\w+)_tracking", p.parent.parent.name)
        if not m:
            raise DataError(f"{p}: a tracking file must sit in <root>/<split>_tracking/<lab_id>/")
        root, split = p.parent.parent.parent, m.group(1)
        csv_path = root / f"{split}.csv"
        if not csv_path.is_file():
            raise DataError(f"{p}: {csv_path} (one row per video: fps, behaviors_labeled) not found")
        return root, split, csv_path, p.stem
    if p.is_file():
        if p.suffix != ".csv":
            raise DataError(f"{p}: expected the MABe-2025 root, train.csv/test.csv or a tracking .parquet")
        return p.parent, p.stem, p, None
    for split in ("train", "test"):
        if (p / f"{split}.csv").is_file() and (p / f"{split}_tracking").is_dir():
            return p, split, p / f"{split}.csv", None
    raise DataError(f"{p}: no train.csv + train_tracking/ (or test.csv + test_tracking/) in this directory")


def read_video_table(csv_path: Path) -> pd.DataFrame:
    """train.csv/test.csv with lab_id and video_id as strings; one-line errors for bad files."""
    try:
        table = pd.read_csv(csv_path, dtype={"lab_id": str, "video_id": str})
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise DataError(f"{csv_path}: cannot parse as CSV ({str(e).splitlines()[0]})") from None
    missing = [c for c in VIDEO_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"{csv_path}: missing column '{missing[0]}' (a MABe-2025 train.csv/test.csv needs {VIDEO_COLUMNS})")
    if table.empty:
        raise DataError(f"{csv_path}: no video rows")
    for col in ("behaviors_labeled", "body_parts_tracked", "pix_per_cm_approx"):
        if col not in table.columns:
            table[col] = None
    return table


# --------------------------------------------------------------------------- one video


def _float_or_none(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) and f > 0 else None


def _read_video(row, root, split, csv_path, whitelist, classes, annotated) -> Recording:
    vid, lab = str(row.video_id), str(row.lab_id)
    fps = _float_or_none(row.frames_per_second)
    if fps is None:
        raise DataError(f"{csv_path}: video {vid} has no valid frames_per_second ({row.frames_per_second!r})")
    check_fps(fps, source=f"{csv_path} video {vid}")
    track_file = root / f"{split}_tracking" / lab / f"{vid}.parquet"
    order = []
    if isinstance(row.body_parts_tracked, str) and row.body_parts_tracked.strip():
        try:
            order = [str(b) for b in json.loads(row.body_parts_tracked)]
        except json.JSONDecodeError:
            raise DataError(f"{csv_path}: video {vid}: body_parts_tracked is not a JSON list") from None
    kp, numbers, bodyparts = read_tracking(track_file, bodypart_order=order)
    mouse_ids = [f"mouse{n}" for n in numbers]
    check_tracking(kp, mouse_ids, source=track_file)
    T = kp.shape[0]
    for a, t, _ in whitelist:
        for n in (a, t):
            if n not in numbers:
                raise DataError(
                    f"{track_file}: behaviors_labeled names mouse{n} but the tracking has no rows for it "
                    f"(tracked: {', '.join(mouse_ids)}); fix {csv_path} or the tracking"
                )
    ann = None
    if annotated:
        ann_file = root / f"{split}_annotation" / lab / f"{vid}.parquet"
        ann = read_annotation(ann_file, T=T, numbers=set(numbers))
        full = ann  # the official score counts every annotated action, modelled or not
        unknown = ~ann["action"].isin(classes)
        if unknown.any():
            log.warning("%s: %d bout(s) of actions outside the class list ignored (e.g. %s)",
                        ann_file, int(unknown.sum()), ann["action"][unknown].iloc[0])
            ann = ann[~unknown].reset_index(drop=True)
        wl = set(whitelist)
        extra = [tr for tr in zip(ann["agent_id"], ann["target_id"], ann["action"], strict=True) if tr not in wl]
        if extra:
            # the bout was annotated, so the action is known for that pair: keep it as labelled
            log.warning(
                "%s: %d annotated bout(s) outside behaviors_labeled (e.g. %s); counted as labelled",
                ann_file, len(extra), triple_text(*extra[0]),
            )
    index = {n: i for i, n in enumerate(numbers)}
    ann_pairs = set() if ann is None else set(zip(ann["agent_id"], ann["target_id"], strict=True))
    pair_nums = sorted({(a, t) for a, t, _ in whitelist} | ann_pairs) or [(a, t) for a in numbers for t in numbers]
    pairs = [(index[a], index[t]) for a, t in pair_nums]
    mask = np.zeros((len(pairs), len(classes)), dtype=bool)
    pidx = {pn: p for p, pn in enumerate(pair_nums)}
    for a, t, act in whitelist:
        mask[pidx[(a, t)], classes.index(act)] = True
    meta = {
        "format": "mabe25",
        "lab_id": lab,
        "split": split,
        "pix_per_cm": _float_or_none(row.pix_per_cm_approx),
        "behaviors_labeled": [triple_text(a, t, act) for a, t, act in whitelist],
        "source": str(track_file),
    }
    for key in ("video_width_pix", "video_height_pix", "arena_width_cm", "arena_height_cm", "arena_shape"):
        if hasattr(row, key):
            meta[key] = getattr(row, key)
    labels = None
    if ann is not None:
        labels = np.empty((T, len(pairs)), dtype=np.int64)
        cls_idx = np.array([classes.index(a) for a in ann["action"]], dtype=np.int64)
        agents, targets = ann["agent_id"].to_numpy(), ann["target_id"].to_numpy()
        starts, stops = ann["start_frame"].to_numpy(), ann["stop_frame"].to_numpy()
        for p, (a, t) in enumerate(pair_nums):
            sel = np.flatnonzero((agents == a) & (targets == t))
            ivs = [(int(starts[i]), int(stops[i]), int(cls_idx[i])) for i in sel]
            mask[p, cls_idx[sel]] = True
            mask[p, 0] = mask[p, 1:].any()  # background is known wherever any action was labelled
            fill = 0 if mask[p, 0] else UNLABELLED
            labels[:, p] = paint_pair(T, ivs, fill=fill, source=ann_file, pair=f"mouse{a}->mouse{t}")
        meta["intervals"] = full
        meta["annotation_source"] = str(ann_file)
    else:
        mask[:, 0] = mask[:, 1:].any(axis=1)
    return Recording(
        video_id=vid,
        keypoints=kp,
        fps=fps,
        mouse_ids=mouse_ids,
        bodyparts=bodyparts,
        pairs=pairs,
        labels=labels,
        class_names=list(classes),
        meta=meta,
        label_mask=mask,
    )


def read_tracking(file: Path, *, bodypart_order: list[str] | None = None) -> tuple[np.ndarray, list[int], list[str]]:
    """Pivot one long-format tracking parquet into keypoints.

    Args:
        file: `<split>_tracking/<lab>/<video>.parquet` with columns video_frame, mouse_id,
            bodypart, x, y (pixels).
        bodypart_order: preferred body-part order (the csv's body_parts_tracked); parts in
            the file but not in the list follow in sorted order.

    Returns:
        (keypoints (T, M, B, 2) float32 with NaN where a mouse/part is missing in a frame,
        sorted mouse numbers (M,), body-part names (B,)).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not file.is_file():
        raise DataError(f"{file}: tracking file not found")
    try:
        names = pq.read_schema(file).names
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for corrupt files
        raise DataError(f"{file}: cannot read as parquet ({type(e).__name__}: {e})") from None
    missing = [c for c in TRACKING_COLUMNS if c not in names]
    if missing:
        raise DataError(f"{file}: missing column '{missing[0]}' (tracking needs {TRACKING_COLUMNS})")
    tab = pq.read_table(file, columns=TRACKING_COLUMNS, read_dictionary=["bodypart"])
    if tab.num_rows == 0:
        raise DataError(f"{file}: video has no frames (empty tracking table)")
    for col in ("video_frame", "x", "y"):  # text here would fail deep inside numpy
        tp = tab.schema.field(col).type
        if not (pa.types.is_integer(tp) or pa.types.is_floating(tp)):
            raise DataError(f"{file}: column '{col}' is not numeric ({tp}); it must hold numbers")
    frames = tab.column("video_frame").to_numpy(zero_copy_only=False)
    if not np.issubdtype(frames.dtype, np.integer):
        if np.isnan(frames).any() or (frames != np.round(frames)).any():
            raise DataError(f"{file}: video_frame holds non-integer values")
        frames = frames.astype(np.int64)
    if frames.min() < 0:
        raise DataError(f"{file}: negative video_frame {int(frames.min())}")
    mice_raw = tab.column("mouse_id").to_pandas()
    if pd.api.types.is_integer_dtype(mice_raw):
        mice_num = mice_raw.to_numpy()
    else:  # "mouse1" strings: map the few unique values, then index
        uniq = pd.unique(mice_raw)
        lut = {u: mouse_number(u, source=str(file)) for u in uniq}
        mice_num = mice_raw.map(lut).to_numpy()
    numbers, m_idx = np.unique(mice_num, return_inverse=True)
    bp = tab.column("bodypart").combine_chunks()
    bp_names = [str(s) for s in bp.dictionary.to_pylist()]
    codes = bp.indices.to_numpy(zero_copy_only=False)
    order = [b for b in (bodypart_order or []) if b in set(bp_names)]
    bodyparts = order + sorted(set(bp_names) - set(order))
    code_to_b = np.array([bodyparts.index(n) for n in bp_names], dtype=np.int64)
    b_idx = code_to_b[codes]
    _report_duplicates(file, frames, m_idx, b_idx, numbers, bodyparts)
    T = check_frame_count(int(frames.max()) + 1, source=file)
    kp = np.full((T, len(numbers), len(bodyparts), 2), np.nan, dtype=np.float32)
    kp[frames, m_idx, b_idx, 0] = tab.column("x").to_numpy(zero_copy_only=False)
    kp[frames, m_idx, b_idx, 1] = tab.column("y").to_numpy(zero_copy_only=False)
    return kp, [int(n) for n in numbers], bodyparts


def _report_duplicates(file, frames, m_idx, b_idx, numbers, bodyparts) -> None:
    """Warn when a (frame, mouse, body part) has several rows: only the last one is kept."""
    key = (frames.astype(np.int64) * len(numbers) + m_idx) * len(bodyparts) + b_idx
    uniq, first, counts = np.unique(key, return_index=True, return_counts=True)
    if (counts > 1).any():
        i = first[np.argmax(counts > 1)]
        log.warning("%s: %d duplicated tracking row(s) (e.g. frame %d, mouse%d, %s); the last row of each is used",
                    file, int((counts - 1).sum()), int(frames[i]), int(numbers[m_idx[i]]), bodyparts[b_idx[i]])


def read_annotation_table(file: Path) -> pd.DataFrame:
    """One annotation parquet as stored (ANNOTATION_COLUMNS checked, values untouched)."""
    try:
        ann = pd.read_parquet(file)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for corrupt files
        raise DataError(f"{file}: cannot read as parquet ({type(e).__name__}: {e})") from None
    missing = [c for c in ANNOTATION_COLUMNS if c not in ann.columns]
    if missing:
        raise DataError(f"{file}: missing column '{missing[0]}' (annotations need {ANNOTATION_COLUMNS})")
    return ann


def read_annotation(file: Path, *, T: int, numbers: set) -> pd.DataFrame:
    """One annotation parquet -> DataFrame(agent_id, target_id, action, start_frame, stop_frame).

    Ids are mouse numbers (int); intervals past the end of tracking (T frames) are clipped
    and reported; rows whose agent/target has no tracking are an error.
    """
    if not file.is_file():
        raise DataError(f"{file}: annotation file not found (the video has behaviors_labeled in the csv)")
    ann = read_annotation_table(file)[ANNOTATION_COLUMNS].copy()
    if ann.empty:
        return ann.astype({"agent_id": int, "target_id": int, "start_frame": int, "stop_frame": int})
    for col in ("agent_id", "target_id"):
        if pd.api.types.is_integer_dtype(ann[col]):
            ann[col] = ann[col].astype(np.int64)
        else:  # "mouse1" / "1" spellings; annotation tables are small, a comprehension is fine
            ann[col] = [mouse_number(v, source=str(file)) for v in ann[col]]
    ann["action"] = ann["action"].astype(str)
    for col in ("start_frame", "stop_frame"):
        v = pd.to_numeric(ann[col], errors="coerce")
        if v.isna().any():
            raise DataError(f"{file}: row {int(v.isna().to_numpy().argmax())}: {col} is not a number")
        ann[col] = v.astype(np.int64)
    bad = (ann["start_frame"] < 0) | (ann["stop_frame"] <= ann["start_frame"])
    if bad.any():
        i = int(bad.to_numpy().argmax())
        raise DataError(
            f"{file}: row {i}: interval [{ann['start_frame'].iat[i]}, {ann['stop_frame'].iat[i]}) "
            "is empty or negative (need 0 <= start_frame < stop_frame)"
        )
    for col in ("agent_id", "target_id"):
        unknown = set(ann[col].unique()) - numbers
        if unknown:
            raise DataError(f"{file}: {col} mouse{min(unknown)} has no tracking in this video")
    ivs = clip_intervals(
        list(zip(ann["start_frame"].tolist(), ann["stop_frame"].tolist(), range(len(ann)), strict=True)),
        T,
        source=file,
    )
    keep = [i for _, _, i in ivs]
    ann = ann.iloc[keep].copy()
    ann["stop_frame"] = [e for _, e, _ in ivs]
    return ann.reset_index(drop=True)
