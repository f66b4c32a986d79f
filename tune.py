"""Ray Tune sweeps over trainer config keys (class weights, learning rate, batch size, ...).

    python tune.py --config configs/default.yaml --space search_spaces/default.yaml --num-samples 16
    python tune.py --space search_spaces/wide.yaml --search optuna --scheduler none epochs=6
    python tune.py --space search_spaces/default.yaml --backend modal --gpu A10G
    python tune.py --storage runs/sweeps --name <sweep> --resume      # continue an interrupted sweep
    python tune.py --smoke-test                                        # 2 tiny trials (CI)
    python tune.py --space ... data.split=kfold data.fold=-1           # trials scored by k-fold CV (docs/cv.md)

A trial is `trainer.run.train(config)`, the same entry as `trainer/run.py`; each epoch is
reported to Tune with its checkpoint, ASHA stops weak trials early on val macro F1, and a
failing trial is recorded as errored while the sweep goes on. The sweep ends with a table
of trials sorted by val macro F1 and `best.yaml`, a complete config for trainer/run.py.

This is the only module that imports ray. See docs/tune.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import ray
from ray import tune as ray_tune

from trainer.config import (
    ConfigError,
    config_to_yaml,
    flat_dict,
    make_config,
    parse_override,
)
from trainer.rundir import check_name
from trainer.search_space import Space, base_point, check_space, parse_space, read_space

log = logging.getLogger("tune")

METRIC = "best_val_macro_f1"  # best epoch so far: what the run's checkpoints/best would deliver
REDUCTION_FACTOR = 2  # ASHA keeps the top 1/2 of the trials at each rung
SMOKE_OVERRIDES = {  # --smoke-test: seconds per trial on a CPU
    "epochs": 2,
    "data.synthetic.num_videos": 4,
    "data.synthetic.frames_per_video": 600,
    "conv_channels": [16],
    "lstm_hidden": 16,
    "hidden_dim": 32,
}


# ============================================================================ search spaces in Ray

# search_space.KINDS -> builder of the Ray domain from Dist.encoded(); bounds are inclusive
RAY_DOMAINS: dict[str, Callable] = {
    "choice": lambda a: ray_tune.choice(a),
    "grid": lambda a: ray_tune.grid_search(a),
    "uniform": lambda a: ray_tune.uniform(a[0], a[1]),
    "loguniform": lambda a: ray_tune.loguniform(a[0], a[1]),
    "randint": lambda a: ray_tune.randint(a[0], a[1] + 1),
}


def ray_param_space(space: Space) -> dict:
    """Tune's param_space: each parameter's Ray domain."""
    return {name: RAY_DOMAINS[dist.kind](dist.encoded()) for name, dist in space.params.items()}


# ============================================================================ where a trial runs


@dataclasses.dataclass
class Sweep:
    """What every trial needs; saved as <storage>/<name>/sweep.json so --resume rebuilds it."""

    name: str
    storage: str  # absolute path of the Ray Tune storage directory
    base: dict  # resolved config (--config, smoke settings, key=value overrides): a complete Config dict
    space: dict  # the search space mapping (parse_space input), minus keys pinned by overrides
    space_path: str = ""
    backend: str = "local"
    gpu: str = ""  # Modal GPU type for --backend modal
    options: dict = dataclasses.field(default_factory=dict)  # num_samples, scheduler, ... (for the record)

    def __post_init__(self):
        # parsed once, here: trials get it with the pickled Sweep (not a field: sweep.json keeps the mapping)
        self.parsed_space: Space = parse_space(self.space, where=f"search space {self.space_path}".strip())

    @property
    def dir(self) -> Path:
        return Path(self.storage) / self.name

    @property
    def runs_dir(self) -> Path:
        """Every trial's trainer run directory (TensorBoard logs, checkpoints) sits here."""
        return self.dir / "runs"

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "sweep.json").write_text(json.dumps(dataclasses.asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> Sweep:
        return cls(**json.loads((path / "sweep.json").read_text()))


def _short(v) -> str:
    """A value as it reads in a run name: 3 significant digits, lists joined by '_'."""
    return "_".join(_short(x) for x in v) if isinstance(v, list) else _fmt(v)


def trial_run_name(trial_id: str, space: Space, params: dict) -> str:
    """'trial_001-learning_rate_0.00453-batch_size_32': the trial's number and swept values.

    The trial's run directory and its name in TensorBoard; deterministic, so `--resume` finds it again.
    Only letters, digits and `._-` (a run name is one safe path component, trainer/rundir.py).
    """
    number = trial_id.rsplit("_", 1)[-1]
    overrides = space.overrides(params)
    values = "-".join(f"{k.rsplit('.', 1)[-1]}_{_short(overrides[k])}" for k in space.swept_keys())
    name = f"trial_{int(number):03d}" + (f"-{values}" if values else "") if number.isdigit() else trial_id
    name = name.replace("+", "")  # 1e+38 -> 1e38
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[:120]


class TrialDirname:
    """Ray's trial_dirname_creator: the same name as the trial's run directory (a class: Tune pickles it)."""

    def __init__(self, space: Space):
        self.space = space

    def __call__(self, trial) -> str:
        return trial_run_name(trial.trial_id, self.space, trial.config)


def trial_config_overrides(sweep: Sweep, params: dict, trial_id: str) -> dict:
    """Overrides of one trial on top of sweep.base: the sampled values, and a run directory per trial.

    resume=auto: a trial restarted by `--resume` continues from its own last checkpoint.
    """
    space = sweep.parsed_space
    return {**space.overrides(params), "output_dir": str(sweep.runs_dir),
            "name": trial_run_name(trial_id, space, params), "resume": "auto"}


def _pointer_checkpoint(path: str, report: Callable[[ray_tune.Checkpoint], None]) -> None:
    """Report a Tune checkpoint that names the trainer's checkpoint instead of copying it.

    The weights stay once, in the trial's run directory (checkpoints/last, best); Tune keeps a
    few bytes for its bookkeeping (resume restarts the trial with resume=auto on its run directory).
    """
    with tempfile.TemporaryDirectory(prefix="tune-ckpt-") as tmp:
        (Path(tmp) / "trainer_checkpoint.json").write_text(json.dumps({"path": path}))
        report(ray_tune.Checkpoint.from_directory(tmp))


def _metrics(row: dict) -> dict:
    """Per-epoch row -> Tune metrics (no None values: classes absent from val have no F1)."""
    return {k: v for k, v in row.items() if v is not None}


def run_local_trial(params: dict, *, sweep: Sweep) -> None:
    """Function trainable: one trainer.run.train() in this Ray worker, each epoch reported with its checkpoint."""
    from trainer.run import train  # torch is imported in the trial's worker, not by every tune.py user

    trial_id = ray_tune.get_context().get_trial_id()
    cfg = make_config(None, trial_config_overrides(sweep, params, trial_id), base=sweep.base)
    if cfg.data.fold == -1:
        run_cv_trial(cfg, run_dir=sweep.runs_dir / cfg.name)
        return

    final: list[dict] = []

    def send(row: dict) -> None:
        metrics = _metrics({k: v for k, v in row.items() if k != "checkpoint"})
        _pointer_checkpoint(row["checkpoint"], lambda ck: ray_tune.report(metrics, checkpoint=ck))

    def report(row: dict) -> None:
        row = dict(row, run_dir=str(sweep.runs_dir / cfg.name))
        if row["epoch"] == cfg.epochs:
            # reported once train() has returned: Tune stops a trial on its last report (ASHA at max_t),
            # which would cut the run's finish (metrics.json) short
            final.append(row)
            return
        send(row)

    train(cfg, on_epoch_end=report, hparam_keys=sweep.parsed_space.swept_keys())
    for row in final:
        send(row)


def run_cv_trial(cfg, *, run_dir: Path) -> None:
    """A cross-validated trial (data.fold=-1): the k folds in lock-step, the mean over folds reported each epoch.

    The metric is the mean of the folds' best val macro F1 so far, so ASHA compares trials on
    their cross-validated score; the trial's run directory ends with cv.json and oof.npz
    (trainer/cv.py). No Tune checkpoint: a restarted trial resumes from its folds' checkpoints.
    """
    from trainer.cv import cv_epoch_stream

    rows = cv_epoch_stream(cfg)
    final: list[dict] = []
    try:
        for row in rows:
            row = dict(row, run_dir=str(run_dir))
            if row["epoch"] == cfg.epochs:
                final.append(row)  # reported once cv.json is written (Tune stops a trial on its last report)
                continue
            ray_tune.report(_metrics(row))
    finally:
        rows.close()  # ASHA stopped the trial: pause no fold thread forever in a reused actor
    for row in final:
        ray_tune.report(_metrics(row))


class StreamTrial(ray_tune.Trainable):
    """Trainable fed by a generator of per-epoch rows (a trial running elsewhere, e.g. in Modal).

    A class rather than a function trainable because Tune calls `cleanup()` synchronously when ASHA
    stops the trial: closing the generator there lets the remote side stop its container. (In a
    function trainable the stop arrives as SystemExit in a daemon thread that Ray tears down ~50 ms
    later, too soon for a network call.) Its actors are not reused: Tune parks a stopped trial's actor
    for reuse without calling cleanup(), which would leave the remote container running.
    """

    def setup(self, config: dict, *, sweep: Sweep, stream: Callable[..., Iterator[dict]]):
        # the complete config as flat overrides (validated by the driver's check_space and again remotely)
        space = sweep.parsed_space
        overrides = {**flat_dict(sweep.base), **space.overrides(config),
                     "name": f"{sweep.name}-{trial_run_name(self.trial_id, space, config)}", "resume": "auto"}
        overrides.pop("output_dir")  # the remote side decides where its runs live
        self.epochs = int(overrides["epochs"])
        self.rows = stream(overrides, gpu=sweep.gpu)
        self.last: dict | None = None

    def step(self) -> dict:
        row = next(self.rows, None)
        if row is None:
            if self.last is None:
                raise RuntimeError("the trial's stream ended before reporting an epoch")
            return dict(self.last, done=True)
        row = dict(row)
        row["remote_checkpoint"] = row.pop("checkpoint", "")
        self.last = _metrics(row)
        if row["epoch"] >= self.epochs:
            # last epoch: let the remote run finish (metrics.json, volume commit) before Tune may stop
            # the trial, which it does on the last report (ASHA at max_t)
            next(self.rows, None)
            return dict(self.last, done=True)
        return self.last

    def save_checkpoint(self, checkpoint_dir: str) -> dict:
        return {"last": self.last}  # Tune's bookkeeping only: the model checkpoint stays on the remote side

    def load_checkpoint(self, checkpoint: dict) -> None:
        self.last = checkpoint["last"]

    def cleanup(self) -> None:
        with contextlib.suppress(Exception):  # a stream that already failed must not mask the trial's error
            self.rows.close()


def modal_stream(overrides: dict, *, gpu: str) -> Iterator[dict]:
    import modal_cluster  # only the modal backend needs it (and the modal package)

    return modal_cluster.stream_trial(overrides, gpu=gpu)


def local_backend(sweep: Sweep):
    return ray_tune.with_parameters(run_local_trial, sweep=sweep)


def stream_backend(stream: Callable[..., Iterator[dict]]) -> Callable[[Sweep], object]:
    """Backend whose trials iterate `stream(config_overrides, gpu=...)`, a generator of epoch rows."""

    def backend(sweep: Sweep):
        return ray_tune.with_parameters(StreamTrial, sweep=sweep, stream=stream)

    return backend


# name -> (Sweep -> Ray trainable); where a trial runs is chosen here and nowhere else
BACKENDS: dict[str, Callable] = {
    "local": local_backend,
    "modal": stream_backend(modal_stream),
}


# ============================================================================ the sweep

# sweep dir -> {trial id: Ray status} as of the last Tune step: after an interrupt it says which
# trials were still running (Tune's own cleanup marks them terminated like finished ones)
_LAST_STATUS: dict[str, dict[str, str]] = {}


class StatusSnapshot(ray_tune.Callback):
    """Records every trial's status after each Tune step (into _LAST_STATUS, which survives restore)."""

    def __init__(self, key: str):
        self.key = key

    def on_step_end(self, iteration, trials, **info):
        _LAST_STATUS[self.key] = {_trial_dir_name(t): t.status for t in trials}


def _trial_dir_name(trial) -> str:
    """The name trial_table knows a trial by: its directory (TrialDirname), else its id."""
    try:
        return Path(trial.path).name or trial.trial_id
    except Exception:  # a trial without storage yet
        return trial.trial_id


def fit_interruptibly(tuner) -> tuple[object, bool]:
    """(tuner.fit() result grid, whether Ctrl+C / SIGINT stopped the sweep).

    The first SIGINT asks Ray Tune for its graceful stop (state saved, `--resume` continues); a
    second one stops at once. Ray's own SIGINT handler is replaced so that we know it happened.
    """
    if threading.current_thread() is not threading.main_thread():
        return tuner.fit(), False
    interrupted = threading.Event()

    def on_sigint(sig, frame):
        if interrupted.is_set():
            raise KeyboardInterrupt
        interrupted.set()
        log.warning("interrupted: stopping the sweep after saving its state (Ctrl+C again to stop at once)")
        signal.raise_signal(signal.SIGUSR1)  # Ray Tune's graceful stop

    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        return tuner.fit(), interrupted.is_set()
    finally:
        signal.signal(signal.SIGINT, previous)


def max_epochs(sweep: Sweep) -> int:
    dist = sweep.parsed_space.params.get("epochs")
    return int(max(dist.probes())) if dist is not None else int(sweep.base["epochs"])


class TrialLines(ray_tune.Callback):
    """One console line per trial that ends (finished, stopped by ASHA or errored), in the driver."""

    def _line(self, trial, how: str) -> None:
        r = trial.last_result or {}
        score = r.get(METRIC)
        log.info("trial %s %s after %s epoch(s): best val macro F1 %s", trial.trial_id.rsplit("_", 1)[-1], how,
                 r.get("epoch", 0), "-" if score is None else f"{score:.4f}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._line(trial, "ended")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._line(trial, "failed")


def make_tuner(sweep: Sweep, trainable, *, num_samples: int, scheduler: str, search: str, max_concurrent: int,
               resources: dict, reuse_actors: bool):
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    epochs = max_epochs(sweep)
    if scheduler == "asha":
        # rungs at grace, 2 grace, 4 grace, ... < epochs: a trial below the median there stops
        sched = ASHAScheduler(time_attr="epoch", max_t=epochs, grace_period=max(1, epochs // 4),
                              reduction_factor=REDUCTION_FACTOR)
    else:
        sched = FIFOScheduler()
    # the first trial is the base config itself (when the space contains it): the table then shows what
    # the sweep gained over it, measured the same way
    point = base_point(sweep.parsed_space, sweep.base)
    first = [point] if point else None
    if search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(points_to_evaluate=first, seed=sweep.base["seed"])
    else:
        from ray.tune.search import BasicVariantGenerator

        # same seed, same samples; Tune ignores max_concurrent_trials for a search_alg given as an instance
        search_alg = BasicVariantGenerator(points_to_evaluate=first, random_state=sweep.base["seed"],
                                           max_concurrent=max_concurrent)
    return ray_tune.Tuner(
        ray_tune.with_resources(trainable, resources),
        param_space=ray_param_space(sweep.parsed_space),
        tune_config=ray_tune.TuneConfig(
            metric=METRIC, mode="max", num_samples=num_samples, scheduler=sched, search_alg=search_alg,
            max_concurrent_trials=(max_concurrent or None) if search == "optuna" else None,
            trial_dirname_creator=TrialDirname(sweep.parsed_space),
            reuse_actors=reuse_actors,
        ),
        run_config=ray_tune.RunConfig(
            name=sweep.name, storage_path=sweep.storage,
            failure_config=ray_tune.FailureConfig(max_failures=0),  # an errored trial stays errored; others go on
            # num_to_keep=1 makes Tune save its experiment state at every checkpoint, as resume needs
            # (None or 2 broke resume in tests/test_tune.py). A driver killed between Tune deleting
            # the previous pointer checkpoint and saving that state leaves a trial that resume
            # cannot restore (ray-project/ray#27790): restore_pointer_checkpoints mends that on --resume
            checkpoint_config=ray_tune.CheckpointConfig(num_to_keep=1),
            # no Ray TensorBoard (see run_sweep); Ray's own reporter prints wide tables every few seconds,
            # TrialLines says what ended; StatusSnapshot knows which trials an interrupt caught
            callbacks=[JsonLoggerCallback(), CSVLoggerCallback(), TrialLines(), StatusSnapshot(sweep.name)],
            verbose=0,
        ),
    )


def restore_pointer_checkpoints(sweep: Sweep) -> int:
    """Put back a trial's pointer checkpoints that Tune deleted before the state naming them was saved.

    With num_to_keep=1 Tune deletes a trial's previous checkpoint when it records the next, and
    saves its experiment state right after; a driver killed in between leaves a state that
    names the deleted one, and resume then fails that trial ("Could not recover from
    checkpoint", ray-project/ray#27790). A pointer checkpoint carries nothing resume needs (the
    restarted trial continues from its own run directory, resume=auto), so every missing
    lower-numbered one is recreated as a copy of the trial's newest. Returns how many.
    """
    mended = 0
    for trial in sorted(p for p in sweep.dir.glob("trial_*") if p.is_dir()):
        checkpoints = sorted(trial.glob("checkpoint_*"))
        if not checkpoints:
            continue
        newest = checkpoints[-1]
        for i in range(int(newest.name.split("_")[-1])):
            missing = trial / f"checkpoint_{i:06d}"
            if not missing.exists():
                shutil.copytree(newest, missing)
                mended += 1
    return mended


def run_sweep(sweep: Sweep, *, backend: Callable | None = None, resume: bool = False, num_samples: int = 8,
              scheduler: str = "asha", search: str = "random", max_concurrent: int = 0, cpus_per_trial: float = 1.0,
              gpus_per_trial: float = 0.0) -> list[dict]:
    """Run (or continue) `sweep`; returns the trial table sorted by val macro F1 and writes best.yaml."""
    # TensorBoard logs come from the trainer (runs/<trial>/tb, with hparams); Ray's own copies would
    # show every trial twice in `tensorboard --logdir <sweep>`
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    # num_to_keep=1 snapshots the experiment state at every checkpoint, as resume needs; with epochs of
    # seconds (smoke tests) Ray would warn about that on every epoch
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # verbose=0 silences Tune's progress tables, but its newer console engine still prints an experiment
    # box and a "View detailed results" line; the classic engine at verbose=0 prints nothing
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    trainable = (backend or BACKENDS[sweep.backend])(sweep)
    resources = {"cpu": cpus_per_trial, "gpu": gpus_per_trial}
    # a local trial reuses its predecessor's worker (no new process, no second torch import)
    reuse_actors = not (isinstance(trainable, type) and issubclass(trainable, StreamTrial))
    t0 = time.perf_counter()
    if resume:
        mended = restore_pointer_checkpoints(sweep)
        if mended:
            log.info("put back %d pointer checkpoint(s) that Tune had deleted before its last state save", mended)
        tuner = ray_tune.Tuner.restore(str(sweep.dir), ray_tune.with_resources(trainable, resources),
                                       resume_unfinished=True, resume_errored=False, restart_errored=False)
    else:
        sweep.save()
        tuner = make_tuner(sweep, trainable, num_samples=num_samples, scheduler=scheduler, search=search,
                           max_concurrent=max_concurrent, resources=resources, reuse_actors=reuse_actors)
    previous = _previous_trials(sweep) if resume else {}
    _LAST_STATUS.pop(sweep.name, None)
    t_store = time.time()
    if sweep.backend == "local":
        prefeaturise(sweep)
    grid, interrupted = fit_interruptibly(tuner)
    wall = time.perf_counter() - t0
    rows = trial_table(grid, sweep, previous=previous,
                       running=_running_trials(sweep) if interrupted else set())
    summary = {"sweep": str(sweep.dir), "wall_time_s": wall, "resumed": resume, "interrupted": interrupted,
               "trials": rows, "feature_store": store_counts(sweep, since=t_store)}
    (sweep.dir / "trials.json").write_text(json.dumps(summary, indent=1, default=str))
    best = next((r for r in rows if r["status"] != "error" and r["val_macro_f1"] is not None), None)
    if best is not None:
        write_best_yaml(sweep, best, sweep.dir / "best.yaml", partial=interrupted)
    if interrupted:
        raise SweepInterrupted(sweep)
    return rows


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl+C stopped the sweep; trials.json and a partial best.yaml were written."""

    def __init__(self, sweep: Sweep):
        super().__init__(f"sweep {sweep.dir} interrupted")
        self.sweep = sweep


def _running_trials(sweep: Sweep) -> set[str]:
    """Trials Tune was running (or about to run) when the sweep was interrupted."""
    status = _LAST_STATUS.get(sweep.name, {})
    return {t for t, st in status.items() if st in ("RUNNING", "PENDING", "PAUSED")}


def _previous_trials(sweep: Sweep) -> dict[str, dict]:
    """trials.json rows by trial id (kept for errored trials, whose config Tune drops on restore)."""
    try:
        rows = json.loads((sweep.dir / "trials.json").read_text())["trials"]
        return {r["trial"]: r for r in rows}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def prefeaturise(sweep: Sweep) -> None:
    """Featurise the sweep's data once into the store every local trial shares (runs/feature_store),
    before trials start in parallel: N trials then featurise once, not N times."""
    from trainer.store import featurised_ahead

    cfg = make_config(base={**sweep.base, "output_dir": str(sweep.runs_dir)})
    featurised_ahead(cfg, names=cfg.feature_names(), params=cfg.feature_params())


def store_counts(sweep: Sweep, *, since: float) -> dict:
    """Videos featurised (misses) and reused (hits) in the shared feature store since `since`."""
    from trainer.store import store_root

    root = store_root(make_config(base={**sweep.base, "output_dir": str(sweep.runs_dir)}))
    events = root / "events.jsonl" if root is not None else None
    if events is None or not events.is_file():
        return {"hits": 0, "misses": 0}
    rows = [json.loads(line) for line in events.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["time"] >= since]
    return {"hits": sum(r["hits"] for r in rows), "misses": sum(r["misses"] for r in rows)}


def error_line(error: BaseException | None) -> str:
    """The user-facing line of a trial's error: 'NonFiniteLossError: training loss became nan ...'."""
    if error is None:
        return ""
    text = str(error).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):  # Ray wraps the worker's traceback; its last "Name: message" line is the cause
        head = ln.split(":", 1)[0]
        if ":" in ln and head.replace(".", "").replace("_", "").isalnum() and head[:1].isalpha() and \
                (head.endswith(("Error", "Exception", "Exit")) or "." in head):
            return f"{head.rsplit('.', 1)[-1]}:{ln.split(':', 1)[1]}"
    return lines[-1] if lines else type(error).__name__


def trial_table(grid, sweep: Sweep, *, previous: dict | None = None, running: set | None = None) -> list[dict]:
    """One dict per trial (status, epochs, best val macro F1, sampled values), best first, errors last.

    status: done | stopped (ASHA stopped it early) | interrupted (running when Ctrl+C stopped the
    sweep) | error. previous: rows of an earlier trials.json, whose sampled values and error
    are kept for errored trials (Tune restores those without their config).
    """
    space = sweep.parsed_space
    epochs = max_epochs(sweep)
    point = base_point(space, sweep.base)
    previous, running = previous or {}, running or set()
    rows = []
    for result in grid:
        m = result.metrics or {}
        trial = Path(result.path).name
        old = previous.get(trial, {})
        error = error_line(result.error)
        if trial in running and (result.error is None or error.startswith("KeyboardInterrupt")):
            status = "interrupted"  # keyed by trial directory name (_trial_dir_name)
        elif result.error is not None:
            status = "error"
        else:
            status = "stopped" if m.get("epoch", 0) < epochs else "done"
        rows.append({
            "trial": trial,
            "status": status,
            "epochs": m.get("epoch", old.get("epochs", 0)),
            "val_macro_f1": m.get(METRIC, old.get("val_macro_f1")),
            "val_macro_f1_std": m.get(f"{METRIC}_std", old.get("val_macro_f1_std")),  # cross-validated: std over folds
            "fold_scores": [m[f"fold_{i}_{METRIC}"] for i in range(int(m.get("folds", 0)))
                            if f"fold_{i}_{METRIC}" in m],
            "time_s": m.get("time_total_s"),
            "train_time_s": m.get("train_time_s"),
            "params": space.overrides(result.config) if result.config else old.get("params", {}),
            "base_config": point is not None and result.config == point if result.config
            else old.get("base_config", False),
            "run_dir": str(sweep.runs_dir / trial),
            "error": error or old.get("error", ""),
        })
    rows.sort(key=lambda r: (r["status"] == "error", -(r["val_macro_f1"] if r["val_macro_f1"] is not None else -1)))
    return rows


def write_best_yaml(sweep: Sweep, best: dict, path: Path, *, partial: bool = False) -> None:
    """Complete config of the best trial, runnable as is (fresh run name, default output dir).

    partial: the sweep was interrupted; the header says this is the best so far.
    """
    cfg = make_config(None, {**best["params"], "name": "", "output_dir": "runs", "resume": ""}, base=sweep.base)
    warning = (f"# PARTIAL: the sweep was interrupted; best of the trials so far. Continue it with\n"
               f"#   python tune.py --storage {sweep.storage} --name {sweep.name} --resume\n") if partial else ""
    header = (warning + f"# python trainer/run.py --config {path}\n"
              f"# best trial {best['trial']} of sweep {sweep.dir}: val macro F1 {best['val_macro_f1']:.4f} "
              f"({best['status']} after {best['epochs']} epochs)\n"
              f"# sampled: {json.dumps(best['params'])}\n")
    if best.get("fold_scores"):  # cross-validated: the score is a mean over these folds
        header += (f"# cross-validated over {len(best['fold_scores'])} folds (data.split={cfg.data.split}, "
                   f"split_seed {cfg.data.split_seed}): mean {best['val_macro_f1']:.4f} +- "
                   f"{best['val_macro_f1_std']:.4f}, per fold {[round(v, 4) for v in best['fold_scores']]}; "
                   f"fold videos: {Path(best['run_dir']) / 'folds.json'}\n")
    path.write_text(header + config_to_yaml(cfg))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, list):
        return "[" + ",".join(_fmt(x) for x in v) + "]"
    return str(v)


def _trial_number(run_name: str) -> str:
    """'trial_001-learning_rate_...' -> 'trial_001' (the swept values have their own columns)."""
    return run_name.split("-", 1)[0]


def _score(row: dict) -> str:
    """0.8123, or 0.8123 ± 0.0210 for a cross-validated trial (mean ± std over folds)."""
    if row["val_macro_f1"] is None:
        return "-"
    std = row.get("val_macro_f1_std")
    return f"{row['val_macro_f1']:.4f}" + ("" if std is None else f" ± {std:.4f}")


def format_table(rows: list[dict]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r["params"]))
    head = ["trial", "status", "epochs", "val_macro_f1", *keys, "time_s"]
    body = [[_trial_number(r["trial"]), r["status"], str(r["epochs"]), _score(r),
             *[_fmt(r["params"].get(k, "")) for k in keys],
             "-" if r["time_s"] is None else f"{r['time_s']:.0f}"] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]
    lines += [f"  {_trial_number(r['trial'])}: {r['error']}" for r in rows if r["error"]]
    base = next((r for r in rows if r.get("base_config")), None)
    if base is not None and base["val_macro_f1"] is not None and rows[0]["val_macro_f1"] is not None:
        lines.append(f"base config = {_trial_number(base['trial'])} ({base['val_macro_f1']:.4f}); best - base = "
                     f"{rows[0]['val_macro_f1'] - base['val_macro_f1']:+.4f} val macro F1")
    return "\n".join(lines)


# ============================================================================ CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tune.py", description="Ray Tune sweep of the trainer over a search space of config keys.",
        epilog="Extra key=value overrides apply to every trial and pin that key if the space sweeps it, "
               "e.g. epochs=6 data.synthetic.num_videos=10. See docs/tune.md.")
    p.add_argument("--config", help="base config YAML (default: configs/default.yaml if present)")
    p.add_argument("--space", default="search_spaces/default.yaml", help="search space YAML (search_spaces/)")
    p.add_argument("--num-samples", type=int, default=8, help="trials to sample (each grid point this many times)")
    p.add_argument("--scheduler", choices=["asha", "none"], default="asha",
                   help="asha: stop trials below the median val macro F1 at epoch rungs; none: run all to the end")
    p.add_argument("--search", choices=["random", "optuna"], default="random", help="how trials are sampled")
    p.add_argument("--max-concurrent", type=int, default=0, help="trials at once (0: as many as resources allow)")
    p.add_argument("--cpus-per-trial", type=float, help="CPUs per trial, fractions allowed (default 1; modal 0.25)")
    p.add_argument("--gpus-per-trial", type=float,
                   help="GPUs per trial, fractions allowed (default 1 if the machine has GPUs, else 0)")
    p.add_argument("--storage", default="runs/sweeps", help="directory holding sweeps (default runs/sweeps)")
    p.add_argument("--name", help="sweep name (default sweep-<timestamp>; with --resume: the latest sweep)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep without redoing finished trials")
    p.add_argument("--smoke-test", action="store_true", help="2 tiny trials of a few seconds each (CI)")
    p.add_argument("--backend", choices=sorted(BACKENDS), default="local", help="where trials run")
    p.add_argument("--gpu", help="Modal GPU type for --backend modal (default: the config's modal_gpu)")
    p.add_argument("overrides", nargs="*", help="key=value config overrides for every trial")
    return p


