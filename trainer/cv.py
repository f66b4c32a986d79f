"""Cross-validation: every fold of `data.split=kfold` (videos) or `by_time` (time blocks) in one run.

    python trainer/run.py data.split=kfold data.num_folds=5 data.fold=-1
    python trainer/run.py --config configs/rat46_base.yaml data.path=... data.split=kfold data.fold=-1
    python trainer/run.py --resume runs/<name>        # continue: finished folds are kept

`data.fold=-1` means "all folds". Each fold is an ordinary `train()` run (any model_type)
under one directory; the data are read once and split k times (trainer/data/splits.py):

    runs/<name>/
      config.yaml, command.txt   the resolved config (data.fold=-1) and the command line
      folds.json                 the plan, written first: each fold's validation videos
      fold_0/ ... fold_{k-1}/    one run each: checkpoints/, metrics.jsonl, metrics.json, tb/
      fold_<i>/oof.npz           the fold's out-of-fold probabilities, from its best checkpoint
      oof.npz                    every fold's merged: each frame of each video exactly once
      cv.json                    per fold and mean +- std of macro F1 and per-class F1 (best epochs)

`cross_validate` trains the folds in sequence (trainer/run.py); `cv_epoch_stream` advances
them in lock-step, one epoch of every fold at a time, and yields the running mean after
each epoch (tune.py reports it, so ASHA can stop a trial on its mean over folds). Both end
with the same files. See docs/cv.md.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from trainer import checkpoint as ckpt_io
from trainer import rundir
from trainer.config import Config, ConfigError, config_to_yaml
from trainer.data import load_recordings, split_recordings
from trainer.data.recording import UNLABELLED, Recording
from trainer.metrics import frame_scores

log = logging.getLogger("trainer.cv")

PLAN = "folds.json"
SUMMARY = "cv.json"
OOF = "oof.npz"
OOF_KEYS = ("video_id", "pair", "pair_name", "frame", "fold", "label", "probs")  # + class_names


def is_cv(cfg: Config) -> bool:
    """True when `cfg` asks for every fold (data.fold=-1) rather than one train/val split."""
    return cfg.data.fold == -1


@dataclasses.dataclass
class Fold:
    index: int
    train: list[Recording]
    val: list[Recording]
    config: Config

    @property
    def dir(self) -> Path:
        return Path(self.config.output_dir) / self.config.name


# ============================================================================ plan and run directory


def _latest_unfinished(out: Path) -> Path | None:
    runs = [d for d in out.glob("*") if (d / PLAN).is_file() and not (d / SUMMARY).is_file()]
    return max(runs, key=lambda d: d.stat().st_mtime, default=None)


def cv_dir(cfg: Config) -> tuple[Path, bool]:
    """(run directory, continuing?) from name/output_dir/resume, like runfiles.resolve_run for one run."""
    out = Path(cfg.output_dir)
    if cfg.resume and cfg.resume != "auto":
        run = Path(cfg.resume)
        if not (run / PLAN).is_file():
            raise ConfigError(f"resume: '{run}' is not a cross-validation run directory (no {PLAN})")
        return run, True
    if cfg.resume == "auto":
        run = out / cfg.name if cfg.name else _latest_unfinished(out)
        if run is not None and (run / PLAN).is_file():
            return run, True
    run = out / (cfg.name or f"{cfg.model_type}-cv-{time.strftime('%Y%m%d-%H%M%S')}")
    if not cfg.name:
        base, i = run, 1
        while run.exists():
            i += 1
            run = base.with_name(f"{base.name}-{i}")
    if (run / PLAN).is_file():
        raise ConfigError(f"run directory '{run}' already holds a cross-validation; pass resume=auto to continue it "
                          "or choose another name")
    return run, False


def fold_config(cfg: Config, run_dir: Path, i: int, *, continuing: bool) -> Config:
    """The config of fold i: an ordinary run named fold_<i> inside the cross-validation directory."""
    return dataclasses.replace(cfg, name=f"fold_{i}", output_dir=str(run_dir), resume="auto" if continuing else "",
                               data=dataclasses.replace(cfg.data, fold=i))


def plan_folds(cfg: Config, recordings: list[Recording] | None = None) -> tuple[Path, list[Fold]]:
    """Read the data once, split it into k folds, write config.yaml and folds.json (checked on resume)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # each fold's train() ends its process group, and OOF scoring starts another: not across processes
        raise ConfigError("cross-validation (data.fold=-1) runs in one process: launch it without "
                          "--num_processes > 1, or run one fold per launch with data.fold=0..k-1")
    run_dir, continuing = cv_dir(cfg)
    recs = recordings if recordings is not None else load_recordings(cfg)
    folds = []
    for i in range(cfg.data.num_folds):
        train, val = split_recordings(recs, cfg, fold=i)
        folds.append(Fold(i, train, val, fold_config(cfg, run_dir, i, continuing=continuing)))
    plan = {"split": cfg.data.split, "num_folds": cfg.data.num_folds, "split_seed": cfg.data.split_seed,
            "folds": [{"fold": f.index, "val_videos": [r.video_id for r in f.val],
                       "train_videos": [r.video_id for r in f.train]} for f in folds]}
    if continuing:
        old = json.loads((run_dir / PLAN).read_text())
        if old["folds"] != plan["folds"]:
            raise ConfigError(f"resume: the data or split settings changed since {run_dir} started "
                              "(different fold videos); start a new run")
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / rundir.CONFIG).write_text(config_to_yaml(cfg))
        ckpt_io.write_json(run_dir / PLAN, plan)
    with open(run_dir / rundir.COMMAND, "a") as f:
        f.write(" ".join([Path(sys.executable).name, *sys.argv]) + "\n")
    return run_dir, folds


