"""Per-frame predictions from a checkpoint.

    python -m trainer.predict --checkpoint runs/<name>/checkpoints/best --out preds.csv
    python -m trainer.predict --checkpoint ... --input data/mabe/test.csv --format mabe25 --out preds.csv

Without `--input`, predicts the validation videos of the data the checkpoint was trained
on (for the synthetic default they are regenerated from the stored config). `--input`
takes files of any reader (`--format`, default: the run's data.format); they are read with
the model's class list and put on its skeleton and units. Features are computed with the
statistics stored in the checkpoint, windows overlap and are stitched back so every frame
gets exactly one prediction. Writes next to `--out`:

* the per-frame CSV (class and probabilities per frame and pair, `final` = the
  post-processed label, plus the true label where known),
* `<out>_intervals.csv` (video_id, agent, target, action, start_frame, stop_frame),
* for mabe25 input `<out>_submission.csv`, a valid Kaggle submission,
* an ethogram PNG (`<out>_ethogram.png`).

Post-processing (trainer/postprocess.py) uses `postprocess.json` from the checkpoint
directory when present (written by `python -m trainer.evaluate --fit-postprocess`),
else plain argmax; `--smooth/--max-gap/--min-bout` override it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from trainer import checkpoint as ckpt_io
from trainer import rundir
from trainer.build import new_accelerator
from trainer.config import Config, ConfigError, make_config
from trainer.cv import PLAN as CV_PLAN
from trainer.data import load_splits, read_recordings
from trainer.data.calms21 import npy_consent
from trainer.data.recording import UNLABELLED, DataError, Recording
from trainer.data.skeleton import conform
from trainer.data.windows import WindowDataset, make_sequences
from trainer.ema import FILE as EMA_FILE
from trainer.engine import predict_logits
from trainer.features import FeaturePipeline
from trainer.kaggle_mabe import submission_frame
from trainer.models import build_model
from trainer.postprocess import PostprocessSettings, intervals_table, postprocess_recordings
from trainer.rundir import one_line_errors, remove_quietly, storage_error

log = logging.getLogger("trainer.predict")


@dataclass
class Predictor:
    """A trained model plus everything needed to featurise new recordings like training did."""

    model: torch.nn.Module
    cfg: Config
    pipeline: FeaturePipeline
    class_names: list[str]
    window_length: int
    checkpoint: Path

    @classmethod
    def load(cls, path: str | Path) -> Predictor | Ensemble:
        """A checkpoint (or run dir) -> Predictor; a cross-validation run dir -> Ensemble of its folds."""
        if (Path(path) / CV_PLAN).is_file():
            return Ensemble.of_cv_run(path)
        ck = ckpt_io.resolve(path)
        if ck is None:
            raise ConfigError(f"--checkpoint: no complete checkpoint at '{path}' (expected runs/<name>/checkpoints/best)")
        ckpt_io.verify(ck)
        meta = ckpt_io.read_meta(ck)
        cfg = make_config(base=meta["config"])
        model = build_model(cfg, input_dim=meta["input_dim"], num_classes=meta["num_classes"])
        # the averaged weights when the run kept them (ema_decay > 0), else the trained ones
        wfile = ck / EMA_FILE if (ck / EMA_FILE).is_file() else ck / ckpt_io.WEIGHTS
        try:
            weights = load_file(str(wfile))
        except (OSError, SafetensorError) as e:
            raise ckpt_io.CheckpointError(f"{wfile} is damaged ({str(e)[:80]})"
                                          f"{ckpt_io.fallback_hint(ck)}") from None
        ckpt_io.check_finite(weights, wfile)
        try:
            model.load_state_dict(weights)
        except RuntimeError as e:
            raise ckpt_io.CheckpointError(f"{wfile} does not fit the model its meta.json describes "
                                          f"({str(e).splitlines()[0][:100]}){ckpt_io.fallback_hint(ck)}") from None
        return cls(model, cfg, FeaturePipeline.from_state(meta["features"]), meta["class_names"],
                   meta["window_length"], ck)

    @property
    def background(self) -> int:
        """Index of the background class (as training chose it)."""
        bg = self.cfg.data.background_class
        return self.class_names.index(bg) if bg in self.class_names else 0

    def read(self, fmt: str, path: str, annotations: str | None = None) -> list[Recording]:
        """Read `path` like the training data: the model's class list, skeleton and units.

        annotations: where the annotation files of `path` are (formats with separate ones: dlc,
        sleap); None = the run's `data.annotation_path`, "" = read the tracking only. The run's
        `data.annotation_pairs` name its training files, so they never apply here.
        """
        data = dataclasses.replace(self.cfg.data, annotation_pairs=[])
        if annotations is not None:
            data = dataclasses.replace(data, annotation_path=annotations)
        if fmt != "synthetic":  # pin the class order, so label indices mean what the model means
            bg = self.class_names[self.background]
            # (names training turned unlabelled, e.g. rat46's `base`, stay known: see class_list)
            data = dataclasses.replace(data, background_class=bg,
                                       behaviors=[c for c in self.class_names if c != bg])
        recs = read_recordings(fmt, path, data=data, fps=self.cfg.fps)
        for r in recs:
            if r.labels is not None and list(r.class_names) != list(self.class_names):
                raise DataError(f"{r.video_id}: classes {r.class_names} differ from the model's {self.class_names}")
        return conform(recs, bodyparts=self.pipeline.bodyparts, units=self.cfg.data.units)

    def postprocess(self, recs: list[Recording], probs: list[list[np.ndarray]],
                    settings: PostprocessSettings) -> list[np.ndarray]:
        """Per recording (T, P) labels after `settings` (smoothing, thresholds - per lab where
        fitted for the recording's lab_id - and bouts)."""
        return postprocess_recordings(recs, probs, settings, self.class_names, background=self.background)

    def settings(self) -> PostprocessSettings:
        """postprocess.json of the checkpoint directory, else plain argmax."""
        path = self.checkpoint / "postprocess.json"
        return PostprocessSettings.load(path) if path.is_file() else PostprocessSettings()

    def probabilities(self, recs: list[Recording], *, batch_size: int = 64,
                      contents: list[str] | None = None) -> list[list[np.ndarray]]:
        """Per recording, per labelled pair: (T, C) class probabilities for every frame.
        contents: the recordings' store.content_hash when the caller has them (ensembles)."""
        from trainer.store import FeatureRows, featurise_recordings, open_store

        C = len(self.class_names)
        _, rows = featurise_recordings(recs, self.pipeline, open_store(self.cfg), self.cfg.featurize_workers,
                                       contents=contents)
        accelerator = new_accelerator(cpu=not torch.cuda.is_available())
        model = accelerator.prepare(self.model)
        out = []
        for r, per_pair_rows in zip(recs, rows):  # video by video: windows, stitching, softmax
            seqs = make_sequences([r], [[FeatureRows(x, self.pipeline.finish) for x in per_pair_rows]], C)
            ds = WindowDataset(seqs, length=self.window_length, gap=self.cfg.frame_gap)
            loader = accelerator.prepare_data_loader(DataLoader(ds, batch_size=batch_size))
            logits = predict_logits(model, loader, accelerator, seqs, num_classes=C, gap=self.cfg.frame_gap,
                                    length=self.window_length)
            per_pair = []
            for s, lg in zip(seqs, logits):
                if not np.isfinite(lg).all():  # a NaN would become "every frame background"
                    raise DataError(f"{r.video_id}: the model gave non-finite scores (NaN/inf); the input has "
                                    f"extreme values or the checkpoint {self.checkpoint} is damaged")
                lg = np.where(s.class_mask[None], lg, -np.inf)
                lg = lg - lg.max(axis=1, keepdims=True)
                p = np.exp(lg)
                per_pair.append(p / p.sum(axis=1, keepdims=True))
            out.append(per_pair)
        return out


class Ensemble:
    """Several predictors of the same classes and skeleton; probabilities are their weighted mean.

    A cross-validation run (`data.fold=-1`, trainer/cv.py) gives one model per fold, each
    chosen on its own held-out videos: averaging the k fold models on new videos is steadier
    than any one of them (the rare class most). Members may also be different families (a
    network and the per-frame GBDT): each featurises the input with its own fitted pipeline.
    """

    def __init__(self, members: list[Predictor], weights: list[float] | None = None, directory: Path | None = None):
        if not members:
            raise ConfigError("--checkpoint: an ensemble needs at least one model")
        first = members[0]
        for m in members[1:]:
            if m.class_names != first.class_names:
                raise ConfigError(f"--checkpoint: {m.checkpoint} predicts {m.class_names}, "
                                  f"{first.checkpoint} {first.class_names}: ensemble members must share classes")
        w = np.asarray(weights if weights else [1.0] * len(members), dtype=np.float64)
        if len(w) != len(members) or (w < 0).any() or w.sum() <= 0:
            raise ConfigError(f"--weights: {len(members)} non-negative weights expected, got {list(w)}")
        self.members, self.weights = members, w / w.sum()
        self.checkpoint = directory or first.checkpoint  # where a fitted postprocess.json lives
        self.cfg, self.pipeline, self.class_names = first.cfg, first.pipeline, first.class_names

    @classmethod
    def of_cv_run(cls, path: str | Path) -> Ensemble:
        run = Path(path)
        folds = sorted(p for p in run.glob("fold_*") if p.is_dir())
        members = []
        for f in folds:
            if ckpt_io.resolve(rundir.checkpoints_of(f) / rundir.BEST) is None and ckpt_io.resolve(f) is None:
                raise ConfigError(f"--checkpoint: {f} has no finished checkpoint; finish the cross-validation "
                                  f"with --resume {run}")
            members.append(Predictor.load(f))
        log.info("ensemble of the %d fold models of %s", len(members), run)
        return cls(members, directory=run)

    @property
    def background(self) -> int:
        return self.members[0].background

    def read(self, fmt: str, path: str, annotations: str | None = None) -> list[Recording]:
        return self.members[0].read(fmt, path, annotations)

    def postprocess(self, recs, probs, settings: PostprocessSettings) -> list[np.ndarray]:
        return self.members[0].postprocess(recs, probs, settings)

    def settings(self) -> PostprocessSettings:
        path = self.checkpoint / "postprocess.json"
        return PostprocessSettings.load(path) if path.is_file() else PostprocessSettings()

    def probabilities(self, recs: list[Recording], *, batch_size: int = 64) -> list[list[np.ndarray]]:
        from trainer.store import content_hash

        contents = [content_hash(r) for r in recs]  # once, not once per member's store lookup
        total = None
        for w, m in zip(self.weights, self.members):
            probs = m.probabilities(recs, batch_size=batch_size, contents=contents)
            total = ([[w * p for p in per] for per in probs] if total is None
                     else [[t + w * p for t, p in zip(tp, per)] for tp, per in zip(total, probs)])
        return total


def load_models(paths: list[str], weights: list[float] | None = None) -> Predictor | Ensemble:
    """One --checkpoint -> its Predictor (or a CV run's Ensemble); several -> their weighted Ensemble."""
    if len(paths) == 1 and not weights:
        return Predictor.load(paths[0])
    if weights and len(weights) != len(paths):
        raise ConfigError(f"--weights: one weight per --checkpoint ({len(paths)}), got {len(weights)}")
    members, per = [], []
    for i, p in enumerate(paths):
        m = Predictor.load(p)
        parts = m.members if isinstance(m, Ensemble) else [m]
        members += parts
        if weights:  # a CV run given one weight shares it among its folds
            per += [weights[i] / len(parts)] * len(parts)
    weights = per or None
    return Ensemble(members, weights)


def frame_table(recs: list[Recording], probs: list[list[np.ndarray]], class_names: list[str],
                labels: list[np.ndarray] | None = None) -> pd.DataFrame:
    """One row per frame and pair: video_id, frame, agent, target, pred, prob_<class>..., [final], true.

    `labels`: optional per recording (T, P) post-processed labels, written as `final`.
    """
    parts = []
    for i, (r, per_pair) in enumerate(zip(recs, probs)):
        for p, pr in enumerate(per_pair):
            a, t = r.pairs[p]
            pred = pr.argmax(axis=1)
            df = pd.DataFrame({
                "video_id": r.video_id,
                "frame": np.arange(r.num_frames),
                "agent": r.mouse_ids[a],
                "target": r.mouse_ids[t],
                "pred": np.asarray(class_names)[pred],
            })
            for c, name in enumerate(class_names):
                df[f"prob_{name}"] = pr[:, c].astype(np.float32)
            if labels is not None:
                df["final"] = np.asarray(class_names)[labels[i][:, p]]
            if r.labels is not None:
                y = r.labels[:, p]
                df["true"] = np.where(y == UNLABELLED, "", np.asarray(class_names)[np.maximum(y, 0)])
            parts.append(df)
    return pd.concat(parts, ignore_index=True)


def save_ethogram(path: Path, recs, probs, class_names, max_tracks: int = 8, background: str | None = None) -> None:
    from trainer.plots import ethogram_figure

    tracks = []
    for r, per_pair in zip(recs, probs):
        for p, pr in enumerate(per_pair):
            true = r.labels[:, p] if r.labels is not None else None
            tracks.append((f"{r.video_id} {r.pair_name(p)}", pr.argmax(axis=1), true))
    fig = ethogram_figure(tracks[:max_tracks], class_names, recs[0].fps, background=background)
    fig.savefig(path, dpi=100)


def select_recordings(pred: Predictor | Ensemble, args) -> list[Recording]:
    cfg = pred.cfg
    if args.input:
        return pred.read(args.format or cfg.data.format, args.input, args.annotations)
    if isinstance(pred, Ensemble):  # each member held out other videos: only new files are fair
        raise ConfigError("an ensemble (several --checkpoint or a cross-validation run) predicts files: "
                          "give them with --input (predict) / --data (evaluate)")
    train, val = load_splits(cfg)
    recs = {"val": val, "train": train, "all": train + val}[args.split]
    return conform(recs, bodyparts=pred.pipeline.bodyparts, units=cfg.data.units)


def settings_from_args(pred: Predictor, args) -> PostprocessSettings:
    """The checkpoint's (or --postprocess) settings with the command-line overrides applied."""
    settings = PostprocessSettings.load(args.postprocess) if args.postprocess else pred.settings()
    for key in ("smooth_window", "max_gap", "min_bout"):
        value = getattr(args, key)
        if value is not None:
            setattr(settings, key, value)
    return settings


def write_csv(table: pd.DataFrame, path: Path, **kwargs) -> None:
    """Write atomically: a crashed run never leaves half a CSV under the final name."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        table.to_csv(tmp, index=False, **kwargs)
        tmp.replace(path)
    except OSError as e:  # full or read-only disk: no half file left behind, one line
        remove_quietly(tmp)
        raise storage_error(e, path) or e from None


def user_errors(main):
    """Decorate predict's and evaluate's `main`: a ConfigError or DataError is one 'error:' line, exit 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except (ConfigError, DataError) as e:
            log.error("error: %s", e)
            return 2

    return wrapper


@contextlib.contextmanager
def checkpoint_models(args: argparse.Namespace):
    """The --checkpoint models (averaged with --weights), for the block that reads data with them:
    .npy pickles are read only when `--format calms21` was typed on this command line."""
    with npy_consent(args.format == "calms21"):
        yield load_models(args.checkpoint, args.weights)


@one_line_errors
@user_errors
def main(argv: list[str] | None = None) -> int:
    p = checkpoint_cli("python -m trainer.predict", __doc__.split("\n\n")[0])
    p.add_argument("--out", default="preds.csv", help="per-frame CSV to write")
    p.add_argument("--input", help="tracking file/dir to predict (default: the run's own validation videos)")
    p.add_argument("--format", help="reader for --input (default: the run's data.format)")
    p.add_argument("--annotations", default="",
                   help="dlc/sleap: annotation file/dir of --input, to also print scores (default: none read)")
    p.add_argument("--split", choices=["val", "train", "all"], default="val", help="without --input: which videos")
    p.add_argument("--batch-size", type=int, default=64)
    add_postprocess_args(p)
    args = p.parse_args(argv)
    with checkpoint_models(args) as pred:
        recs = select_recordings(pred, args)
        probs = pred.probabilities(recs, batch_size=args.batch_size)
        settings = settings_from_args(pred, args)
        labels = pred.postprocess(recs, probs, settings)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table = frame_table(recs, probs, pred.class_names, labels)
    write_csv(table, out, float_format="%.5f")
    intervals = out.with_name(f"{out.stem}_intervals.csv")
    write_csv(intervals_table(recs, labels, background=pred.background), intervals)
    if all(r.meta.get("format") == "mabe25" for r in recs):
        sub = out.with_name(f"{out.stem}_submission.csv")
        write_csv(submission_frame(recs, labels, background=pred.background), sub)
        log.info("wrote the Kaggle submission %s", sub)
    png = out.with_name(f"{out.stem}_ethogram.png")
    save_ethogram(png, recs, probs, pred.class_names, background=pred.class_names[pred.background])
    log.info("wrote %d frames of %d videos to %s, intervals to %s and the ethogram to %s",
             len(table), len(recs), out, intervals, png)
    if recs and all(r.labels is not None for r in recs):
        log.info("%s", score_report(pred, recs, probs, labels if settings != PostprocessSettings() else None))
    return 0


def score_report(pred: Predictor, recs: list[Recording], probs, post: list[np.ndarray] | None) -> str:
    """Where the true labels are known: evaluate's per-class F1 / macro F1 report of `pred` (and `final`)."""
    from trainer.evaluate import format_report, scores_of  # evaluate builds on this module

    raw = [np.stack([pr.argmax(axis=1) for pr in per_pair], axis=1) for per_pair in probs]
    return format_report({
        "videos": len(recs),
        "labelled_frames": int(sum((r.labels != UNLABELLED).sum() for r in recs)),
        "class_names": pred.class_names,
        "raw": scores_of(recs, raw, pred),
        "postprocessed": scores_of(recs, post, pred) if post is not None else None,
    })


def checkpoint_cli(prog: str, description: str) -> argparse.ArgumentParser:
    """Logging set up and a parser with --checkpoint (repeatable) and --weights: the start of predict's
    and evaluate's command lines (both load models with `load_models`)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--checkpoint", required=True, action="append",
                   help="checkpoint dir (runs/<name>/checkpoints/best), run dir or cross-validation run dir; "
                        "repeat to average several models")
    p.add_argument("--weights", type=float, nargs="+", help="one weight per --checkpoint (default: equal)")
    return p


def add_postprocess_args(p: argparse.ArgumentParser) -> None:
    """--postprocess/--smooth/--max-gap/--min-bout (shared with trainer.evaluate)."""
    p.add_argument("--postprocess", help="postprocess.json (default: the checkpoint's, else argmax)")
    p.add_argument("--smooth", dest="smooth_window", type=int, help="moving-mean window over probabilities, frames")
    p.add_argument("--max-gap", dest="max_gap", type=int, help="fill background gaps up to this many frames")
    p.add_argument("--min-bout", dest="min_bout", type=int, help="drop bouts shorter than this many frames")


if __name__ == "__main__":
    sys.exit(main())