def new_sweep(args: argparse.Namespace) -> Sweep:
    """Resolve base config and space, pin overridden keys, and check everything before Ray starts."""
    config = args.config or ("configs/default.yaml" if Path("configs/default.yaml").is_file() else None)
    pins = dict(parse_override(o) for o in args.overrides)
    base_overrides = {**(SMOKE_OVERRIDES if args.smoke_test else {}), **pins}
    base = make_config(config, base_overrides).to_dict()
    space_raw = read_space(args.space)
    for k in [k for k in pins if k in space_raw]:
        log.info("%s=%s pins a key of the search space: not swept", k, pins[k])
        del space_raw[k]
    if args.backend == "modal" and importlib.util.find_spec("modal_cluster") is None:
        raise ConfigError("--backend modal needs modal_cluster.py next to tune.py and `pip install -e .[modal]`")
    if args.backend == "modal":  # no token: say so once, before Ray starts, not once per trial
        import modal_cluster

        modal_cluster.require_token()  # ModalSetupError is a ConfigError: one line, exit 2
    storage = str(Path(args.storage).resolve())
    name = args.name or f"{'smoke' if args.smoke_test else 'sweep'}-{time.strftime('%Y%m%d-%H%M%S')}"
    check_name(name, "--name")  # one safe path component: never a path elsewhere
    if (Path(storage) / name / "sweep.json").exists():
        raise ConfigError(f"sweep '{name}' already exists in {storage}; pass --resume to continue it "
                          "or choose another --name")
    sweep = Sweep(name=name, storage=storage, base=base, space=space_raw, space_path=str(args.space),
                  backend=args.backend, gpu=args.gpu or base["modal_gpu"])
    check_space(sweep.parsed_space, base, search=args.search, where=f"search space {args.space}")
    return sweep


