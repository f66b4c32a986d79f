"""Writing a training run's directory: which one (and which checkpoint to resume), its lock,
its record of what ran (config.yaml, command.txt, env.json) and its checkpoints.

The layout's names live in trainer/rundir.py; this module writes them (it needs torch and
Accelerate, rundir.py does not).
"""

from __future__ import annotations

import logging
import platform
import shutil
import time
from pathlib import Path

import torch
from accelerate.utils import broadcast_object_list
from safetensors import SafetensorError

from trainer import checkpoint as ckpt_io
from trainer import rundir
from trainer.config import Config, ConfigError, config_to_yaml
from trainer.provenance import command_line, git_sha, versions

log = logging.getLogger("trainer")


# ============================================================================ which run


def auto_name(cfg: Config) -> str:
    """<model_type>-<YYYYmmdd-HHMMSS>: the run name when none is given."""
    return f"{cfg.model_type}-{time.strftime('%Y%m%d-%H%M%S')}"


def latest_resumable(output_dir: Path, checkpoint_dir: str) -> Path | None:
    """Newest run under output_dir with an unfinished checkpoint; damaged ones are skipped, with a warning."""
    runs = []
    for d in output_dir.glob("*"):
        ck = ckpt_io.resolve(d, checkpoint_dir) if d.is_dir() else None
        try:
            if ck is not None and not ckpt_io.read_state(ck)["finished"]:
                runs.append(d)
        except ckpt_io.CheckpointError as e:
            log.warning("resume=auto skips %s: %s", d, e)
    return max(runs, key=lambda d: d.stat().st_mtime, default=None)


def resolve_run(cfg: Config) -> tuple[Path, Path | None]:
    """(run directory, checkpoint to resume or None) from name/output_dir/resume."""
    out = Path(cfg.output_dir)
    if cfg.name:
        rundir.check_name(cfg.name, "config key 'name'")
    rundir.check_name(cfg.checkpoint_dir, "config key 'checkpoint_dir'")
    if cfg.resume and cfg.resume != "auto":
        ck = ckpt_io.resolve(cfg.resume) or ckpt_io.resolve(cfg.resume, cfg.checkpoint_dir)
        if ck is None:
            raise ConfigError(f"resume: no complete checkpoint in '{cfg.resume}' (expected a run dir or checkpoint dir)")
        return ck.parent.parent, ck
    if cfg.resume == "auto":
        run = out / cfg.name if cfg.name else latest_resumable(out, cfg.checkpoint_dir)
        if run is not None and (ck := ckpt_io.resolve(run, cfg.checkpoint_dir)) is not None:
            return run, ck
    run = out / (cfg.name or auto_name(cfg))
    if not cfg.name:
        base, i = run, 1
        while run.exists():  # two runs started in the same second
            i += 1
            run = base.with_name(f"{base.name}-{i}")
    if rundir.has_checkpoints(run / cfg.checkpoint_dir):  # leftover .tmp-* dirs are no checkpoints
        raise ConfigError(
            f"run directory '{run}' already has checkpoints; pass resume=auto to continue it or choose another name"
        )
    return run, None


def take_run_dir(accelerator, run_dir: Path, cfg: Config) -> rundir.RunLock | None:
    """Main process: lock the run directory for this run, then drop half-written leftovers of a killed one."""
    error = None
    lock = None
    if accelerator.is_main_process:
        try:
            lock = rundir.RunLock(run_dir).acquire()
            rundir.clean_temporaries(run_dir / cfg.checkpoint_dir)
        except ConfigError as e:
            error = str(e)
    error = broadcast_object_list([error])[0]  # every process stops, not only the main one
    if error is not None:
        raise rundir.RunLockedError(error)
    return lock


# ============================================================================ what it holds


def write_run_info(run_dir: Path, cfg: Config, precision: str, n_params: int, accelerator, data) -> None:
    """config.yaml (resolved config), command.txt (one line per start) and env.json (code, packages, hardware).

    data: trainer.build.Data (its feature pipeline, class names and window length are recorded).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / rundir.CONFIG).write_text(config_to_yaml(cfg))
    with open(run_dir / rundir.COMMAND, "a") as f:
        f.write(command_line(accelerator.num_processes) + "\n")
    ckpt_io.write_json(run_dir / rundir.ENV, {
        "git_sha": git_sha(),
        "versions": versions(),
        "host": platform.node(),
        "device": str(accelerator.device),
        "device_name": torch.cuda.get_device_name(accelerator.device) if accelerator.device.type == "cuda" else platform.processor() or "cpu",
        "num_processes": accelerator.num_processes,
        "threads": torch.get_num_threads(),
        "precision_requested": cfg.mixed_precision,
        "precision_used": precision,
        "parameters": n_params,
        "input_dim": data.pipeline.dim,
        "class_names": data.class_names,
        "window_length": data.length,
    })


def save_checkpoint(accelerator, run_dir: Path, cfg: Config, epoch: int, state: dict, meta: dict,
                    improved: bool, model, optimizer, objects: dict, ema=None) -> Path:
    """Write <checkpoint_dir>/last atomically; copy it to best/ (if improved) and epoch_NNNN/ (save_freq).

    objects: {name: scheduler/scaler} whose state_dict() goes into the checkpoint as JSON.
    ema: optional WeightEMA, written as ema.safetensors (what predict/evaluate then use).
    """
    root = run_dir / cfg.checkpoint_dir
    tmp = root / f".tmp-{rundir.LAST}"
    last = root / rundir.LAST
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        try:
            root.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
            ckpt_io.save_training(tmp, accelerator.unwrap_model(model), optimizer, objects)
            ckpt_io.write_json(tmp / ckpt_io.META, meta)
            ckpt_io.write_json(tmp / ckpt_io.STATE, state)
            if ema is not None:
                ema.save(tmp)  # the averaged weights predict/evaluate use; model.safetensors stays the raw ones
            ckpt_io.write_manifest(tmp)
            ckpt_io.publish(tmp, last)
        except (OSError, SafetensorError) as e:  # disk full / read-only: the previous `last` is untouched
            rundir.remove_quietly(tmp)
            raise rundir.storage_error(e, tmp) or e from None
        if improved:
            ckpt_io.copy_checkpoint(last, root / rundir.BEST)
        if cfg.save_freq and epoch % cfg.save_freq == 0:
            ckpt_io.copy_checkpoint(last, root / rundir.epoch_checkpoint(epoch))
    accelerator.wait_for_everyone()
    return last
