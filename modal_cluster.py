"""Runs, sweep trials and benchmarks in Modal GPU containers (the only module that imports modal).

    modal run modal_cluster.py --config configs/v4_conv_bilstm_a10g.yaml --gpu A10G [key=value ...]
    modal run --detach modal_cluster.py --config ... --gpu A10G    # keeps running when the laptop disconnects
    modal run modal_cluster.py::list_runs                          # runs on the volume, best val macro F1
    modal run modal_cluster.py::bench --gpus T4,A10G               # benchmark harness per GPU -> volume benchmarks/
    modal serve modal_cluster.py                                   # TensorBoard URL over the volume's runs/
    python tune.py --space ... --backend modal --gpu A10G          # one container per trial (stream_trial)

The training code is `trainer.run.train`, unchanged: the volume path goes in as `output_dir`,
the volume commit as `on_checkpoint`, and a fixed run name with `resume=auto` makes a Modal
retry or a rerun continue from the last committed checkpoint. Relative data paths
(`data.path=data/x.json`) are paths on the volume; upload them with `modal volume put`.

Setting MABE_MODAL_LOCAL=<dir> runs the functions in this process (`.local()`) with <dir>
standing in for the volume: that is how the tests (and a laptop without a Modal account)
exercise everything here except the containers themselves. docs/cloud.md is the recipe.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import logging
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import modal
import numpy as np

from trainer import rundir
from trainer.config import Config, ConfigError, check_keys, flat_dict, make_config
from trainer.hints import closest
from trainer.provenance import git_sha  # the local checkout's commit (containers have no .git)
from trainer.stream import epoch_stream

log = logging.getLogger("modal_cluster")

ROOT = Path(__file__).resolve().parent  # the repository here, /root inside a container
APP_NAME = "mabe-trainer"
VOLUME_NAME = "mabe-data"  # data/ (uploaded tracking files) and runs/ (run directories)
VOLUME_MOUNT = "/vol"
LOCAL_ENV = "MABE_MODAL_LOCAL"  # <dir>: run the functions in-process, <dir> standing in for the volume
NO_TOKEN = "no Modal token: run `modal token new`"

# `gpu=` strings Modal accepts (modal.com/docs/guide/gpu); one GPU per container, because
# train() is a single process (several GPUs would need `accelerate launch` in the container).
GPUS = ("T4", "L4", "A10", "A10G", "L40S", "A100", "A100-40GB", "A100-80GB", "RTX-PRO-6000",
        "H100", "H100!", "H200", "B200", "B200+")
MAX_TIMEOUT_S = 24 * 3600  # Modal's ceiling for one function call
DEFAULTS = Config()  # modal_gpu / modal_timeout defaults, used when nothing else is asked for
CPU_CORES = 4.0  # DataLoader workers: the V4 seed runs num_workers=4
MEMORY_MIB = 16384  # the V4 seed's 16 GB of RAM
TRAIN_RETRIES = modal.Retries(max_retries=3, initial_delay=10.0, backoff_coefficient=2.0)
BENCH_TIMEOUT_S = 3600
TB_PORT = 6006
TB_REFRESH_S = 30.0  # how often the TensorBoard container pulls new commits from the volume
TB_RELOAD_S = 15  # how often TensorBoard rereads its (local mirror of the) log directory

# The tested dependency set, pinned; tests/test_modal_cluster.py checks it against setup.cfg.
# torch from PyPI's default index is the CUDA build on Linux x86-64.
PINNED = (
    "torch==2.13.0",
    "accelerate==1.15.0",
    "numpy==2.4.6",
    "scikit-learn==1.9.1",
    "pyyaml==6.0.3",
    "tensorboard==2.21.0",
    "tqdm==4.70.1",
    "pandas==3.1.1",
    "pyarrow==26.0.1",
    "matplotlib==3.11.2",
)

# --------------------------------------------------------------------------- app, image, volume


def _project_image() -> modal.Image:
    """debian-slim + Python 3.11 + the pinned dependencies + this repository's code and YAMLs."""
    image = (modal.Image.debian_slim(python_version="3.11").pip_install(*PINNED)
             .env({"TQDM_MININTERVAL": "60"}))  # progress bars: one update a minute in `modal app logs`
    for folder in ("configs", "search_spaces", "benchmarks"):  # not every checkout has all three yet
        if (ROOT / folder).is_dir():
            image = image.add_local_dir(ROOT / folder, f"/root/{folder}",
                                        ignore=["**/__pycache__/**", "results/**"])
    # added at container start (not baked into a layer): editing trainer/ needs no image rebuild
    return image.add_local_python_source("trainer", ignore=["**/__pycache__/**"])