def find_sweep(storage: str, name: str | None) -> Sweep:
    root = Path(storage).resolve()
    if name is None:
        found = sorted(root.glob("*/sweep.json"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise ConfigError(f"--resume: no sweep in {root}; pass --storage/--name of the sweep to continue")
        return Sweep.load(found[-1].parent)
    check_name(name, "--name")
    if not (root / name / "sweep.json").is_file():
        raise ConfigError(f"--resume: no sweep '{name}' in {root}")
    sweep = Sweep.load(root / name)
    sweep.storage = str(root)  # the storage may have moved since
    return sweep


def init_ray() -> None:
    """Connect to RAY_ADDRESS if set (a cluster started with `ray start`), else start Ray on this machine."""
    if ray.is_initialized():
        return
    # trials' tqdm bars would interleave in this console; workers inherit this, Tune's table shows progress
    os.environ.setdefault("TQDM_DISABLE", "1")
    # trials' own console output (their per-epoch lines and reports) would arrive after the summary
    # table; Tune records their results and errors, and their logs stay in Ray's session log directory
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], logging_level=logging.WARNING, log_to_driver=False)
    else:
        # Ray turns token authentication on for a new local cluster (good) and warns about it on every start
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        if args.resume:
            sweep = find_sweep(args.storage, args.name)
            opts = sweep.options
            if not ray_tune.Tuner.can_restore(str(sweep.dir)):
                raise ConfigError(f"--resume: sweep {sweep.dir} never started; run it again without --resume")
        else:
            sweep = new_sweep(args)
            opts = {
                "num_samples": 2 if args.smoke_test else args.num_samples,
                "scheduler": args.scheduler, "search": args.search, "max_concurrent": args.max_concurrent,
                "cpus_per_trial": args.cpus_per_trial if args.cpus_per_trial is not None
                else (1.0 if args.backend == "local" else 0.25),
                "gpus_per_trial": args.gpus_per_trial,
            }
            sweep.options = opts
    except ConfigError as e:
        log.error("error: %s", e)
        return 2
    init_ray()
    gpus = opts["gpus_per_trial"]
    if sweep.backend != "local":
        gpus = 0.0  # the GPU is remote (--gpu); the local actor only waits for its epochs
    elif gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    log.info("sweep %s: %s trials of %s over %s (%s, %s), trial runs in %s", sweep.name, opts["num_samples"],
             sweep.base["model_type"], sweep.space_path, opts["scheduler"], opts["search"], sweep.runs_dir)
    try:
        rows = run_sweep(sweep, resume=args.resume, num_samples=opts["num_samples"], scheduler=opts["scheduler"],
                         search=opts["search"], max_concurrent=opts["max_concurrent"],
                         cpus_per_trial=opts["cpus_per_trial"], gpus_per_trial=gpus)
    except SweepInterrupted:
        rows = json.loads((sweep.dir / "trials.json").read_text())["trials"]
        print(format_table(rows))
        print(f"\ninterrupted: partial results in {sweep.dir / 'trials.json'}; continue with "
              f"python tune.py --storage {sweep.storage} --name {sweep.name} --resume")
        return 130
    print(format_table(rows))
    print(f"\nbest config:  python trainer/run.py --config {sweep.dir / 'best.yaml'}"
          if (sweep.dir / "best.yaml").is_file() else "\nno trial finished without error: no best.yaml")
    print(f"TensorBoard:  tensorboard --logdir {sweep.runs_dir}   (HParams tab compares trials)")
    return 0 if any(r["status"] != "error" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