# ============================================================================ out-of-fold predictions


def fold_oof(fold: Fold, checkpoint: Path) -> dict:
    """The fold's validation videos scored by its best checkpoint: one row per frame and pair.

    Returns arrays of N rows: video_id (str; the source video for by_time slices), pair
    (int), pair_name ("agent->target"), frame (int, in the source video), fold, label
    (int, -1 = unlabelled), probs (N, C) float32; and class_names (C,).
    """
    from trainer.predict import Predictor  # torch and the model registry: only when a fold is scored

    pred = Predictor.load(checkpoint)
    probs = pred.probabilities(fold.val)
    cols: dict[str, list] = {k: [] for k in OOF_KEYS}
    for rec, per_pair in zip(fold.val, probs):
        source = rec.meta.get("source_video", rec.video_id)
        offset = int(rec.meta.get("frame_offset", 0))
        for p, pr in enumerate(per_pair):
            T = len(pr)
            cols["video_id"].append(np.full(T, source))
            cols["pair"].append(np.full(T, p, dtype=np.int64))
            cols["pair_name"].append(np.full(T, rec.pair_name(p)))
            cols["frame"].append(offset + np.arange(T, dtype=np.int64))
            cols["fold"].append(np.full(T, fold.index, dtype=np.int64))
            cols["label"].append(rec.labels[:, p] if rec.labels is not None else np.full(T, UNLABELLED))
            cols["probs"].append(pr.astype(np.float32))
    out = {k: np.concatenate(v) for k, v in cols.items()}
    out["class_names"] = np.asarray(pred.class_names)
    return out