def _light_image() -> modal.Image:
    """For TensorBoard and list_runs: no torch, so the web endpoint starts quickly."""
    pins = [p for p in PINNED if p.split("==")[0] in ("tensorboard", "pyyaml")]
    return (modal.Image.debian_slim(python_version="3.11").pip_install(*pins)
            .add_local_python_source("trainer", ignore=["**/__pycache__/**"]))


app = modal.App(APP_NAME, image=_project_image())
light_image = _light_image()
volume = modal.Volume.from_name(VOLUME_NAME, create_if_missing=True)
VOLUMES = {VOLUME_MOUNT: volume}


class ModalSetupError(ConfigError):
    """A user-side setup problem (no token); a ConfigError so CLIs print it as one line."""


# --------------------------------------------------------------------------- checks and helpers


def check_gpu(name: str, where: str = "--gpu") -> str:
    """Normalised Modal GPU name, or a one-line ConfigError listing the valid ones."""
    gpu = str(name).strip().upper()
    if ":" in gpu:
        raise ConfigError(f"{where}: '{name}' asks for several GPUs; a run uses one GPU per container "
                          f"(valid: {', '.join(GPUS)})")
    if gpu not in GPUS:
        close = closest(gpu, GPUS)
        hint = f" (did you mean {close}?)" if close else ""
        raise ConfigError(f"{where}: unknown Modal GPU '{name}'{hint}; valid: {', '.join(GPUS)}")
    return gpu


def check_timeout(seconds: int, where: str = "--timeout") -> int:
    """Seconds for one function call, within what Modal allows, or a one-line ConfigError."""
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not 60 <= seconds <= MAX_TIMEOUT_S:
        raise ConfigError(f"{where}: timeout must be whole seconds in [60, {MAX_TIMEOUT_S}], got {seconds!r}")
    return seconds


def local_mode() -> bool:
    """True when MABE_MODAL_LOCAL asks for in-process runs (never inside a container)."""
    return bool(os.environ.get(LOCAL_ENV)) and modal.is_local()


def volume_root() -> Path:
    """Where the functions read and write: the mounted volume, or the MABE_MODAL_LOCAL stand-in."""
    if not modal.is_local():
        return Path(VOLUME_MOUNT)
    if not os.environ.get(LOCAL_ENV):
        raise ConfigError(f"running a Modal function outside Modal: set {LOCAL_ENV}=<dir> to stand in for the volume")
    return Path(os.environ[LOCAL_ENV])


def configured(fn: modal.Function, *, gpu: str, timeout: int) -> modal.Function:
    """`fn` with this call's GPU and timeout (Modal builds the variant locally; nothing is sent)."""
    return fn.with_options(gpu=gpu, timeout=timeout)


def commit_volume(checkpoint: Path | None = None) -> None:
    """on_checkpoint hook: persist the newly published checkpoint (and the logs so far) to the volume."""
    if modal.is_local():  # in-process runs write straight into the stand-in directory
        return
    try:
        volume.commit()
    except RuntimeError as e:  # e.g. the reload that follows a commit, tripping over an open event file
        log.warning("volume commit after %s failed: %s (Modal commits again when the container exits)",
                    checkpoint, e)


@contextlib.contextmanager
def _token_errors() -> Iterator[None]:
    """Turn Modal's missing-credentials error into one line."""
    try:
        yield
    except modal.exception.AuthError as e:
        if "token" in str(e).lower():
            raise ModalSetupError(NO_TOKEN) from None
        raise


def require_token() -> None:
    """Fail fast, as one line (ModalSetupError), when this machine has no Modal credentials.

    No-op under MABE_MODAL_LOCAL. stream_trial calls it before returning its generator, and a
    driver such as tune.py can call it once before starting any trial.
    """
    if local_mode():
        return
    with _token_errors():
        modal.Client.from_env()


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # per-file save/load chatter


