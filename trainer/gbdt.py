"""Train the per-frame gradient-boosted classifier (`model_type=gbdt`) outside the Accelerate loop.

    python trainer/run.py --config configs/rat46_base.yaml model_type=gbdt data.path=... data.annotation_path=...

Shares everything else with the networks: readers and splits, the feature pipeline (fitted
on the training videos, stored in the checkpoint), the frame metrics, the run directory
(config.yaml, command.txt, env.json, metrics.jsonl, metrics.json, tb/, checkpoints/last and
best with meta.json) and predict/evaluate, which load the trees as a `GBDTModel`.

How it trains (scikit-learn HistGradientBoostingClassifier):
  * rows = every `gbdt_frame_stride`-th frame of every training sequence (neighbouring
    frames are near duplicates), unlabelled frames (-1) left out, weighted by `class_weights`;
  * the model sees context only through features, so `rolling_stats` (long centred rolling
    means/stds, trainer/features_rolling.py) is appended to `features` unless
    `gbdt_rolling=false`;
  * early stopping on the log-loss of `gbdt_validation_fraction` of the *training videos*
    (held out by video: neighbouring frames of one video in both halves would never stop);
  * the validation videos are only scored, never used to choose anything: metrics.jsonl
    has one row per `gbdt_eval_every` iterations (the staged model on val, for curves),
    and best/ = last/ = the fitted model.

The checkpoint is the trees as arrays in model.safetensors plus JSON: nothing pickled.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from safetensors.torch import save_file

from trainer import checkpoint as ckpt_io
from trainer import rundir
from trainer.build import checkpoint_meta, prepare_data
from trainer.config import Config, ConfigError
from trainer.engine import masked_argmax
from trainer.metrics import frame_scores
from trainer.models.gbdt import ABSENT_LOGIT, GBDTModel, TreeEnsemble
from trainer.report import final_metrics, hparams_of, peak_memory_mb, report, write_hparams
from trainer.runfiles import resolve_run, write_run_info

log = logging.getLogger("trainer")

# ----------------------------------------------------------------------------- helpers


def check_config(cfg: Config) -> None:
    """One-line ConfigErrors for the gbdt_* keys."""
    rules = [
        (cfg.gbdt_max_iter >= 1, "gbdt_max_iter", ">= 1"),
        (cfg.gbdt_learning_rate > 0, "gbdt_learning_rate", "> 0"),
        (cfg.gbdt_max_leaf_nodes >= 2, "gbdt_max_leaf_nodes", ">= 2"),
        (cfg.gbdt_min_samples_leaf >= 1, "gbdt_min_samples_leaf", ">= 1"),
        (cfg.gbdt_l2_regularization >= 0, "gbdt_l2_regularization", ">= 0"),
        (2 <= cfg.gbdt_max_bins <= 255, "gbdt_max_bins", "in 2..255"),
        (cfg.gbdt_frame_stride >= 1, "gbdt_frame_stride", ">= 1"),
        (0 < cfg.gbdt_validation_fraction < 1, "gbdt_validation_fraction", "in (0, 1)"),
        (cfg.gbdt_n_iter_no_change >= 1, "gbdt_n_iter_no_change", ">= 1"),
        (cfg.gbdt_eval_every >= 1, "gbdt_eval_every", ">= 1"),
    ]
    for ok, key, want in rules:
        if not ok:
            raise ConfigError(f"config key '{key}' must be {want}, got {getattr(cfg, key)!r}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("model_type=gbdt trains in one process; run it without accelerate's --num_processes")


def gbdt_config(cfg: Config) -> Config:
    """`cfg` with `rolling_stats` appended to features when gbdt_rolling (the trees' only context)."""
    if cfg.gbdt_rolling and cfg.use_feature_engineering and "rolling_stats" not in cfg.features:
        return dataclasses.replace(cfg, features=[*cfg.features, "rolling_stats"])
    return cfg


def export_trees(clf) -> TreeEnsemble:
    """A fitted HistGradientBoostingClassifier -> TreeEnsemble (flat arrays, global node ids)."""
    fields = ("feature_idx", "num_threshold", "left", "right", "missing_go_to_left", "is_leaf", "value",
              "is_categorical")
    parts = {f: [] for f in fields}
    roots, offset = [], 0
    for iteration in clf._predictors:
        row = []
        for tree in iteration:
            nodes = tree.nodes
            if nodes["is_categorical"].any():
                raise ValueError("categorical splits are not exported; fit with categorical_features=None")
            for f in fields:
                v = nodes[f].astype(np.int64) + offset if f in ("left", "right") else nodes[f]
                parts[f].append(v)
            row.append(offset)
            offset += len(nodes)
        roots.append(row)
    cat = {f: np.concatenate(v) for f, v in parts.items()}
    K = clf.n_trees_per_iteration_
    return TreeEnsemble(
        feature=cat["feature_idx"].astype(np.int64),
        threshold=cat["num_threshold"].astype(np.float64),
        left=cat["left"],
        right=cat["right"],
        missing_left=cat["missing_go_to_left"].astype(bool),
        is_leaf=cat["is_leaf"].astype(bool),
        value=cat["value"].astype(np.float64),
        roots=np.asarray(roots, dtype=np.int64).reshape(-1, K),
        baseline=np.asarray(clf._baseline_prediction, dtype=np.float64).reshape(-1),
        classes=np.asarray(clf.classes_, dtype=np.int64),
    )


def frame_rows(seqs, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Every `stride`-th frame of each sequence, labelled frames only: X (N, F) float32, y (N,)."""
    xs, ys = [], []
    for s in seqs:
        idx = np.arange(0, s.num_frames, stride)
        idx = idx[s.y[idx] >= 0]
        xs.append(s.x[idx])
        ys.append(s.y[idx])
    F = seqs[0].x.shape[1] if seqs else 0
    return (np.concatenate(xs) if xs else np.zeros((0, F), np.float32)), (np.concatenate(ys) if ys else np.zeros(0, int))


def stopping_split(seqs, fraction: float, seed: int) -> tuple[list, list]:
    """(fit, stop) sequences: round(fraction x videos) whole training videos (>= 1) for early stopping."""
    videos = sorted({s.video_id for s in seqs})
    if len(videos) < 2:
        return seqs, []
    order = np.random.default_rng(seed).permutation(len(videos))
    n = min(len(videos) - 1, max(1, round(fraction * len(videos))))
    stop = {videos[i] for i in order[:n]}
    return [s for s in seqs if s.video_id not in stop], [s for s in seqs if s.video_id in stop]


def fit(cfg: Config, train_seqs, num_classes: int):
    """Fit the classifier on the training sequences; returns (clf, fit info dict)."""
    from sklearn.ensemble import HistGradientBoostingClassifier  # only the gbdt trainer needs sklearn

    fit_seqs, stop_seqs = (stopping_split(train_seqs, cfg.gbdt_validation_fraction, cfg.seed)
                           if cfg.gbdt_early_stopping else (train_seqs, []))
    if cfg.gbdt_early_stopping and not stop_seqs:
        log.warning("gbdt_early_stopping needs >= 2 training videos; fitting all %d iterations", cfg.gbdt_max_iter)
    X, y = frame_rows(fit_seqs, cfg.gbdt_frame_stride)
    if len(np.unique(y)) < 2:
        raise ConfigError(f"the training frames hold {len(np.unique(y))} class(es); the GBDT needs at least 2 "
                          "(more labelled videos, or a smaller gbdt_frame_stride)")
    weights = np.asarray(cfg.class_weights or [1.0] * num_classes, dtype=np.float64)
    clf = HistGradientBoostingClassifier(
        learning_rate=cfg.gbdt_learning_rate, max_iter=cfg.gbdt_max_iter, max_leaf_nodes=cfg.gbdt_max_leaf_nodes,
        min_samples_leaf=cfg.gbdt_min_samples_leaf, l2_regularization=cfg.gbdt_l2_regularization,
        max_bins=cfg.gbdt_max_bins, categorical_features=None, early_stopping=bool(stop_seqs),
        n_iter_no_change=cfg.gbdt_n_iter_no_change, scoring="loss", random_state=cfg.seed,
    )
    kwargs = {}
    if stop_seqs:
        Xv, yv = frame_rows(stop_seqs, cfg.gbdt_frame_stride)
        keep = np.isin(yv, np.unique(y))  # sklearn refuses classes it did not train on
        kwargs = {"X_val": Xv[keep], "y_val": yv[keep], "sample_weight_val": weights[yv[keep]]}
    t0, c0 = time.perf_counter(), time.process_time()
    clf.fit(X, y, sample_weight=weights[y], **kwargs)
    info = {"fit_time_s": time.perf_counter() - t0, "fit_cpu_s": time.process_time() - c0, "train_frames": int(len(y)),
            "stopping_frames": int(len(kwargs.get("y_val", []))), "iterations": int(clf.n_iter_),
            "features": int(X.shape[1])}
    return clf, info


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def staged_scores(ens: TreeEnsemble, seqs, *, every: int, class_names: list[str], background: str) -> list[dict]:
    """Frame scores on `seqs` after every `every` iterations (and the last): list of dicts.

    Each dict: frame_scores(...) + val_loss (unweighted mean cross entropy over labelled
    frames) + iterations. Leaf sums are accumulated block by block: one pass over the trees.
    """
    C = len(class_names)
    raw = [np.zeros((s.num_frames, ens.roots.shape[1])) + ens.baseline for s in seqs]
    xs = [np.asarray(s.x, dtype=np.float32) for s in seqs]  # s.x may be a row source: finish every row once
    stops = sorted({*range(every, ens.num_iterations, every), ens.num_iterations})
    y = np.concatenate([s.y for s in seqs])
    keep = y >= 0
    out, start = [], 0
    for stop in stops:
        for r, x in zip(raw, xs):
            r += ens.raw_predict(x, start, stop)
        start = stop
        logits = [np.where(s.class_mask[None], ens.to_logits(r, C), ABSENT_LOGIT) for r, s in zip(raw, seqs)]
        lg = np.concatenate(logits)
        loss = float(-_log_softmax(lg[keep])[np.arange(keep.sum()), y[keep]].mean()) if keep.any() else 0.0
        pred = np.concatenate([masked_argmax(z, s.class_mask) for z, s in zip(logits, seqs)])
        out.append(dict(frame_scores(y, pred, class_names, background), val_loss=loss, iterations=stop))
    return out


def save_checkpoint(root: Path, model: GBDTModel, meta: dict, state: dict) -> Path:
    """checkpoints/last (tree arrays in safetensors + meta/state JSON), copied to best/; atomic."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{rundir.LAST}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / ckpt_io.WEIGHTS),
              metadata={"format": "pt"})
    ckpt_io.write_json(tmp / ckpt_io.META, meta)
    ckpt_io.write_json(tmp / ckpt_io.STATE, state)
    ckpt_io.write_manifest(tmp)  # sizes + sha256: verified when predict/evaluate load it
    ckpt_io.publish(tmp, root / rundir.LAST)
    ckpt_io.copy_checkpoint(root / rundir.LAST, root / rundir.BEST)
    return root / rundir.LAST


def log_rows(run_dir: Path, rows: list[dict], scores: list[dict], class_names: list[str], hparams: dict) -> None:
    """metrics.jsonl + TensorBoard (step = boosting iterations), like the networks' tags."""
    from torch.utils.tensorboard import SummaryWriter

    from trainer.plots import confusion_figure

    writer = SummaryWriter(str(run_dir / "tb"))
    write_hparams(writer, hparams)
    with open(run_dir / rundir.METRICS_JSONL, "a") as f:
        for row, ev in zip(rows, scores):
            f.write(json.dumps(row) + "\n")
            step = row["iterations"]
            for tag, key in (("train/loss", "train_loss"), ("val/loss", "val_loss"), ("val/macro_f1", "val_macro_f1"),
                             ("val/accuracy", "val_accuracy"), ("perf/it_per_s", "it_per_s")):
                writer.add_scalar(tag, row[key], step)
            for c in class_names:
                if ev["f1"][c] is not None:
                    writer.add_scalar(f"val_f1/{c}", ev["f1"][c], step)
    writer.add_figure("val/confusion", confusion_figure(scores[-1]["confusion"], class_names), rows[-1]["iterations"])
    writer.close()


# ----------------------------------------------------------------------------- entry


def train_gbdt(
    cfg: Config,
    *,
    recordings=None,
    on_epoch_end: Callable[[dict], None] | None = None,
    on_checkpoint: Callable[[Path], None] | None = None,
) -> dict:
    """trainer.run.train() for model_type=gbdt: same arguments, run directory and return value."""
    t_start = time.perf_counter()
    check_config(cfg)
    cfg = gbdt_config(cfg)
    run_dir, resume_from = resolve_run(cfg)
    if resume_from is not None and ckpt_io.read_state(resume_from).get("finished"):
        log.info("%s is already trained (the GBDT fits in one go); nothing to resume", run_dir)
        return json.loads((run_dir / rundir.METRICS_JSON).read_text())
    data = prepare_data(cfg, recordings)
    C = len(data.class_names)
    train_seqs = data.train_ds.seqs
    clf, info = fit(cfg, train_seqs, C)
    ens = export_trees(clf)
    model = GBDTModel(input_dim=data.pipeline.dim, num_classes=C).set_ensemble(ens)
    log.info("%s: gbdt %d iterations x %d trees (%d nodes), %d training frames (stride %d), %d features, "
             "fit %.1f s", run_dir.name, info["iterations"], ens.roots.shape[1], len(ens.value), info["train_frames"],
             cfg.gbdt_frame_stride, info["features"], info["fit_time_s"])

    scores = staged_scores(ens, data.val_seqs, every=cfg.gbdt_eval_every, class_names=data.class_names,
                           background=data.background)
    X, y = frame_rows(train_seqs, max(cfg.gbdt_frame_stride, 1 + sum(s.num_frames for s in train_seqs) // 20_000))
    train_losses = [s["val_loss"] for s in staged_scores(
        ens, [dataclasses.replace(train_seqs[0], x=X, y=y, class_mask=np.ones(C, bool))],
        every=cfg.gbdt_eval_every, class_names=data.class_names, background=data.background)]
    rows = []
    for i, (ev, tl) in enumerate(zip(scores, train_losses), start=1):
        row = {"epoch": i, "iterations": ev["iterations"], "train_loss": tl, "val_loss": ev["val_loss"],
               "val_macro_f1": ev["macro_f1"], "val_accuracy": ev["accuracy"], "lr": cfg.gbdt_learning_rate,
               "epoch_time_s": info["fit_time_s"] * ev["iterations"] / ens.num_iterations,
               "it_per_s": ens.num_iterations / max(info["fit_time_s"], 1e-9),
               "samples_per_s": info["train_frames"] * ens.num_iterations / max(info["fit_time_s"], 1e-9),
               "peak_mem_mb": peak_memory_mb(torch.device("cpu"))}
        row.update({f"val_f1_{c}": ev["f1"][c] for c in data.class_names})
        rows.append(row)
    final_ev = scores[-1]
    state = {"epoch": len(rows), "global_step": ens.num_iterations, "best_score": final_ev["macro_f1"],
             "best_epoch": len(rows), "bad_epochs": 0, "best_scores": final_ev, "finished": True,
             "wall_time_s": info["fit_time_s"], "history": rows}
    meta = dict(checkpoint_meta(cfg, data, "fp32"),
                gbdt=dict(info, trees_per_iteration=int(ens.roots.shape[1]), nodes=int(len(ens.value))))

    write_run_info(run_dir, cfg, "fp32", int(len(ens.value)),
                   SimpleNamespace(device=torch.device("cpu"), num_processes=1), data)
    last = save_checkpoint(run_dir / cfg.checkpoint_dir, model, meta, state)
    log_rows(run_dir, rows, scores, data.class_names, hparams_of(cfg, "fp32"))
    if on_checkpoint is not None:
        on_checkpoint(last)
    if on_epoch_end is not None:
        for row in rows:
            on_epoch_end(dict(row, best_val_macro_f1=state["best_score"], checkpoint=str(last)))
    final = final_metrics(state, data.class_names, "fp32", time.perf_counter() - t_start, run_dir,
                          run_dir / cfg.checkpoint_dir / rundir.BEST)
    final["gbdt"] = meta["gbdt"]
    ckpt_io.write_json(run_dir / rundir.METRICS_JSON, final)
    report(SimpleNamespace(print=print), final)  # the networks' end-of-run table on stdout
    return final
