"""sleap-io's DeepLabCut reader vs the project's, and read speed of .slp / .nwb (needs the `sleap` extra).

    python benchmarks/sleap_compare.py --rat46 ../shared/data/rat46 --out benchmarks/results/sleap_compare.json

1. Every DLC fixture of tests/format_fixtures.py (3-row single animal, 4-row multi-animal,
   a mostly empty first data row, maDLC's `single` pseudo-individual) and every rat46
   tracking file is read with `trainer.data.dlc.read_dlc_table` and with
   `sleap_io.load_dlc`: frames read, values, NaNs, individuals, body-part order, seconds.
   `load_dlc` reads DeepLabCut *training* tables (index = `labeled-data/<video>/imgNNNN.png`
   with the images on disk); it is also run on a copy rewritten into that layout (empty
   image files; the first `--table-frames` of `--table-videos` rat46 files, as load_dlc reads
   them at ~100 frames/s) to compare the values.
2. `--slp-videos` rat46 videos are written to .slp (every `--nwb-every`-th also to .nwb)
   with sleap-io and read back with the project's `sleap` reader: frames/s, and keypoints
   equal to the DLC source.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402

from trainer.config import DataConfig  # noqa: E402
from trainer.data.dlc import read_dlc_table  # noqa: E402
from trainer.data.sleap import labels_to_videos, read_sleap  # noqa: E402

FIXTURES = {  # name -> write_dlc keyword arguments (tests/format_fixtures.py)
    "single_animal_3_rows": dict(individuals=None, bodyparts=["nose", "ear_left", "tail_base"]),
    "multi_animal_4_rows": dict(individuals=["resident", "intruder"], bodyparts=["nose", "ear_left", "tail_base"]),
    "first_row_mostly_empty": dict(individuals=["resident", "intruder"], bodyparts=["nose", "tail_base"],
                                   first_row_empty=True),
    "madlc_single_pseudo_individual": dict(individuals=["resident", "intruder", "single"], bodyparts=["nose", "tail"]),
}


def as_training_table(src: Path, dst_dir: Path, max_frames: int) -> Path:
    """Copy the first `max_frames` rows of a DLC tracking CSV into DLC's labelled-data layout.

    Index = image path, with empty image files (load_dlc skips rows whose image is missing).
    """
    lines = src.read_text().splitlines()
    depth = 4 if lines[1].lower().startswith("individuals") else 3
    lines = lines[: depth + max_frames]
    img_dir = dst_dir / "labeled-data" / src.stem[:40]
    img_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for line in lines[depth:]:
        frame, rest = line.split(",", 1)
        name = f"img{int(frame):05d}.png"
        (img_dir / name).touch()
        rows.append(f"labeled-data/{img_dir.name}/{name},{rest}")
    out = dst_dir / f"CollectedData_{src.stem[:20]}.csv"
    out.write_text("\n".join(lines[:depth] + rows) + "\n")
    return out


def compare(sio, file: Path, work: Path, table_frames: int) -> dict:
    """Project reader vs sleap_io.load_dlc on `file` (as is, and rewritten as a training table)."""
    t = time.perf_counter()
    kp, _, individuals, bodyparts = read_dlc_table(file)
    ours = time.perf_counter() - t
    t = time.perf_counter()
    raw = sio.load_dlc(str(file), config=False)
    theirs_raw = time.perf_counter() - t
    row = {"frames": int(kp.shape[0]), "ours_s": round(ours, 3), "ours_frames_per_s": round(kp.shape[0] / ours),
           "individuals_ours": individuals, "bodyparts_ours": bodyparts,
           "sleap_io_on_tracking_csv_frames": len(raw.labeled_frames), "sleap_io_on_tracking_csv_s": round(theirs_raw, 3)}
    if not table_frames:
        return row
    table = as_training_table(file, work, table_frames)
    t = time.perf_counter()
    lab = sio.load_dlc(str(table), config=False)
    theirs = time.perf_counter() - t
    # Labels.numpy() is not used: with at most one instance per frame it drops the track
    # axis to one column (identity lost), e.g. in rat46 clips where one rat is not yet seen
    row_np = list(lab.numpy(video=0).shape) if lab.videos else []
    arr = labels_to_videos(lab, table)[0].keypoints if lab.labeled_frames else np.empty((0,))
    names = labels_to_videos(lab, table)[0].tracks if lab.labeled_frames else []
    tracks = [tr.name for tr in lab.tracks] or ["(none)"]
    row["sleap_io_labels_numpy_shape"] = row_np
    nodes = list(lab.skeleton.node_names) if lab.skeletons else []
    row.update({
        "sleap_io_training_table_s": round(theirs, 3),
        "individuals_sleap_io": tracks, "bodyparts_sleap_io": nodes,
    })
    kp = kp[:table_frames]
    row["table_frames"] = int(kp.shape[0])
    row["sleap_io_frames_per_s"] = round(kp.shape[0] / theirs) if theirs else None
    if arr.ndim == 4 and set(bodyparts) <= set(nodes):
        # sleap-io's animals (a track absent from the clip is absent) on the project's layout
        a = np.full(kp.shape, np.nan, dtype=np.float32)
        cols = [nodes.index(b) for b in bodyparts]
        n = min(len(arr), len(kp))
        for i, ind in enumerate(individuals):
            if ind in names or not lab.tracks:
                a[:n, i] = arr[:n, names.index(ind) if lab.tracks else 0][:, cols]
        row["same_nan"] = bool(np.array_equal(np.isnan(a), np.isnan(kp)))
        row["max_abs_diff"] = float(np.nanmax(np.abs(a - kp))) if np.isfinite(kp).any() else 0.0
    else:
        row["same_nan"] = False
        row["shape_ours"], row["shape_sleap_io"] = list(kp.shape), list(arr.shape)
    return row


def slp_speed(sio, files: list[Path], work: Path, nwb_every: int) -> dict:
    """Write each DLC file as .slp (and every nwb_every-th as .nwb), read back with the sleap reader."""
    from sleap_io.io.nwb_predictions import write_nwb

    out = {"slp": {"frames": 0, "seconds": 0.0, "load_slp_seconds": 0.0, "equal": True},
           "nwb": {"frames": 0, "seconds": 0.0, "equal": True}}
    for i, f in enumerate(files):
        kp, _, individuals, bodyparts = read_dlc_table(f)
        video = sio.Video(filename=f"videos/{i}.mp4", open_backend=False)
        video.fps = 30.0
        labels = sio.Labels.from_numpy(kp.astype(np.float64), videos=[video],
                                       skeletons=sio.Skeleton(bodyparts, name="rat"),
                                       tracks=[sio.Track(n) for n in individuals])
        slp = work / f"{i}.slp"
        sio.save_slp(labels, str(slp))
        t = time.perf_counter()
        sio.load_slp(str(slp), open_videos=False)
        out["slp"]["load_slp_seconds"] += time.perf_counter() - t
        targets = [("slp", slp)]
        if nwb_every and i % nwb_every == 0:
            nwb = work / f"{i}.nwb"
            write_nwb(labels, str(nwb), pose_estimation_metadata={"video_timestamps": np.arange(len(kp)) / 30.0})
            targets.append(("nwb", nwb))
        for kind, path in targets:
            t = time.perf_counter()
            (rec,) = read_sleap(str(path), data=DataConfig(), fps=30.0)
            out[kind]["seconds"] += time.perf_counter() - t
            out[kind]["frames"] += rec.num_frames
            T = rec.num_frames
            out[kind]["equal"] &= bool(np.array_equal(rec.keypoints, kp[:T], equal_nan=True) and np.isnan(kp[T:]).all())
    for v in out.values():
        v["seconds"] = round(v["seconds"], 2)
        v["frames_per_s"] = round(v["frames"] / v["seconds"]) if v["seconds"] else None
    out["slp"]["load_slp_frames_per_s"] = round(out["slp"]["frames"] / max(out["slp"]["load_slp_seconds"], 1e-9))
    out["slp"]["load_slp_seconds"] = round(out["slp"]["load_slp_seconds"], 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    near = [d / "shared" / "data" / "rat46" for d in (ROOT.parent, ROOT.parent.parent)]
    p.add_argument("--rat46", default=str(next((d for d in near if d.is_dir()), near[0])))
    p.add_argument("--videos", type=int, default=0, help="rat46 videos to use (0 = all)")
    p.add_argument("--table-videos", type=int, default=3, help="rat46 videos also compared as training tables")
    p.add_argument("--table-frames", type=int, default=1500,
                   help="frames per training-table copy (load_dlc reads those at ~100 frames/s)")
    p.add_argument("--slp-videos", type=int, default=5, help="rat46 videos written to .slp and read back")
    p.add_argument("--nwb-every", type=int, default=5, help="also write/read every n-th video as .nwb")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sleap_compare.json"))
    args = p.parse_args()
    warnings.simplefilter("ignore")  # sleap-io / hdmf namespace warnings
    import sleap_io as sio
    from format_fixtures import write_dlc

    result = {"sleap_io_version": sio.__version__, "cpu_note": "2 shared cores, ~8 concurrent users: absolute "
              "frames/s vary several-fold between runs; compare within one run", "fixtures": {}, "rat46": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, kw in FIXTURES.items():
            f = tmp / name / f"{name}.csv"
            write_dlc(f, 60, **kw)
            result["fixtures"][name] = compare(sio, f, tmp / name, table_frames=60)
            print(name, {k: v for k, v in result["fixtures"][name].items() if "ours" not in k or k == "ours_s"})
        files = sorted(Path(args.rat46, "dlc").glob("*.csv"))
        files = files[: args.videos] if args.videos else files
        if not files:
            sys.exit(f"{args.rat46}/dlc: no DeepLabCut CSV found (set --rat46)")
        rows = []
        for k, f in enumerate(files):
            work = tmp / "rat46" / f.stem
            rows.append(compare(sio, f, work, table_frames=args.table_frames if k < args.table_videos else 0))
            for x in work.rglob("*.png"):  # 15k empty images per video: free the inodes at once
                x.unlink()
        frames = sum(r["frames"] for r in rows)
        tab = [r for r in rows if "sleap_io_training_table_s" in r]
        result["rat46"] = {
            "videos": len(rows), "frames": frames,
            "ours_frames_per_s": round(frames / sum(r["ours_s"] for r in rows)),
            "sleap_io_on_tracking_csv_frames_per_s": round(frames / sum(r["sleap_io_on_tracking_csv_s"] for r in rows)),
            "sleap_io_on_tracking_csv_frames_read": sum(r["sleap_io_on_tracking_csv_frames"] for r in rows),
            "training_table_videos": len(tab),
            "training_table_frames": sum(r["table_frames"] for r in tab),
            "sleap_io_training_table_frames_per_s":
                round(sum(r["table_frames"] for r in tab) / sum(r["sleap_io_training_table_s"] for r in tab)) if tab else None,
            "training_table_same_nan_all": all(r["same_nan"] for r in tab),
            "training_table_max_abs_diff": max((r.get("max_abs_diff", float("inf")) for r in tab), default=None),
            "training_table_individuals_equal_all": all(r["individuals_ours"] == r["individuals_sleap_io"] for r in tab),
            "training_table_bodypart_order_equal_all": all(r["bodyparts_ours"] == r["bodyparts_sleap_io"] for r in tab),
        }
        print("rat46", result["rat46"])
        (tmp / "slp").mkdir()
        result["rat46_as_sleap"] = slp_speed(sio, files[: args.slp_videos], tmp / "slp", args.nwb_every)
        print("rat46 as .slp/.nwb", result["rat46_as_sleap"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