def _require_gpu() -> None:
    """Inside a GPU container, a CPU-only torch would silently train on the CPU for hours."""
    if modal.is_local():
        return
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device visible in the container: check the image's torch build and gpu=")


PATH_KEYS = ("data.path", "data.val_path", "data.annotation_path", "train_data_dir", "val_data_dir")


def check_cloud_config(values: dict, root: Path = Path(VOLUME_MOUNT)) -> None:
    """Keys that make no sense in a GPU container, as one-line ConfigErrors (checked before launching).

    values: a flat {dotted_key: value} config (flat_dict of Config.to_dict(), or overrides).
    """
    if values.get("resume", "") not in ("", "auto"):
        raise ConfigError("on Modal a run resumes by its name: rerun with name=<run name> instead of resume=...")
    if values.get("device") == "cpu":
        raise ConfigError("device=cpu in a GPU container; drop it (device=auto uses the GPU)")
    out = Path(str(values.get("output_dir", DEFAULTS.output_dir)))
    if out.is_absolute() and root not in (out, *out.parents):
        raise ConfigError(f"output_dir '{out}' is outside the volume ({root}); use a relative path such as runs")


def container_config(config: dict, name: str) -> Config:
    """The Config a function trains with: paths moved onto the volume, a fixed name, resume=auto.

    `config`: overrides as make_config takes them ({dotted_key: value}, or a nested
    Config.to_dict()). Relative data paths and output_dir are taken relative to the volume root.
    """
    cfg = make_config(None, config)
    root = volume_root()
    values = flat_dict(cfg.to_dict())
    check_cloud_config(values, root)
    for key in PATH_KEYS:
        if values[key] and not Path(values[key]).is_absolute():
            values[key] = str(root / values[key])
    values.update(output_dir=str(root / cfg.output_dir), name=name, resume="auto")
    return make_config(None, values)


def _log_attempt(cfg: Config, source: dict) -> None:
    """One line per container that works on the run: retries and preemptions show up here."""
    from trainer import checkpoint as ckpt_io

    run_dir = Path(cfg.output_dir) / cfg.name
    last = ckpt_io.resolve(run_dir, cfg.checkpoint_dir)
    gpu = "cpu"
    if not modal.is_local():
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "modal_attempts.jsonl", "a") as f:
        f.write(json.dumps({
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "gpu": gpu,
            "function_call_id": None if modal.is_local() else modal.current_function_call_id(),
            "resumed_from_epoch": ckpt_io.read_state(last)["epoch"] if last is not None else 0,
            **source,
        }) + "\n")


# --------------------------------------------------------------------------- functions

@app.function(gpu=DEFAULTS.modal_gpu, timeout=DEFAULTS.modal_timeout, volumes=VOLUMES, retries=TRAIN_RETRIES,
              cpu=CPU_CORES, memory=MEMORY_MIB)
def train(config: dict, name: str, source: dict | None = None) -> dict:
    """One training run on this container's GPU, into runs/<name> on the volume.

    Commits the volume after every checkpoint; a retry (same arguments) or a rerun with the
    same name resumes from the last committed checkpoint. User errors (bad key, missing data)
    come back as {"error": message} rather than as exceptions, so Modal does not retry them.
    """
    _setup_logging()
    from trainer.run import USER_ERRORS
    from trainer.run import train as run_training

    try:
        cfg = container_config(config, name)
        _require_gpu()
        _log_attempt(cfg, source or {})
        if cfg.data.fold == -1:  # every fold (trainer/cv.py): cv.json and oof.npz land on the volume too
            from trainer.cv import cross_validate

            summary = cross_validate(cfg, on_checkpoint=commit_volume)
            commit_volume()
            return summary
        return run_training(cfg, on_checkpoint=commit_volume)
    except USER_ERRORS as e:
        return {"error": str(e)}


@app.function(gpu=DEFAULTS.modal_gpu, timeout=DEFAULTS.modal_timeout, volumes=VOLUMES, cpu=CPU_CORES,
              memory=MEMORY_MIB)