def save_npz(path: Path, arrays: dict) -> None:
    """Write atomically (temporary file, then rename): a kill never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)


def load_oof(path: str | Path) -> dict:
    """oof.npz (a run directory or the file) as a dict of arrays; see fold_oof for the keys."""
    p = Path(path)
    with np.load(p / OOF if p.is_dir() else p) as z:
        return {k: z[k] for k in z.files}


def merge_oof(parts: list[dict]) -> dict:
    """Concatenate fold tables, sorted by (video_id, pair, frame); each frame must appear once."""
    out = {k: np.concatenate([p[k] for p in parts]) for k in OOF_KEYS}
    order = np.lexsort((out["frame"], out["pair"], out["video_id"]))
    out = {k: v[order] for k, v in out.items()}
    key = np.stack([np.unique(out["video_id"], return_inverse=True)[1], out["pair"], out["frame"]], 1)
    if len(np.unique(key, axis=0)) != len(key):  # splits partition the frames: a repeat is a bug
        raise RuntimeError("out-of-fold table scores some frame twice")
    out["class_names"] = parts[0]["class_names"]
    return out


# ============================================================================ summary


def _mean_std(values: list) -> tuple[float | None, float | None]:
    """Mean and sample std (ddof=1; 0 for one value) of the non-None values."""
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if not len(v):
        return None, None
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def summarise(cfg: Config, run_dir: Path, folds: list[Fold], finals: dict[int, dict], oof: dict,
              wall: float) -> dict:
    """cv.json: per fold (best epoch, macro F1, per-class F1, videos), mean and std, pooled OOF scores."""
    class_names = [str(c) for c in oof["class_names"]]
    background = cfg.data.background_class if cfg.data.background_class in class_names else class_names[0]
    rows = []
    for f in folds:
        m = finals[f.index]
        rows.append({"fold": f.index, "val_macro_f1": m["val_macro_f1"], "f1": m["f1"], "best_epoch": m["best_epoch"],
                     "epochs_run": m["epochs_run"], "support": m.get("support"),
                     "train_time_s": m.get("train_time_s"), "run_dir": str(f.dir), "checkpoint": m["checkpoint"],
                     "val_videos": [r.video_id for r in f.val], "train_videos": len(f.train)})
    mean, std = {}, {}
    mean["val_macro_f1"], std["val_macro_f1"] = _mean_std([r["val_macro_f1"] for r in rows])
    mean["f1"], std["f1"] = {}, {}
    for c in class_names:
        mean["f1"][c], std["f1"][c] = _mean_std([(r["f1"] or {}).get(c) for r in rows])
    pred = oof["probs"].argmax(1)
    pooled = frame_scores(oof["label"], pred, class_names, background)
    return {
        "run_dir": str(run_dir),
        "split": cfg.data.split, "num_folds": cfg.data.num_folds, "split_seed": cfg.data.split_seed,
        "model_type": cfg.model_type, "class_names": class_names, "background": background,
        "folds": rows, "mean": mean, "std": std,
        "oof": {"path": str(run_dir / OOF), "rows": int(len(pred)),
                "labelled_rows": int((oof["label"] != UNLABELLED).sum()),
                "videos": int(len(np.unique(oof["video_id"]))),
                "macro_f1": pooled["macro_f1"], "f1": pooled["f1"]},
        "wall_time_s": wall,
    }


def _num(v, width: int = 6) -> str:
    return f"{'n/a':>{width}s}" if v is None else f"{v:>{width}.3f}"


def format_summary(s: dict) -> str:
    """The one-table console summary of cv.json."""
    behaviours = [c for c in s["class_names"] if c != s["background"] or len(s["class_names"]) == 1]
    w = max(13, *(len(c) + 1 for c in behaviours))  # room for "0.812±0.021" plus a space
    head = f"{'fold':<11s}{'videos':>7s}{'epoch':>6s} {'macro F1':>{w}s}" + "".join(f"{c:>{w}s}" for c in behaviours)
    lines = [f"\ncross-validation: {s['num_folds']} folds (data.split={s['split']}, split_seed {s['split_seed']}), "
             "each fold at its best epoch", head]
    for r in s["folds"]:
        f1 = r["f1"] or {}
        lines.append(f"{r['fold']:<11d}{len(r['val_videos']):>7d}{r['best_epoch']:>6d} {_num(r['val_macro_f1'], w)}"
                     + "".join(_num(f1.get(c), w) for c in behaviours))

    def pm(m, sd):
        return f"{'n/a':>{w}s}" if m is None else f"{m:.3f}±{sd:.3f}".rjust(w)

    lines.append(f"{'mean ± std':<25s}{pm(s['mean']['val_macro_f1'], s['std']['val_macro_f1'])}"
                 + "".join(pm(s["mean"]["f1"][c], s["std"]["f1"][c]) for c in behaviours))
    o = s["oof"]
    lines.append(f"{'out-of-fold':<25s}{_num(o['macro_f1'], w)}" + "".join(_num(o["f1"].get(c), w) for c in behaviours)
                 + f"   (all {o['labelled_rows']} labelled frame-pairs pooled)")
    lines.append(f"run directory: {s['run_dir']}   ({s['wall_time_s']:.0f} s); {SUMMARY}, {OOF}")
    return "\n".join(lines)


# ============================================================================ running the folds


def _fold_done(fold: Fold) -> dict | None:
    """The fold's metrics.json when it finished and its OOF table is written (resume skips it)."""
    if (fold.dir / rundir.METRICS_JSON).is_file() and (fold.dir / OOF).is_file():
        return json.loads((fold.dir / rundir.METRICS_JSON).read_text())
    return None


def _finish_fold(fold: Fold, final: dict) -> None:
    save_npz(fold.dir / OOF, fold_oof(fold, Path(final["checkpoint"])))


def _finish(cfg: Config, run_dir: Path, folds: list[Fold], finals: dict[int, dict], t0: float) -> dict:
    """Merge the folds' OOF tables, write cv.json and print the table."""
    oof = merge_oof([load_oof(f.dir / OOF) for f in folds])
    save_npz(run_dir / OOF, oof)
    summary = summarise(cfg, run_dir, folds, finals, oof, time.perf_counter() - t0)
    ckpt_io.write_json(run_dir / SUMMARY, summary)
    log.info("%s", format_summary(summary))
    return summary


