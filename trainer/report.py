"""What a run reports: metrics.jsonl rows, TensorBoard scalars and hyper-parameters, metrics.json, the end table.

Shared by the networks' loop (trainer/run.py) and the GBDT (trainer/gbdt.py), so both runs
read the same in TensorBoard and on the command line.
"""

from __future__ import annotations

import json
import logging
import resource
from pathlib import Path

import torch

from trainer import rundir
from trainer.config import Config, flat_dict

log = logging.getLogger("trainer")


# TensorBoard tags. The Scalars tab sorts groups by name and opens the first: validation first,
# per-epoch training next, per-step charts and throughput after (engine.py logs the per-step ones).
TAG_VAL, TAG_VAL_F1, TAG_TRAIN, TAG_PERF = "0_val", "1_val_f1", "2_train_epoch", "4_perf"
HPARAM_METRIC = f"{TAG_VAL}/best_macro_f1"  # the run's result so far: what checkpoints/best holds


def write_hparams(writer, hparams: dict) -> None:
    """HParams-plugin summary in the run's own event file, linked to the best-so-far val macro F1."""
    from torch.utils.tensorboard.summary import hparams as hp_summary

    exp, ssi, sei = hp_summary(hparams, {HPARAM_METRIC: 0.0, f"{TAG_VAL}/macro_f1": 0.0, f"{TAG_VAL}/loss": 0.0})
    for s in (exp, ssi, sei):
        writer.file_writer.add_summary(s)
    writer.flush()


# Config keys that are not hyper-parameters: where a run lives, how it is logged, which hardware
# runs it. TensorBoard's HParams tab shows them first when they differ between runs (run names do).
NOT_HPARAMS = frozenset({
    "name", "output_dir", "resume", "device", "log_every", "train_data_dir", "val_data_dir", "num_workers",
    "threads", "input_dim", "num_classes", "checkpoint_dir", "save_freq", "modal_gpu", "modal_timeout",
    "mixed_precision",  # replaced by precision_used, the precision really trained in
})
# data.* keys that change what is learned from (format, split); the rest are paths and reader details
HPARAM_DATA_KEYS = frozenset({
    "data.format", "data.split", "data.val_fraction", "data.num_folds", "data.fold", "data.split_seed",
    "data.skeleton", "data.units", "data.min_likelihood",
})


def is_hparam(key: str) -> bool:
    """True for dotted config keys that are hyper-parameters (model, optimisation, loss, augmentation,
    window, features, data format/split)."""
    return key in HPARAM_DATA_KEYS if key.startswith("data.") else key not in NOT_HPARAMS


def hparams_of(cfg: Config, precision: str, keys: list[str] | None = None) -> dict:
    """Flat, TensorBoard-safe hyper-parameters: lists become one entry per element (class_weights_0, ...).

    keys: only these config keys (a sweep's swept keys); default: every hyper-parameter and the
    precision used.
    """
    wanted = set(keys) if keys is not None else None
    out = {}
    for k, v in flat_dict(cfg.to_dict()).items():
        if not (k in wanted if wanted is not None else is_hparam(k)):
            continue
        if isinstance(v, list):
            if k == "class_weights" or all(isinstance(x, int | float) for x in v):
                out.update({f"{k}_{i}": float(x) for i, x in enumerate(v)})
            else:
                out[k] = ",".join(map(str, v))
        elif isinstance(v, int | float | str | bool):
            out[k] = v
        else:
            out[k] = str(v)
    if wanted is None:
        out["precision_used"] = precision
    return out


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process in MiB: allocated CUDA memory on a GPU, max resident set size on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def epoch_row(epoch, tr, ev, optimizer, accelerator, class_names) -> dict:
    """One metrics.jsonl row: train_one_epoch's `tr` and evaluate's `ev` dicts, lr, throughput, memory."""
    row = {
        "epoch": epoch,
        "train_loss": tr["train_loss"],
        "val_loss": ev["val_loss"],
        "val_macro_f1": ev["macro_f1"],
        "val_accuracy": ev["accuracy"],
        "lr": optimizer.param_groups[0]["lr"],
        "epoch_time_s": tr["time_s"],
        "it_per_s": tr["steps"] / max(tr["time_s"], 1e-9),
        "samples_per_s": tr["samples"] / max(tr["time_s"], 1e-9),
        "peak_mem_mb": peak_memory_mb(accelerator.device),
    }
    row.update({f"val_f1_{c}": ev["f1"][c] for c in class_names})
    return row


