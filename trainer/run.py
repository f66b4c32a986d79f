"""Train a per-frame behaviour classifier.

    python trainer/run.py                                    # default: synthetic data, CPU, minutes
    python trainer/run.py --config configs/v4_conv_bilstm_a10g.yaml epochs=3 batch_size=16
    python trainer/run.py --resume runs/<name>               # continue an interrupted run
    accelerate launch --multi_gpu --num_processes 2 trainer/run.py ...   # several processes / GPUs

`train(cfg, ...)` is the one training entry: tune.py, modal_cluster.py and benchmarks call it.

train() reads top to bottom: choose the run directory and Accelerator, lock the directory,
build everything (trainer/build.py: data, model, optimizer, loaders, schedulers), resume,
then per epoch train_one_epoch / evaluate (trainer/engine.py), checkpoint (trainer/runfiles.py)
and log (trainer/report.py); at the end metrics.json and the per-class table.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python/accelerate launch trainer/run.py)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import contextlib
import logging
import time
from collections.abc import Callable

import torch
from accelerate.utils import broadcast_object_list, set_seed

from trainer import checkpoint as ckpt_io
from trainer import rundir
from trainer.build import Setup, build_training, make_accelerator
from trainer.config import Config, ConfigError, load_yaml, make_config
from trainer.data.calms21 import npy_consent
from trainer.data.recording import DataError
from trainer.ema import FILE as EMA_FILE
from trainer.engine import NonFiniteLossError, evaluate, train_one_epoch
from trainer.models import count_parameters, model_trainer
from trainer.report import epoch_row, final_metrics, hparams_of, log_epoch, report, write_hparams
from trainer.runfiles import resolve_run, save_checkpoint, take_run_dir, write_run_info

log = logging.getLogger("trainer")

USER_ERRORS = (ConfigError, DataError, NonFiniteLossError)


# ============================================================================ training


def train(
    cfg: Config,
    *,
    recordings=None,
    on_epoch_end: Callable[[dict], None] | None = None,
    on_checkpoint: Callable[[Path], None] | None = None,
    hparam_keys: list[str] | None = None,
) -> dict:
    """Train `cfg` to the end (or early stop) and return the final metrics dict.

    recordings: optional (train, val) lists of Recording (skips reading/splitting).
    on_epoch_end(metrics): called on the main process after every epoch (Ray Tune reports here).
    on_checkpoint(path): called after each checkpoint is published (Modal commits its volume here).
    hparam_keys: config keys shown in TensorBoard's HParams tab (a sweep's swept keys); default all
    hyper-parameters.
    Raises ConfigError / DataError / NonFiniteLossError for user-caused problems.
    """
    custom = model_trainer(cfg.model_type)  # e.g. gbdt: fitted by scikit-learn (trainer/gbdt.py)
    if custom is not None:
        return custom(cfg, recordings=recordings, on_epoch_end=on_epoch_end, on_checkpoint=on_checkpoint)
    t_start = time.perf_counter()
    if cfg.threads:  # a shared machine: torch's one-thread-per-core default stalls when another job holds a core
        torch.set_num_threads(cfg.threads)
    run_dir, resume_from = resolve_run(cfg)
    accelerator, precision = make_accelerator(cfg, run_dir)
    run_dir = Path(broadcast_object_list([str(run_dir)])[0])  # auto names use the clock: agree on one
    main_proc = accelerator.is_main_process
    if not main_proc:
        logging.getLogger().setLevel(logging.WARNING)
    lock = take_run_dir(accelerator, run_dir, cfg)
    try:
        return _train(cfg, accelerator, precision, run_dir, resume_from, t_start, recordings, on_epoch_end,
                      on_checkpoint, hparam_keys)
    finally:
        if lock is not None:
            lock.release()


def _train(cfg, accelerator, precision, run_dir, resume_from, t_start, recordings, on_epoch_end,
           on_checkpoint, hparam_keys=None) -> dict:
    main_proc = accelerator.is_main_process
    s = build_training(cfg, accelerator, precision, recordings=recordings)
    data, model, optimizer = s.data, s.model, s.optimizer
    state = _resume(s, accelerator, run_dir, resume_from)
    n_params = count_parameters(accelerator.unwrap_model(model))
    if main_proc:
        write_run_info(run_dir, cfg, precision, n_params, accelerator, data)
    # event files directly in the run directory: `tensorboard --logdir runs` names the run by its name
    accelerator.init_trackers("")
    writer = accelerator.get_tracker("tensorboard", unwrap=True) if main_proc else None
    if writer is not None and resume_from is None:
        write_hparams(writer, hparams_of(cfg, precision, hparam_keys))
    log.info("%s: %s params, %d train windows (%d steps/epoch), %d val frames, features %d, precision %s, %s",
             run_dir.name, f"{n_params:,}", len(data.train_ds), s.steps_per_epoch,
             sum(q.num_frames for q in data.val_seqs), data.pipeline.dim, precision, accelerator.device)

    # an early-stopped run stays stopped; a run that reached its last epoch continues only if epochs grew
    last_epoch = state["epoch"] if state.get("early_stopped") else cfg.epochs
    if resume_from is not None and state["epoch"] >= last_epoch:
        log.info("%s already finished at epoch %d; nothing to train", run_dir.name, state["epoch"])
    try:
        for epoch in range(state["epoch"] + 1, last_epoch + 1):
            set_seed(cfg.seed + epoch)  # dropout etc. depend on (seed, epoch) only: resume == uninterrupted
            s.train_loader.set_epoch(epoch)
            s.sampler.set_epoch(epoch)
            data.train_ds.set_epoch(epoch)
            if accelerator.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(accelerator.device)
            tr = train_one_epoch(
                model, s.train_loader, optimizer, accelerator, epoch=epoch, loss_kwargs=s.loss_kwargs,
                grad_clip=cfg.grad_clip, step_scheduler=s.step_sched,
                mixup_alpha=cfg.mixup_alpha if cfg.use_augmentation else 0.0, log_every=cfg.log_every,
                global_step=state["global_step"], seed=cfg.seed, total_epochs=cfg.epochs, ema=s.ema,
            )
            with s.ema.applied(accelerator.unwrap_model(model)) if s.ema is not None else contextlib.nullcontext():
                ev = evaluate(model, s.val_loader, accelerator, data.val_seqs, class_names=data.class_names,
                              background=data.background, gap=cfg.frame_gap, length=data.length)
            score = ev["macro_f1"]
            if s.plateau is not None and (s.step_sched is None or s.step_sched.n >= s.step_sched.steps):
                s.plateau.step(score)
            improved = score > state["best_score"]
            state.update(epoch=epoch, global_step=tr["global_step"], wall_time_s=state["wall_time_s"] + tr["time_s"])
            if improved:
                state.update(best_score=score, best_epoch=epoch, bad_epochs=0, best_scores=ev)
            else:
                state["bad_epochs"] += 1
            stop = bool(cfg.early_stopping_patience) and state["bad_epochs"] >= cfg.early_stopping_patience
            state.update(finished=stop or epoch == cfg.epochs, early_stopped=stop)
            row = epoch_row(epoch, tr, ev, optimizer, accelerator, data.class_names)
            state.setdefault("history", []).append(row)
            last = save_checkpoint(accelerator, run_dir, cfg, epoch, state, s.meta, improved, model, optimizer,
                                   s.objects, s.ema)
            if main_proc:
                log_epoch(accelerator, writer, run_dir, row, ev, data.class_names, best=state["best_score"])
                if on_checkpoint is not None:
                    on_checkpoint(last)
                if on_epoch_end is not None:
                    on_epoch_end(dict(row, best_val_macro_f1=state["best_score"], checkpoint=str(last)))
            if stop:
                log.info("early stopping: no val macro-F1 gain for %d epochs", state["bad_epochs"])
                break
    except KeyboardInterrupt:
        log.warning("interrupted; the last checkpoint is intact: continue with --resume %s", run_dir)
        raise
    finally:
        accelerator.end_training()

    final = final_metrics(state, data.class_names, precision, time.perf_counter() - t_start, run_dir,
                          run_dir / cfg.checkpoint_dir / rundir.BEST)
    if main_proc:
        ckpt_io.write_json(run_dir / rundir.METRICS_JSON, final)
        report(accelerator, final)
    return final


def _resume(s: Setup, accelerator, run_dir, resume_from) -> dict:
    """The trainer state to continue from: a fresh one, or the checkpoint's (weights, optimizer, schedulers, EMA loaded)."""
    if resume_from is None:
        return {"epoch": 0, "global_step": 0, "best_score": -1.0, "best_epoch": 0, "bad_epochs": 0,
                "best_scores": None, "finished": False, "early_stopped": False, "wall_time_s": 0.0}
    if s.ema is not None and (resume_from / EMA_FILE).is_file():
        s.ema.load(resume_from)
    state = ckpt_io.read_state(resume_from)
    ckpt_io.load_training(resume_from, accelerator.unwrap_model(s.model), s.optimizer, s.objects)
    log.info("resuming %s from %s (epoch %d done)", run_dir, resume_from, state["epoch"])
    return state