def train_trial(config: dict, name: str, source: dict | None = None) -> Iterator[dict]:
    """A sweep trial: train into runs/.../<name> on the volume, yielding each epoch's metrics row.

    Rows are train()'s on_epoch_end dicts (epoch, train_loss, val_loss, val_macro_f1, ...,
    best_val_macro_f1, checkpoint). No Modal retries: Ray Tune decides what a failed trial means.
    """
    _setup_logging()
    cfg = container_config(config, name)
    _require_gpu()
    _log_attempt(cfg, source or {})
    if cfg.data.fold == -1:  # a cross-validated trial: the folds in lock-step, rows = running means
        from trainer.cv import cv_epoch_stream

        yield from cv_epoch_stream(cfg, on_checkpoint=commit_volume)
        commit_volume()
        return
    yield from epoch_stream(cfg, on_checkpoint=commit_volume)


@app.function(volumes=VOLUMES, timeout=DEFAULTS.modal_timeout, cpu=CPU_CORES, memory=MEMORY_MIB)
def featurize_videos(config: dict, indices: list[int]) -> dict:
    """Featurise the videos at `indices` (positions in the configured data set) into the feature
    store on the volume (<output_dir>/feature_store, as training uses it), then commit."""
    from trainer.data import read_sides
    from trainer.features import FeaturePipeline
    from trainer.store import open_store, stream_sides

    _setup_logging()
    cfg = container_config(config, "featurize")
    store = open_store(cfg)
    if store is None:
        raise ConfigError("feature_store=none: there is no store to write on the volume")
    # listed formats: read only this container's videos, one at a time
    if stream_sides(cfg, store, cfg.feature_names(), cfg.feature_params(), indices=indices) is None:
        recs, _ = read_sides(cfg)  # this reader returns every video; keep this container's share
        recs = [recs[i] for i in indices]
        pipeline = FeaturePipeline(cfg.feature_names(), bodyparts=recs[0].bodyparts, params=cfg.feature_params())
        store.ensure(recs, pipeline, workers=cfg.featurize_workers)
    if not modal.is_local():
        volume.commit()
    return {"videos": len(indices), "built": store.misses, "reused": store.hits}


@app.function(volumes=VOLUMES, timeout=DEFAULTS.modal_timeout)
def featurize(config: dict, containers: int = 8) -> dict:
    """modal run modal_cluster.py::featurize: the configured data set's features into the volume's store.

    Maps chunks of videos over `containers` featurize_videos containers (each commits its
    entries), then writes the data-set manifest here, so every later train/sweep on the
    volume starts warm. Returns {"videos", "built", "reused", "containers"}.
    """
    from trainer.data import list_sides, read_sides
    from trainer.store import featurised_splits

    _setup_logging()
    cfg = container_config(config, "featurize")
    listed = list_sides(cfg)  # counting listed videos reads no tracking
    n = len(listed[0]) if listed is not None else len(read_sides(cfg)[0])
    chunks = [c.tolist() for c in np.array_split(np.arange(n), max(1, min(int(containers), n))) if len(c)]
    if local_mode():
        parts = [_in_process(featurize_videos, config, c) for c in chunks]
    else:
        parts = list(featurize_videos.map([config] * len(chunks), chunks))
        volume.reload()  # see the containers' commits
    feats = featurised_splits(cfg, names=cfg.feature_names(), params=cfg.feature_params())  # all hits: the manifest
    if not modal.is_local():
        volume.commit()
    return {"videos": n, "built": sum(p["built"] for p in parts), "reused": sum(p["reused"] for p in parts),
            "containers": len(chunks), "store": str(feats.store.root)}


def _harness():
    """benchmarks/bench_train.py's (run_benchmarks, append_results); a one-line error without it."""
    try:
        from benchmarks.bench_train import append_results, run_benchmarks
    except ImportError as e:
        raise ConfigError(f"the benchmark harness benchmarks/bench_train.py is not importable here ({e})") from None
    return run_benchmarks, append_results


@app.function(gpu=DEFAULTS.modal_gpu, timeout=BENCH_TIMEOUT_S, cpu=CPU_CORES, memory=MEMORY_MIB)
def run_bench(args: list[str]) -> list[dict]:
    """The benchmark harness on this container's GPU: its JSON records (nothing is written in the container).

    args: benchmarks/bench_train.py command-line arguments (e.g. ["--suite", "model"]).
    """
    _setup_logging()
    _require_gpu()
    run_benchmarks, _ = _harness()
    device = [] if modal.is_local() else ["--device", "cuda"]  # never measure the container's CPU by mistake
    return run_benchmarks([*args, *device, "--no-save"])