def log_epoch(accelerator, writer, run_dir: Path, row: dict, ev: dict, class_names: list[str], *,
              best: float) -> None:
    """metrics.jsonl + TensorBoard scalars (best: best val macro F1 so far) and the confusion-matrix image."""
    with open(run_dir / rundir.METRICS_JSONL, "a") as f:
        f.write(json.dumps(row) + "\n")
    epoch = row["epoch"]
    scalars = {
        HPARAM_METRIC: best, f"{TAG_VAL}/macro_f1": row["val_macro_f1"],
        f"{TAG_VAL}/loss": row["val_loss"], f"{TAG_VAL}/accuracy": row["val_accuracy"],
        f"{TAG_TRAIN}/loss": row["train_loss"], f"{TAG_TRAIN}/lr": row["lr"],
        f"{TAG_PERF}/it_per_s": row["it_per_s"], f"{TAG_PERF}/samples_per_s": row["samples_per_s"],
        f"{TAG_PERF}/peak_mem_mb": row["peak_mem_mb"],
    }
    scalars.update({f"{TAG_VAL_F1}/{c}": ev["f1"][c] for c in class_names if ev["f1"][c] is not None})
    accelerator.log(scalars, step=epoch)
    if writer is not None:
        from trainer.plots import confusion_figure

        writer.add_figure(f"{TAG_VAL}/confusion", confusion_figure(ev["confusion"], class_names), epoch)
        writer.flush()
    f1 = " ".join(f"{c}={ev['f1'][c]:.3f}" for c in class_names if ev["f1"][c] is not None)
    log.info("epoch %d  train_loss %.4f  val_loss %.4f  val_macro_f1 %.4f  [%s]  %.1f it/s",
             epoch, row["train_loss"], row["val_loss"], row["val_macro_f1"], f1, row["it_per_s"])


def final_metrics(state: dict, class_names, precision: str, wall: float, run_dir: Path,
                  best_checkpoint: Path) -> dict:
    """metrics.json (and train()'s return value): the best epoch's scores and where the run lives."""
    best = state.get("best_scores") or {}
    return {
        "run_dir": str(run_dir),
        "best_epoch": state["best_epoch"],
        "epochs_run": state["epoch"],
        "val_macro_f1": state["best_score"],
        "f1": best.get("f1"),
        "accuracy": best.get("accuracy"),
        "confusion": best.get("confusion"),
        "support": best.get("support"),
        "class_names": class_names,
        "precision_used": precision,
        "train_time_s": state["wall_time_s"],
        "wall_time_s": wall,
        "checkpoint": str(best_checkpoint),
    }


def report(accelerator, final: dict) -> None:
    """The end-of-run table (per-class F1 of the best epoch) on the main process's stdout."""
    lines = [f"\nvalidation (best epoch {final['best_epoch']} of {final['epochs_run']}), frame F1 per class:"]
    for c in final["class_names"]:
        v = (final["f1"] or {}).get(c)
        lines.append(f"  {c:<16s} {'n/a' if v is None else f'{v:.3f}'}   ({(final['support'] or {}).get(c, 0)} frames)")
    lines.append(f"  {'macro F1':<16s} {final['val_macro_f1']:.3f}   (behaviours, background excluded)")
    lines.append(f"run directory: {final['run_dir']}   ({final['wall_time_s']:.0f} s)")
    accelerator.print("\n".join(lines))
