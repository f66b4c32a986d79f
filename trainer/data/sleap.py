"""SLEAP project / prediction files, SLEAP analysis HDF5, NWB (ndx-pose) and JABS pose files.

`.slp`, analysis `.h5` and JABS files are read with `sleap-io` (the SLEAP team's IO
library; optional extra: `pip install -e ".[sleap]"`) into its `Labels` object, then turned
into Recordings here. NWB files are read with `pynwb` + `ndx-pose` (installed with
sleap-io) from their PoseEstimation containers, because sleap-io 0.9.5's `load_nwb` drops
the animal identities (its writer names containers `track=<name>`, its reader only keeps
tracks named `track<N>`) and the frame rate. Rules:

- Each video of a file is one recording (a SLEAP project may hold several videos). Its id
  is the video's file stem; when two recordings would share one, `<file stem>/<video stem>`.
  T = last frame with an instance + 1 (frames without one are NaN).
- Tracks are the animals (`Recording.mouse_ids` = track names, in the file's track order);
  a track with no instance in a video is left out of that video. Skeleton nodes are the
  body parts. Missing nodes are NaN.
- User-labelled and predicted instances of the same track on one frame: the user's wins.
  A user instance without a track takes the track of the prediction it was made from.
  Other instances without a track are dropped (counted in a warning), except in a file
  with no tracks at all and at most one instance per frame: that is one animal, `mouse1`.
  A file with no tracks and several animals on a frame is an error (identity unknown).
- `data.min_likelihood` turns predicted points with a lower score into NaN (user points
  have no score and are kept).
- fps: the video's frame rate stored in the file (`.slp`, analysis `.h5`; NWB: the
  series' `rate` or timestamp spacing, except exactly 1 Hz, which is what sleap-io writes
  when it does not know the rate), else the annotation file's, else the config's `fps`.
- NWB: each PoseEstimation container is an animal (name without sleap-io's `track=`
  prefix), grouped into recordings by its `original_videos`; frame = round((t - first
  timestamp of the video) x fps).
- Labels: BORIS / Caltech annotator files exactly as for DeepLabCut
  (trainer/data/pairing.py), paired by the video's stem or, for a one-video file, the
  file's stem; `data.annotation_pairs` may list one-video files.

`.h5` files are told apart by their groups: SLEAP analysis (`tracks`, `node_names`), JABS
(`poseest`); anything else (a DeepLabCut table) is not read here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainer.data.common import check_fps, check_frame_count, check_tracking, drop_low_likelihood, list_files
from trainer.data.pairing import explicit_pairs, label_recording, pair_by_name, read_annotations, unreadable
from trainer.data.recording import DataError, Recording

log = logging.getLogger(__name__)

INSTALL = 'pip install -e ".[sleap]"'
SUFFIXES = (".slp", ".nwb", ".h5")


def _sio():
    """The sleap_io module, or one line saying how to install it."""
    try:
        import sleap_io
    except ImportError:
        raise DataError(f"data.format=sleap needs the sleap-io package: {INSTALL}") from None
    return sleap_io


def h5_kind(file: Path) -> str | None:
    """'analysis' (SLEAP analysis HDF5), 'jabs' (JABS pose file) or None (e.g. a DeepLabCut table).

    Needs h5py (installed with sleap-io); without it every .h5 is None.
    """
    try:
        import h5py
    except ImportError:
        return None
    try:
        with h5py.File(file, "r") as h:
            keys = set(h.keys())
    except OSError:
        return None
    if {"tracks", "node_names"} <= keys:
        return "analysis"
    if "poseest" in keys:
        return "jabs"
    return None


def file_kind(file: Path) -> str | None:
    """Which sleap-io loader reads `file`: slp | nwb | analysis | jabs, or None."""
    suffix = file.suffix.lower()
    if suffix == ".h5":
        return h5_kind(file)
    return {".slp": "slp", ".nwb": "nwb"}.get(suffix)


# kind -> fn(sleap_io, path) -> Labels; videos are never opened (only their names and fps are used)
LOADERS = {
    "slp": lambda sio, f: sio.load_slp(str(f), open_videos=False),
    "analysis": lambda sio, f: sio.load_analysis_h5(str(f)),
    "jabs": lambda sio, f: sio.load_jabs(str(f)),
}


@dataclass
class _Video:
    """One video of a pose file, as arrays: keypoints (T, M, B, 2), scores (T, M, B)."""

    file: Path
    name: str
    keypoints: np.ndarray
    scores: np.ndarray
    tracks: list[str]
    nodes: list[str]
    fps: float | None
    names: list[str] = field(default_factory=list)  # what annotation files may be named after


def read_sleap(path: str, *, data, fps: float) -> list[Recording]:
    """Read SLEAP / NWB / JABS pose files, paired with annotations when `data.annotation_path` is set.

    Args:
        path: a .slp / .nwb / .h5 file or a directory of them (ignored when
            `data.annotation_pairs` lists the files).
        data: DataConfig (annotation_path, annotation_format, annotation_stream,
            annotation_pairs, background_class, behaviors, min_likelihood, pix_per_cm).
        fps: frame rate used when neither the pose file nor the annotation states one.

    Returns:
        One Recording per video: keypoints (T, M, B, 2) pixels, labels (T, P) or None.
    """
    sio = _sio()
    explicit = explicit_pairs(data)
    files = [t for t, _ in explicit] if explicit else _pose_files(path)
    videos = [v for f in files for v in read_pose_file(f, sio=sio, min_likelihood=getattr(data, "min_likelihood", 0.0))]
    _unique_ids(videos)
    if explicit:
        by_file = dict(explicit)
        for v in videos:
            if sum(w.file == v.file for w in videos) > 1:
                raise DataError(f"{v.file}: holds several videos; pair them by name instead of data.annotation_pairs")
        pairs = [(v, by_file[v.file]) for v in videos]
    elif data.annotation_path:
        pairs = pair_by_name(videos, lambda v: v.names, data.annotation_path, source=path)
    else:
        pairs = [(v, None) for v in videos]
    anns, classes = read_annotations({a: v.fps or fps for v, a in pairs if a is not None}, data)
    pix = float(getattr(data, "pix_per_cm", 0.0) or 0.0) or None
    recs = []
    for v, a in pairs:
        ann = anns.get(a) if a is not None else None
        rate = v.fps or (ann.fps if ann is not None else None) or float(fps)
        meta = {"format": "sleap", "source": str(v.file), "video": v.names[0], "pix_per_cm": pix}
        recs.append(label_recording(v.name, v.keypoints, v.tracks, v.nodes, ann, classes, fps=rate, meta=meta))
    log.info("sleap: read %d video(s) from %d file(s), %d with annotations", len(recs), len(files), len(anns))
    return recs


def _pose_files(path: str) -> list[Path]:
    files = list_files(path, SUFFIXES, what="SLEAP/NWB/JABS")
    if Path(path).is_file():
        if file_kind(files[0]) is None:
            raise DataError(f"{path}: not a SLEAP .slp, SLEAP analysis .h5, NWB .nwb or JABS pose .h5 file")
        return files
    for f in files:
        why = unreadable(f)
        if why:
            log.warning("%s: skipped as a pose file: %s", f, why)
    files = [f for f in files if not unreadable(f) and file_kind(f) is not None]
    if not files:
        raise DataError(f"{path}: no SLEAP .slp, SLEAP analysis .h5, NWB .nwb or JABS pose .h5 file found")
    return files


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [""])[0][:200]


def _unique_ids(videos: list[_Video]) -> None:
    """Video ids must be unique for the split by video: `<file stem>/<video stem>`, then `#k`."""
    stems = [v.name for v in videos]
    for v in videos:
        if stems.count(v.name) > 1:
            v.name = f"{v.file.stem}/{v.name}"
    seen: dict[str, int] = {}
    for v in videos:
        seen[v.name] = seen.get(v.name, 0) + 1
        if seen[v.name] > 1:
            v.name = f"{v.name}#{seen[v.name]}"


# --------------------------------------------------------------------------- Labels -> arrays


def read_pose_file(file: Path, *, sio=None, min_likelihood: float = 0.0) -> list[_Video]:
    """Every video of one pose file with its keypoints; see the module docstring for the rules."""
    sio = sio or _sio()
    kind = file_kind(file)
    if kind is None:
        raise DataError(f"{file}: not a SLEAP .slp, SLEAP analysis .h5, NWB .nwb or JABS pose .h5 file")
    if kind == "nwb":
        return read_nwb(file, min_likelihood=min_likelihood)
    try:
        labels = LOADERS[kind](sio, file)
    except Exception as e:  # noqa: BLE001 - HDF5 / NWB errors come in many types
        raise DataError(f"{file}: cannot read as a {kind} pose file ({type(e).__name__}: {_first_line(e)})") from None
    return labels_to_videos(labels, file, min_likelihood=min_likelihood)


def labels_to_videos(labels, file: Path, *, min_likelihood: float = 0.0) -> list[_Video]:
    """Arrays of every video of a sleap_io.Labels read from `file` (rules: module docstring)."""
    nodes = _skeleton_nodes(labels, file)
    by_video: dict[int, list] = {}
    for lf in labels.labeled_frames:
        if lf.instances:
            by_video.setdefault(id(lf.video), []).append(lf)
    if not by_video:
        raise DataError(f"{file}: no instances (no labelled or predicted poses) in this file")
    tracks = list(labels.tracks)
    untracked_ok = not tracks and max(len(lf.instances) for lfs in by_video.values() for lf in lfs) == 1
    if not tracks and not untracked_ok:
        raise DataError(
            f"{file}: several animals per frame but no tracks, so identities are unknown; "
            "run SLEAP's tracker on the predictions (or assign tracks in the SLEAP GUI)"
        )
    out = []
    for video in labels.videos:
        lfs = by_video.get(id(video))
        if not lfs:
            log.info("%s: video %s has no instances; skipped", file, video.filename)
            continue
        out.append(_video_arrays(file, video, lfs, tracks, nodes, single=untracked_ok, min_likelihood=min_likelihood,
                                 one_video=len(labels.videos) == 1))
    return out


def _skeleton_nodes(labels, file: Path) -> list[str]:
    used = {id(inst.skeleton): inst.skeleton for lf in labels.labeled_frames for inst in lf.instances}
    known = {id(s) for s in labels.skeletons}
    if any(k not in known for k in used):
        raise DataError(f"{file}: instances use a skeleton the file does not define; re-save it from SLEAP")
    if len(used) > 1:
        desc = "; ".join(f"{s.name or '?'}: {', '.join(s.node_names)}" for s in used.values())
        raise DataError(f"{file}: instances use {len(used)} skeletons ({desc}); merge them into one in SLEAP")
    skel = next(iter(used.values()), labels.skeletons[0] if labels.skeletons else None)
    if skel is None or not skel.node_names:
        raise DataError(f"{file}: the skeleton has no nodes (body parts)")
    return [str(n) for n in skel.node_names]


def _pick(lf, tracks: list, single: bool) -> tuple[dict[int, object], int]:
    """{track index: instance} for one frame (user over predicted, best score) and the untracked count."""
    user: dict[int, object] = {}
    pred: dict[int, object] = {}
    untracked = 0
    index = {id(t): i for i, t in enumerate(tracks)}
    for inst in lf.instances:
        track = inst.track
        if track is None and getattr(inst, "from_predicted", None) is not None:
            track = inst.from_predicted.track
        j = 0 if single else index.get(id(track)) if track is not None else None
        if j is None:
            untracked += 1
            continue
        if hasattr(inst, "score"):  # PredictedInstance (user instances have no instance score)
            if j not in pred or (inst.score or 0) > (pred[j].score or 0):
                pred[j] = inst
        else:
            user.setdefault(j, inst)
    return {**pred, **user}, untracked


def _video_arrays(file, video, lfs, tracks, nodes, *, single, min_likelihood, one_video) -> _Video:
    T = check_frame_count(max(lf.frame_idx for lf in lfs) + 1, source=file)
    M = 1 if single else len(tracks)
    kp = np.full((T, M, len(nodes), 2), np.nan, dtype=np.float32)
    sc = np.full((T, M, len(nodes)), np.nan, dtype=np.float32)
    untracked = 0
    for lf in lfs:
        picked, n = _pick(lf, tracks, single)
        untracked += n
        for j, inst in picked.items():
            if hasattr(inst, "score"):
                pts = inst.numpy(scores=True)
                kp[lf.frame_idx, j], sc[lf.frame_idx, j] = pts[:, :2], pts[:, 2]
            else:
                kp[lf.frame_idx, j], sc[lf.frame_idx, j] = inst.numpy(), 1.0
    if untracked:
        log.warning("%s: %d instance(s) without a track dropped (see docs/formats.md)", file, untracked)
    drop_low_likelihood(kp, sc, float(min_likelihood or 0.0))
    present = [j for j in range(M) if np.isfinite(kp[:, j]).any()]
    if not present:
        raise DataError(f"{file}: every instance of video {video.filename} has only missing nodes")
    names = ["mouse1"] if single else _track_names(tracks)
    stem = _video_stem(video, file)
    v = _Video(file, stem, kp[:, present], sc[:, present], [names[j] for j in present], nodes,
               _fps(video, file), [stem, file.stem] if one_video else [stem])
    check_tracking(v.keypoints, v.tracks, source=f"{file} ({stem})")
    return v


# --------------------------------------------------------------------------- NWB (ndx-pose)


def read_nwb(file: Path, *, min_likelihood: float = 0.0) -> list[_Video]:
    """Every video of an NWB file from its ndx-pose PoseEstimation containers (one per animal)."""
    try:
        from pynwb import NWBHDF5IO
    except ImportError:
        raise DataError(f"{file}: reading NWB needs pynwb and ndx-pose: {INSTALL}") from None
    try:
        with NWBHDF5IO(str(file), "r", load_namespaces=True) as io:
            groups = _nwb_groups(io.read())
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - HDF5 / NWB errors come in many types
        raise DataError(f"{file}: cannot read as an NWB file ({type(e).__name__}: {_first_line(e)})") from None
    if not groups:
        raise DataError(f"{file}: no ndx-pose PoseEstimation container (no poses) in this NWB file")
    out = []
    for video, animals in groups.items():
        out.append(_nwb_video(file, video, animals, min_likelihood=min_likelihood, one_video=len(groups) == 1))
    return out


def _nwb_groups(nwb) -> dict[str, list[tuple[str, list[str], dict]]]:
    """{video: [(animal, nodes, {node: (t (N,), xy (N, 2), confidence (N,) or None)})]} read into memory."""
    groups: dict[str, list] = {}
    for mod in nwb.processing.values():
        for name, pe in mod.data_interfaces.items():
            if type(pe).__name__ != "PoseEstimation":
                continue
            videos = list(pe.original_videos[:]) if pe.original_videos is not None else []
            video = str(videos[0]) if videos else mod.name
            series = {}
            for node, ts in pe.pose_estimation_series.items():
                conf = None if ts.confidence is None else np.asarray(ts.confidence[:], dtype=np.float32)
                series[node] = (np.asarray(ts.get_timestamps(), dtype=np.float64),
                                np.asarray(ts.data[:], dtype=np.float32).reshape(-1, 2), conf, ts.rate)
            skel = list(pe.skeleton.nodes[:]) if getattr(pe, "skeleton", None) is not None else []
            nodes = [str(n) for n in skel if n in series] + [n for n in series if n not in skel]
            groups.setdefault(video, []).append((name.removeprefix("track="), nodes, series))
    return groups


def _nwb_video(file, video, animals, *, min_likelihood, one_video) -> _Video:
    nodes = list(dict.fromkeys(n for _, ns, _ in animals for n in ns))
    series = [s for _, _, ser in animals for s in ser.values()]
    rates = [r for *_, r in series if r]
    times = np.unique(np.concatenate([t for t, *_ in series]))
    if not len(times):
        raise DataError(f"{file}: no instances (no pose samples) for video {video}")
    step = np.median(np.diff(times)) if len(times) > 1 else 0.0
    fps = float(rates[0]) if rates else (round(1.0 / step, 3) if step > 0 else None)  # 3 decimals: 29.97 Hz
    rate = check_fps(fps, source=file) if fps and fps != 1.0 else None  # 1 Hz = sleap-io's placeholder for an unknown rate
    frames_of = (lambda t: np.rint((t - times[0]) * fps).astype(np.int64)) if fps else (lambda t: np.zeros(len(t), int))
    T = check_frame_count(int(frames_of(times[-1:])[0]) + 1, source=f"{file} ({video})")
    names = [a for a, _, _ in animals]
    kp = np.full((T, len(animals), len(nodes), 2), np.nan, dtype=np.float32)
    sc = np.full((T, len(animals), len(nodes)), np.nan, dtype=np.float32)
    for m, (_, _, ser) in enumerate(animals):
        for node, (t, xy, conf, _) in ser.items():
            f = frames_of(t)
            kp[f, m, nodes.index(node)] = xy
            if conf is not None:
                sc[f, m, nodes.index(node)] = conf
    drop_low_likelihood(kp, sc, float(min_likelihood or 0.0))
    stem = Path(video).stem or file.stem
    v = _Video(file, stem, kp, sc, names, nodes, rate, [stem, file.stem] if one_video else [stem])
    check_tracking(kp, names, source=f"{file} ({stem})")
    return v


def _track_names(tracks) -> list[str]:
    names = [str(t.name) if t.name else f"track{i}" for i, t in enumerate(tracks)]
    return [n if names.count(n) == 1 else f"{n}_{i}" for i, n in enumerate(names)]


def _video_stem(video, file: Path) -> str:
    name = video.filename
    if isinstance(name, list | tuple):  # image sequence: name it after its folder
        return Path(name[0]).parent.name if name else file.stem
    return Path(str(name)).stem or file.stem


def _fps(video, file: Path) -> float | None:
    fps = (getattr(video, "backend_metadata", None) or {}).get("fps")
    if fps is None and getattr(video, "backend", None) is None:
        fps = getattr(video, "fps", None)
    if not fps or not np.isfinite(fps) or fps <= 0:
        return None
    return check_fps(float(fps), source=file)