def cross_validate(cfg: Config, *, recordings: list[Recording] | None = None, train_fn: Callable | None = None,
                   **train_kwargs) -> dict:
    """Train the k folds one after the other, write the OOF tables and cv.json; returns cv.json's dict.

    recordings: optional list of Recording to split (skips reading). train_kwargs go to every
    fold's train() (e.g. on_checkpoint). A resumed run skips finished folds.
    """
    if train_fn is None:
        from trainer.run import train as train_fn
    t0 = time.perf_counter()
    run_dir, folds = plan_folds(cfg, recordings)
    finals = {}
    for fold in folds:
        done = _fold_done(fold)
        if done is not None:
            log.info("fold %d of %d: finished earlier (val macro F1 %.4f)", fold.index, len(folds),
                     done["val_macro_f1"])
            finals[fold.index] = done
            continue
        log.info("fold %d of %d: %d training, %d validation videos", fold.index, len(folds), len(fold.train),
                 len(fold.val))
        finals[fold.index] = train_fn(fold.config, recordings=(fold.train, fold.val), **train_kwargs)
        _finish_fold(fold, finals[fold.index])
    return _finish(cfg, run_dir, folds, finals, t0)


def running_row(epoch: int, latest: dict[int, dict], k: int) -> dict:
    """Mean over folds of each fold's latest epoch row (a fold that stopped early keeps its last)."""
    rows = list(latest.values())
    best = [r["best_val_macro_f1"] for r in rows]
    out = {"epoch": epoch, "folds": k, "folds_reporting": len(rows),
           "best_val_macro_f1": float(np.mean(best)), "best_val_macro_f1_std": _mean_std(best)[1]}
    keys = dict.fromkeys(k for r in rows for k in r if k.startswith(("val_", "train_")))
    for key in keys:  # folds that finished earlier carry only their best score
        vals = [r[key] for r in rows if isinstance(r.get(key), int | float) and not isinstance(r.get(key), bool)]
        if vals:
            out[key] = float(np.mean(vals))
    out.update({f"fold_{i}_best_val_macro_f1": r["best_val_macro_f1"] for i, r in sorted(latest.items())})
    return out


def cv_epoch_stream(cfg: Config, *, recordings: list[Recording] | None = None, train_fn: Callable | None = None,
                    **train_kwargs) -> Iterator[dict]:
    """The k folds in lock-step: after epoch e of every fold, yield the running mean over folds.

    Rows: epoch, best_val_macro_f1 (mean over folds of each fold's best so far; the value
    ASHA compares), best_val_macro_f1_std, the means of the folds' val_*/train_* numbers,
    fold_<i>_best_val_macro_f1. Folds that finished earlier (resume) count with their final
    score. When every fold has ended: OOF tables and cv.json, as cross_validate writes them.
    Closing the generator stops every fold after its current epoch (checkpoints intact).
    """
    from trainer.stream import epoch_stream

    t0 = time.perf_counter()
    run_dir, folds = plan_folds(cfg, recordings)
    finals: dict[int, dict] = {}
    latest: dict[int, dict] = {}  # fold -> its latest row (or what its checkpoint says)
    done_epochs: dict[int, int] = {}
    for fold in folds:
        done = _fold_done(fold)
        if done is not None:
            finals[fold.index] = done
            latest[fold.index] = {"best_val_macro_f1": done["val_macro_f1"]}
            continue
        ck = ckpt_io.resolve(fold.dir, cfg.checkpoint_dir) if cfg.resume else None  # resumed: where this fold stands
        state = ckpt_io.read_state(ck) if ck is not None else {}
        done_epochs[fold.index] = int(state.get("epoch", 0))
        if state:
            latest[fold.index] = {"best_val_macro_f1": state["best_score"]}
    streams = {i: epoch_stream(folds[i].config, train_fn=train_fn, recordings=(folds[i].train, folds[i].val),
                               **train_kwargs) for i in done_epochs}
    try:
        while streams:
            # advance the folds that are behind by one epoch (all of them, unless a kill left them uneven)
            epoch = min(done_epochs[i] for i in streams) + 1
            reported = False
            for i in [i for i in streams if done_epochs[i] < epoch]:
                try:
                    row = next(streams[i])
                except StopIteration as end:  # past its last epoch (or stopped early): train() returned
                    finals[i] = end.value
                    del streams[i]
                    continue
                done_epochs[i], reported = row["epoch"], True
                latest[i] = {k: v for k, v in row.items() if k != "checkpoint"}
            if reported:
                yield running_row(epoch, latest, len(folds))
    finally:
        for stream in streams.values():  # closed early (ASHA): each fold stops after its current epoch
            stream.close()
    for fold in folds:
        if not (fold.dir / OOF).is_file():
            _finish_fold(fold, finals[fold.index])
    _finish(cfg, run_dir, folds, finals, t0)