@app.function(volumes=VOLUMES, timeout=BENCH_TIMEOUT_S + 600)
def bench(gpus: str = "T4,A10G", args: str = "") -> str:
    """modal run modal_cluster.py::bench --gpus T4,A10G [--args "<bench_train.py arguments>"]

    Runs the harness on each GPU in parallel (one run_bench container per GPU, this function
    waits in a small CPU container), appends the records to benchmarks/<device-slug>.json on
    the volume, and returns them all as JSON ({gpu: records}) for `modal run --write-result`.
    """
    _setup_logging()
    names = [check_gpu(g, "--gpus") for g in gpus.split(",") if g.strip()]
    if not names:
        raise ConfigError(f"--gpus: name at least one GPU ({', '.join(GPUS)})")
    _, append_results = _harness()
    harness_args = shlex.split(args)
    variants = {g: configured(run_bench, gpu=g, timeout=BENCH_TIMEOUT_S) for g in names}
    if local_mode():
        results = {g: _in_process(fn, harness_args) for g, fn in variants.items()}
    else:
        calls = {g: fn.spawn(harness_args) for g, fn in variants.items()}
        results = {g: call.get() for g, call in calls.items()}
    root = volume_root()
    for gpu, records in results.items():
        if not records:
            log.info("%s: no records", gpu)
            continue
        path = append_results(records, root / "benchmarks" / f"{records[0]['device_slug']}.json")
        rel = path.relative_to(root)
        log.info("%s: %d records (%s) -> %s:%s\n  fetch: modal volume get --force %s %s benchmarks/results/",
                 gpu, len(records), records[0]["device_name"], VOLUME_NAME, rel, VOLUME_NAME, rel)
    commit_volume()
    return json.dumps(results)


def _run_summary(run_dir: Path, root: Path) -> dict:
    """Name, epochs done, best val macro F1 and checkpoints of one run directory."""
    rows = []
    if (run_dir / rundir.METRICS_JSONL).is_file():
        rows = [json.loads(line) for line in (run_dir / rundir.METRICS_JSONL).read_text().splitlines() if line.strip()]
    scores = [r["val_macro_f1"] for r in rows if r.get("val_macro_f1") is not None]
    ckpts = rundir.checkpoints_of(run_dir)  # the run's own checkpoint_dir
    return {
        "run": str(run_dir.relative_to(root)),
        "epochs": max((r["epoch"] for r in rows), default=0),
        "best_val_macro_f1": max(scores) if scores else None,
        "finished": (run_dir / rundir.METRICS_JSON).is_file(),
        "checkpoints": sorted(p.name for p in ckpts.iterdir() if p.is_dir()) if ckpts.is_dir() else [],
    }


@app.function(image=light_image, volumes=VOLUMES, timeout=300)
def list_runs() -> list[dict]:
    """Every run directory on the volume (anything under runs/ holding a config.yaml), printed and returned."""
    _setup_logging()
    root = volume_root()
    if not modal.is_local():
        volume.reload()  # this container may have been started before the latest commits
    runs = sorted((p.parent for p in (root / "runs").rglob(rundir.CONFIG)), key=lambda p: str(p))
    summary = [_run_summary(r, root) for r in runs]
    for s in summary:
        f1 = "-" if s["best_val_macro_f1"] is None else f"{s['best_val_macro_f1']:.3f}"
        log.info("%-50s epochs %4d  best val macro F1 %s  %s  [%s]", s["run"], s["epochs"], f1,
                 "finished" if s["finished"] else "unfinished", " ".join(s["checkpoints"]))
    if not summary:
        log.info("no runs under %s", root / "runs")
    return summary


# TensorBoard reads a local copy of the event files: a volume reload fails while files on the
# volume are open, and TensorBoard keeps the files it tails open.