# ============================================================================ CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="trainer/run.py",
        description="Train a frame-by-frame mouse behaviour classifier (defaults: synthetic data, CPU).",
        epilog="Overrides: key=value, dotted for nested keys, e.g. epochs=3 model_type=transformer "
        "class_weights=[1,5,5,5] data.format=calms21 data.path=data/calms21_task1_train.json",
    )
    p.add_argument("--config", help="YAML file (keys as in trainer/config.py; see configs/)")
    p.add_argument("--resume", help="run directory or checkpoint to continue (or 'auto')")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    return p


def resolve_config(args: argparse.Namespace) -> Config:
    """Config from --config/--resume/overrides; resuming a run starts from that run's saved config."""
    base = None
    overrides = list(args.overrides)
    if args.resume:
        overrides.append(f"resume={args.resume}")
        if args.resume != "auto" and (Path(args.resume) / "folds.json").is_file():  # a cross-validation (trainer/cv.py)
            base = load_yaml(Path(args.resume) / rundir.CONFIG)
        elif args.resume != "auto":
            ck = ckpt_io.resolve(args.resume)
            if ck is None:
                raise ConfigError(f"--resume: no complete checkpoint in '{args.resume}'")
            run = ck.parent.parent
            base = load_yaml(run / rundir.CONFIG) if (run / rundir.CONFIG).is_file() else None
            overrides += [f"name={run.name}", f"output_dir={run.parent}"]
    return make_config(args.config, overrides, base=base)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # its per-file save/load chatter
    args = build_parser().parse_args(argv)
    # CalMS21 .npy files are pickles: read only if the user typed the format on this command line
    typed_calms21 = any(o.replace(" ", "") == "data.format=calms21" for o in args.overrides)
    try:
        cfg = resolve_config(args)
        with npy_consent(typed_calms21):
            if cfg.data.fold == -1:  # every fold of data.split=kfold/by_time: trainer/cv.py (it imports this module)
                from trainer.cv import cross_validate

                cross_validate(cfg)
            else:
                train(cfg)
    except USER_ERRORS as e:
        logging.getLogger("trainer").error("error: %s", e)
        return 1 if isinstance(e, NonFiniteLossError) else 2
    except OSError as e:  # a full or read-only disk is the user's to fix: one line; other OSErrors stay loud
        err = rundir.storage_error(e)
        if err is None:
            raise
        logging.getLogger("trainer").error("error: %s", err)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