def sync_event_files(src: Path, dst: Path) -> int:
    """Mirror TensorBoard event files from src into dst, appending only what each file gained.

    Event files only ever grow, so copying the new tail keeps TensorBoard's read offsets
    valid. Returns the number of files that changed.
    """
    changed = 0
    for f in src.rglob("events.out.tfevents.*"):
        target = dst / f.relative_to(src)
        have = target.stat().st_size if target.exists() else 0
        size = f.stat().st_size
        if size <= have:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(f, "rb") as a, open(target, "ab") as b:
            a.seek(have)
            b.write(a.read(size - have))
        changed += 1
    return changed


def serve_tensorboard(src: Path, dst: Path, *, port: int, reload: Callable[[], None] | None) -> subprocess.Popen:
    """Start TensorBoard on a mirror of src's event files, refreshed every TB_REFRESH_S in a thread."""
    sync_event_files(src, dst)
    proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(dst), "--host", "0.0.0.0",
                             "--port", str(port), "--reload_interval", str(TB_RELOAD_S)])

    def refresh() -> None:
        while proc.poll() is None:
            time.sleep(TB_REFRESH_S)
            try:
                if reload is not None:
                    reload()
                sync_event_files(src, dst)
            except Exception as e:  # keep serving what we have; the next round retries
                log.warning("tensorboard refresh failed: %s", e)

    threading.Thread(target=refresh, name="tensorboard-refresh", daemon=True).start()
    return proc


tensorboard_proc: subprocess.Popen | None = None  # the server started by tensorboard() in this process


@app.function(image=light_image, volumes=VOLUMES, max_containers=1, scaledown_window=15 * 60)
@modal.concurrent(max_inputs=64)
@modal.web_server(port=TB_PORT, startup_timeout=120)
def tensorboard() -> None:
    """TensorBoard over runs/ on the volume (`modal serve modal_cluster.py` prints its URL)."""
    global tensorboard_proc
    _setup_logging()
    tensorboard_proc = serve_tensorboard(volume_root() / "runs", Path(tempfile.mkdtemp(prefix="tb-runs-")),
                                          port=TB_PORT, reload=None if modal.is_local() else volume.reload)


# --------------------------------------------------------------------------- calling the functions


def _in_process(fn: modal.Function, *args):
    """fn.local(*args), without Modal's warning that the volume is not mounted (the stand-in is)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*executing locally", category=UserWarning)
        return fn.local(*args)


def _call(fn: modal.Function, *, gpu: str, timeout: int) -> Callable:
    """fn's remote call on gpu/timeout, or the same function in-process under MABE_MODAL_LOCAL."""
    variant = configured(fn, gpu=gpu, timeout=timeout)
    return functools.partial(_in_process, variant) if local_mode() else variant.remote


def _remote_trial(config: dict, *, gpu: str, timeout: int, name: str, source: dict) -> Iterator[dict]:
    """train_trial in its own ephemeral app: closing this generator stops the app and its container."""
    fn = configured(train_trial, gpu=gpu, timeout=timeout)
    with _token_errors(), app.run():
        yield from fn.remote_gen(config, name, source)


def _local_trial(config: dict, *, gpu: str, timeout: int, name: str, source: dict) -> Iterator[dict]:
    """train_trial in this process (MABE_MODAL_LOCAL): the same function body, no container."""
    yield from _in_process(configured(train_trial, gpu=gpu, timeout=timeout), config, name, source)


def stream_trial(config_overrides: dict, *, gpu: str, name: str | None = None,
                 timeout: int | None = None) -> Iterator[dict]:
    """Per-epoch metric rows of one sweep trial trained in a Modal container on `gpu`.

    config_overrides: {dotted_key: value} on top of the defaults (a nested dict works too);
    relative data paths and output_dir are on the volume. name: the run directory name
    (<output_dir>/<name> on the volume; default the config's name, else trial-<random>);
    reusing a name resumes that trial from its last checkpoint. timeout: seconds,
    default the config's modal_timeout. The GPU, the key names and the cloud-specific keys
    are checked here, before any container starts (ConfigError), without importing torch
    (Ray keeps one waiting process per trial); values are validated in the container. The
    Modal credentials are checked here too (ModalSetupError). Closing the returned
    generator stops the container.
    """
    gpu = check_gpu(gpu)
    values = flat_dict(config_overrides)
    check_keys(values)  # key names only: values are validated in the container
    check_cloud_config(values)
    timeout = check_timeout(timeout if timeout is not None else values.get("modal_timeout", DEFAULTS.modal_timeout),
                            "--timeout" if timeout is not None else "config key 'modal_timeout'")
    name = name or values.get("name") or f"trial-{uuid.uuid4().hex[:8]}"
    require_token()
    source = {"git_sha": git_sha(), "requested_gpu": gpu}
    runner = _local_trial if local_mode() else _remote_trial
    return runner(dict(config_overrides), gpu=gpu, timeout=timeout, name=name, source=source)


# --------------------------------------------------------------------------- local entrypoints


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """What `modal run modal_cluster.py ...` will start: the resolved config, GPU and timeout."""

    config: Config
    gpu: str
    timeout: int


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="modal run [--detach] modal_cluster.py",
        description=f"Train in a Modal GPU container; the run directory goes to volume {VOLUME_NAME}:runs/<name>.",
        epilog="Overrides: key=value as for trainer/run.py; data paths are relative to the volume "
        "(data.path=data/calms21_task1_train.json). name=<run> reruns/resumes that run.",
    )
    p.add_argument("--config", help="YAML file (see configs/)")
    p.add_argument("--gpu", help=f"one of {', '.join(GPUS)} (default: the config's modal_gpu)")
    p.add_argument("--timeout", type=int, help="seconds per attempt (default: the config's modal_timeout)")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    return p


def plan_run(arglist: list[str] | tuple[str, ...]) -> RunPlan:
    """Parse the entrypoint's arguments and resolve/validate everything locally (no container yet)."""
    if "--detach" in arglist or "-d" in arglist:
        raise ConfigError("--detach is an option of `modal run` and goes before the file: "
                          "modal run --detach modal_cluster.py --config ...")
    args = build_parser().parse_args(list(arglist))
    cfg = make_config(args.config, args.overrides)
    gpu = check_gpu(args.gpu, "--gpu") if args.gpu else check_gpu(cfg.modal_gpu, "config key 'modal_gpu'")
    timeout = (check_timeout(args.timeout, "--timeout") if args.timeout is not None
               else check_timeout(cfg.modal_timeout, "config key 'modal_timeout'"))
    name = cfg.name or f"{cfg.model_type}-{time.strftime('%Y%m%d-%H%M%S')}"  # fixed now, so retries resume it
    cfg = dataclasses.replace(cfg, name=name, modal_gpu=gpu, modal_timeout=timeout)
    check_cloud_config(flat_dict(cfg.to_dict()))
    return RunPlan(cfg, gpu, timeout)


def _fail(e: Exception) -> SystemExit:
    return SystemExit(f"error: {e}")


@app.local_entrypoint()
def main(*arglist: str) -> None:
    """modal run modal_cluster.py --config configs/... --gpu A10G [key=value ...]"""
    try:
        plan = plan_run(arglist)
    except ConfigError as e:
        raise _fail(e) from None
    cfg = plan.config
    print(f"run {cfg.name}: {cfg.model_type}, {cfg.epochs} epochs on {plan.gpu} "
          f"(timeout {plan.timeout} s, precision {cfg.mixed_precision}) -> {VOLUME_NAME}:{cfg.output_dir}/{cfg.name}")
    source = {"git_sha": git_sha(), "requested_gpu": plan.gpu}
    result = _call(train, gpu=plan.gpu, timeout=plan.timeout)(cfg.to_dict(), cfg.name, source)
    if "error" in result:
        raise SystemExit(f"error: {result['error']}")
    if cfg.mixed_precision != "no" and result["precision_used"] != cfg.mixed_precision:
        print(f"warning: asked for {cfg.mixed_precision}, trained in {result['precision_used']}")
    run = f"{cfg.output_dir}/{cfg.name}"
    print(f"best val macro F1 {result['val_macro_f1']:.3f} at epoch {result['best_epoch']} of "
          f"{result['epochs_run']} ({result['precision_used']}, {result['train_time_s']:.0f} s training)")
    print(f"download: mkdir -p {Path(run).parent} && modal volume get {VOLUME_NAME} {run} {Path(run).parent}/")
