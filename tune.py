"""Ray Tune sweeps over trainer config keys (class weights, learning rate, batch size, ...).

    python tune.py --config configs/default.yaml --space search_spaces/default.yaml --num-samples 16
    python tune.py --space search_spaces/wide.yaml --search optuna --scheduler none epochs=6
    python tune.py --space search_spaces/default.yaml --backend modal --gpu A10G
    python tune.py --storage runs/sweeps --name <sweep> --resume      # continue an interrupted sweep
    python tune.py --smoke-test                                        # 2 tiny trials (CI)

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
import difflib
import importlib.util
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import ray
import yaml
from ray import tune as ray_tune

from trainer.config import (
    ConfigError,
    all_keys,
    config_to_yaml,
    flat_dict,
    load_yaml,
    make_config,
    parse_override,
)

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


# ============================================================================ search spaces


@dataclasses.dataclass(frozen=True)
class Dist:
    """One sampled value: `kind` is a key of DISTRIBUTIONS, `args` its bounds or options."""

    kind: str
    args: list

    def to_ray(self):
        """The Ray Tune domain. List options travel as YAML strings ("[1, 5, 5, 5]"): Optuna and
        Tune's result tables only take scalars."""
        return DISTRIBUTIONS[self.kind](self.encoded())

    def encoded(self) -> list:
        if self.kind in ("choice", "grid"):
            return [_encode(v) for v in self.args]
        return list(self.args)

    def probes(self) -> list:
        """Values checked against the config before the sweep starts (bounds, every option)."""
        return list(self.args)


def _encode(v):
    return yaml.safe_dump(v, default_flow_style=True, width=1000).strip() if isinstance(v, list | dict) else v


def _decode(v):
    return yaml.safe_load(v) if isinstance(v, str) and v[:1] in "[{" else v


# kind -> builder of the Ray domain; bounds are inclusive ("randint: [16, 64]" can give 64)
DISTRIBUTIONS: dict[str, Callable] = {
    "choice": lambda a: ray_tune.choice(a),
    "grid": lambda a: ray_tune.grid_search(a),
    "uniform": lambda a: ray_tune.uniform(a[0], a[1]),
    "loguniform": lambda a: ray_tune.loguniform(a[0], a[1]),
    "randint": lambda a: ray_tune.randint(a[0], a[1] + 1),
}


def _nearest(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else ""


def _number(x):
    """YAML 1.1 reads 1e-4 (no dot) as a string: take it as the number it is meant to be."""
    if isinstance(x, str):
        with contextlib.suppress(ValueError):
            return float(x)
    return x


def _parse_dist(where: str, spec: dict) -> Dist:
    """{loguniform: [1e-4, 1e-2]} -> Dist, with one-line errors for malformed specs."""
    if len(spec) != 1:
        raise ConfigError(f"{where}: a distribution is one of {', '.join(DISTRIBUTIONS)} with its arguments, "
                          f"got {spec!r}")
    (kind, args), = spec.items()
    if kind not in DISTRIBUTIONS:
        raise ConfigError(f"{where}: unknown distribution '{kind}'{_nearest(str(kind), DISTRIBUTIONS)}")
    if kind in ("choice", "grid"):
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{where}: {kind} needs a non-empty list of options, got {args!r}")
        return Dist(kind, args)
    if isinstance(args, list):
        args = [_number(x) for x in args]
    numeric = isinstance(args, list) and len(args) == 2 and all(
        isinstance(x, int | float) and not isinstance(x, bool) for x in args)
    if not numeric or not args[0] < args[1]:
        raise ConfigError(f"{where}: {kind} needs [low, high] with low < high, got {args!r}")
    if kind == "loguniform" and args[0] <= 0:
        raise ConfigError(f"{where}: loguniform needs low > 0, got {args!r}")
    if kind == "randint" and not all(isinstance(x, int) for x in args):
        raise ConfigError(f"{where}: randint needs integer bounds, got {args!r}")
    return Dist(kind, list(args))


@dataclasses.dataclass
class Space:
    """A search space: Ray parameters, fixed values, and how they become config overrides."""

    params: dict[str, Dist]  # Ray parameter name (a config key, or class_weights.<class>) -> distribution
    fixed: dict  # config key -> the value of every trial
    class_weights: list | None = None  # per-class form: a parameter name or a fixed number per class
    class_names: list | None = None  # class names of the per-class form, in the data's order

    def overrides(self, params: dict) -> dict:
        """Ray's sampled `params` -> {dotted config key: value} for make_config."""
        out = dict(self.fixed)
        for name in self.params:
            if not name.startswith("class_weights."):
                out[name] = _decode(params[name])
        if self.class_weights is not None:
            out["class_weights"] = [float(params[w]) if isinstance(w, str) else w for w in self.class_weights]
        return out

    def to_ray(self) -> dict:
        return {name: dist.to_ray() for name, dist in self.params.items()}


def _section_keys(keys: list[str]) -> set[str]:
    return {k.rsplit(".", i)[0] for k in keys for i in range(1, k.count(".") + 1)}


def _flatten_space(raw: dict, where: str, keys: list[str], prefix: str = "") -> dict:
    """Nested sections (`data: {synthetic: {difficulty: ...}}`) -> dotted keys; unknown keys fail."""
    out = {}
    sections = _section_keys(keys)
    for key, value in raw.items():
        full = f"{prefix}{key}"
        if full in sections and isinstance(value, dict):
            out.update(_flatten_space(value, where, keys, f"{full}."))
        elif full not in keys:
            raise ConfigError(f"{where}: unknown config key '{full}'{_nearest(full, keys)}")
        else:
            out[full] = value
    return out


def parse_space(raw: dict, where: str = "search space") -> Space:
    """Search-space mapping (a YAML file's content) -> Space; unknown keys and bad specs raise ConfigError.

    Values: a distribution `{choice|grid|uniform|loguniform|randint: ...}`, a plain value (fixed in
    every trial), or for `class_weights` the per-class form `{classes: [...], background: 1.0,
    each: {loguniform: [1, 20]}}` (background: a number keeps it fixed, a distribution sweeps it).
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping of config key: distribution")
    keys = all_keys()
    space = Space(params={}, fixed={})
    for key, value in _flatten_space(raw, where, keys).items():
        here = f"{where}: {key}"
        if key == "class_weights" and isinstance(value, dict) and "each" in value:
            _parse_class_weights(space, value, here)
        elif isinstance(value, dict):
            space.params[key] = _parse_dist(here, value)
        else:
            space.fixed[key] = value
    return space


def _parse_class_weights(space: Space, spec: dict, where: str) -> None:
    unknown = set(spec) - {"classes", "background", "each"}
    if unknown:
        raise ConfigError(f"{where}: unknown entry '{sorted(unknown)[0]}' (per-class weights take classes, "
                          "background, each)")
    classes = spec.get("classes")
    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes):
        raise ConfigError(f"{where}: 'classes' must list the class names in the data's order, background first")
    if not isinstance(spec["each"], dict):
        raise ConfigError(f"{where}: 'each' must be a distribution such as {{loguniform: [1.0, 20.0]}}")
    background = spec.get("background", 1.0)
    weights: list = []
    if isinstance(background, dict):
        space.params[f"class_weights.{classes[0]}"] = _parse_dist(f"{where}.background", background)
        weights.append(f"class_weights.{classes[0]}")
    elif isinstance(background, int | float) and not isinstance(background, bool) and background >= 0:
        weights.append(float(background))
    else:
        raise ConfigError(f"{where}: 'background' must be a number >= 0 or a distribution, got {background!r}")
    each = _parse_dist(f"{where}.each", spec["each"])
    if each.kind not in ("uniform", "loguniform", "choice"):
        raise ConfigError(f"{where}.each: per-class weights take uniform, loguniform or choice, not {each.kind}")
    for c in classes[1:]:
        space.params[f"class_weights.{c}"] = each
        weights.append(f"class_weights.{c}")
    space.class_weights, space.class_names = weights, list(classes)


def read_space(path: str | Path) -> dict:
    """A search-space YAML as a mapping with dotted keys; one-line errors for missing/broken files."""
    raw = load_yaml(path, kind="search space", hint=" (see search_spaces/)")
    return _flatten_space(raw, f"search space {Path(path)}", all_keys())


def load_space(path: str | Path) -> Space:
    return parse_space(read_space(path), where=f"search space {path}")


def check_space(space: Space, base: dict, *, search: str = "random", where: str = "search space") -> None:
    """Try every bound and option of `space` on the base config, so a bad space fails before any trial."""
    flat = flat_dict(base)
    if search == "optuna" and any(d.kind == "grid" for d in space.params.values()):
        raise ConfigError(f"{where}: grid works with --search random only (Optuna samples; use choice)")
    probes: list[dict] = [dict(space.fixed)]
    for name, dist in space.params.items():
        if name.startswith("class_weights."):
            continue
        if isinstance(flat.get(name), int) and not isinstance(flat.get(name), bool) and \
                dist.kind in ("uniform", "loguniform"):
            raise ConfigError(f"{where}: {name} is an integer key; use randint or choice, not {dist.kind}")
        probes += [{name: v} for v in dist.probes()]
    if space.class_weights is not None:
        for i in (0, -1):
            probes.append({"class_weights": [w if not isinstance(w, str) else float(space.params[w].probes()[i])
                                             for w in space.class_weights]})
        if flat.get("data.format") == "synthetic":
            from trainer.data.synthetic import CLASS_NAMES

            if space.class_names != list(CLASS_NAMES):
                raise ConfigError(f"{where}: class_weights classes {space.class_names} differ from the synthetic "
                                  f"data's classes {list(CLASS_NAMES)}")
    for overrides in probes:
        try:
            make_config(None, overrides, base=base)
        except ConfigError as e:
            raise ConfigError(f"{where}: {str(e).removeprefix('override: ')}") from None


def base_point(space: Space, base: dict) -> dict | None:
    """The base config's own values as a point of `space` (the sweep's first trial), or None when the base
    config lies outside the space (a value that is not an option, out of bounds) or the space has grids."""
    flat = flat_dict(base)
    point = {}
    for name, dist in space.params.items():
        if dist.kind == "grid":
            return None
        if name.startswith("class_weights."):
            continue
        value = flat[name]
        if name == "class_weights" and value == []:  # [] = all 1: the all-ones option, if there is one
            value = next((o for o in dist.args if isinstance(o, list) and set(o) == {1}), value)
        if dist.kind == "choice":
            if value not in dist.args:
                return None
            point[name] = _encode(value)
        elif not dist.args[0] <= value <= dist.args[1]:
            return None
        else:
            point[name] = value
    if space.class_weights is not None:
        weights = flat["class_weights"] or [1.0] * len(space.class_weights)
        if len(weights) != len(space.class_weights):
            return None
        for w, value in zip(space.class_weights, weights):
            if not isinstance(w, str):
                if w != value:
                    return None
                continue
            dist = space.params[w]
            if not (value in dist.args if dist.kind == "choice" else dist.args[0] <= value <= dist.args[1]):
                return None
            point[w] = float(value)
    return point


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


def trial_config_overrides(sweep: Sweep, params: dict, trial_id: str) -> dict:
    """Overrides of one trial on top of sweep.base: the sampled values, and a run directory per trial.

    resume=auto: a trial restarted by `--resume` continues from its own last checkpoint.
    """
    return {**parse_space(sweep.space).overrides(params),
            "output_dir": str(sweep.runs_dir), "name": trial_id, "resume": "auto"}


def _metrics(row: dict) -> dict:
    """Per-epoch row -> Tune metrics (no None values: classes absent from val have no F1)."""
    return {k: v for k, v in row.items() if v is not None}


def run_local_trial(params: dict, *, sweep: Sweep) -> None:
    """Function trainable: one trainer.run.train() in this Ray worker, each epoch reported with its checkpoint."""
    from trainer.run import train  # torch is imported in the trial's worker, not by every tune.py user

    trial_id = ray_tune.get_context().get_trial_id()
    cfg = make_config(None, trial_config_overrides(sweep, params, trial_id), base=sweep.base)

    final: list[dict] = []

    def report(row: dict) -> None:
        row = dict(row, run_dir=str(sweep.runs_dir / trial_id))
        if row["epoch"] == cfg.epochs:
            # reported once train() has returned: Tune stops a trial on its last report (ASHA at max_t),
            # which would cut the run's finish (metrics.json) short
            final.append(row)
            return
        checkpoint = ray_tune.Checkpoint.from_directory(row.pop("checkpoint"))
        ray_tune.report(_metrics(row), checkpoint=checkpoint)

    train(cfg, on_epoch_end=report)
    for row in final:
        checkpoint = ray_tune.Checkpoint.from_directory(row.pop("checkpoint"))
        ray_tune.report(_metrics(row), checkpoint=checkpoint)


class StreamTrial(ray_tune.Trainable):
    """Trainable fed by a generator of per-epoch rows (a trial running elsewhere, e.g. in Modal).

    A class rather than a function trainable because Tune calls `cleanup()` synchronously when ASHA
    stops the trial: closing the generator there lets the remote side stop its container. (In a
    function trainable the stop arrives as SystemExit in a daemon thread that Ray tears down ~50 ms
    later, too soon for a network call.) Its actors are not reused: Tune parks a stopped trial's actor
    for reuse without calling cleanup(), which would leave the remote container running.
    """

    def setup(self, config: dict, *, sweep: Sweep, stream: Callable[..., Iterator[dict]]):
        # the complete config as flat overrides (validated by the driver's check_space and again remotely;
        # no make_config here, which would import torch into this waiting actor)
        overrides = {**flat_dict(sweep.base), **parse_space(sweep.space).overrides(config),
                     "name": f"{sweep.name}-{self.trial_id}", "resume": "auto"}
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


def _trial_dirname(trial) -> str:
    return trial.trial_id


def max_epochs(sweep: Sweep) -> int:
    dist = parse_space(sweep.space).params.get("epochs")
    return int(max(dist.probes())) if dist is not None else int(sweep.base["epochs"])


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
    point = base_point(parse_space(sweep.space), sweep.base)
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
        param_space=parse_space(sweep.space).to_ray(),
        tune_config=ray_tune.TuneConfig(
            metric=METRIC, mode="max", num_samples=num_samples, scheduler=sched, search_alg=search_alg,
            max_concurrent_trials=(max_concurrent or None) if search == "optuna" else None,
            trial_dirname_creator=_trial_dirname,
            reuse_actors=reuse_actors,
        ),
        run_config=ray_tune.RunConfig(
            name=sweep.name, storage_path=sweep.storage,
            failure_config=ray_tune.FailureConfig(max_failures=0),  # an errored trial stays errored; others go on
            checkpoint_config=ray_tune.CheckpointConfig(num_to_keep=1),
            callbacks=[JsonLoggerCallback(), CSVLoggerCallback()],  # not Ray's own TensorBoard files: see run_sweep
            verbose=1,
        ),
    )


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
    trainable = (backend or BACKENDS[sweep.backend])(sweep)
    resources = {"cpu": cpus_per_trial, "gpu": gpus_per_trial}
    # a local trial reuses its predecessor's worker (no new process, no second torch import)
    reuse_actors = not (isinstance(trainable, type) and issubclass(trainable, StreamTrial))
    t0 = time.perf_counter()
    if resume:
        tuner = ray_tune.Tuner.restore(str(sweep.dir), ray_tune.with_resources(trainable, resources),
                                       resume_unfinished=True, resume_errored=False, restart_errored=False)
    else:
        sweep.save()
        tuner = make_tuner(sweep, trainable, num_samples=num_samples, scheduler=scheduler, search=search,
                           max_concurrent=max_concurrent, resources=resources, reuse_actors=reuse_actors)
    t_store = time.time()
    if sweep.backend == "local":
        prefeaturise(sweep)
    grid = tuner.fit()
    wall = time.perf_counter() - t0
    rows = trial_table(grid, sweep)
    summary = {"sweep": str(sweep.dir), "wall_time_s": wall, "resumed": resume, "trials": rows,
               "feature_store": store_counts(sweep, since=t_store)}
    (sweep.dir / "trials.json").write_text(json.dumps(summary, indent=1, default=str))
    best = next((r for r in rows if r["status"] != "error"), None)
    if best is not None:
        write_best_yaml(sweep, best, sweep.dir / "best.yaml")
    return rows


def prefeaturise(sweep: Sweep) -> None:
    """Featurise the sweep's data once into the store every local trial shares (runs/feature_store),
    before trials start in parallel: N trials then featurise once, not N times."""
    from trainer.config import make_config
    from trainer.store import featurised_splits

    cfg = make_config(base={**sweep.base, "output_dir": str(sweep.runs_dir)})
    featurised_splits(cfg, names=cfg.feature_names(),
                      params={"pca_components": cfg.pca_components, "temporal_windows": list(cfg.temporal_windows)})


def store_counts(sweep: Sweep, *, since: float) -> dict:
    """Videos featurised (misses) and reused (hits) in the shared feature store since `since`."""
    from trainer.config import make_config
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


def trial_table(grid, sweep: Sweep) -> list[dict]:
    """One dict per trial (status, epochs, best val macro F1, sampled values), best first, errors last."""
    space = parse_space(sweep.space)
    epochs = max_epochs(sweep)
    point = base_point(space, sweep.base)
    rows = []
    for result in grid:
        m = result.metrics or {}
        status = "error" if result.error is not None else ("stopped" if m.get("epoch", 0) < epochs else "done")
        rows.append({
            "trial": Path(result.path).name,
            "status": status,
            "epochs": m.get("epoch", 0),
            "val_macro_f1": m.get(METRIC),
            "time_s": m.get("time_total_s"),
            "train_time_s": m.get("train_time_s"),
            "params": space.overrides(result.config) if result.config else {},
            "base_config": point is not None and result.config == point,
            "run_dir": str(sweep.runs_dir / Path(result.path).name),
            "error": error_line(result.error),
        })
    rows.sort(key=lambda r: (r["status"] == "error", -(r["val_macro_f1"] if r["val_macro_f1"] is not None else -1)))
    return rows


def write_best_yaml(sweep: Sweep, best: dict, path: Path) -> None:
    """Complete config of the best trial, runnable as is (fresh run name, default output dir)."""
    cfg = make_config(None, {**best["params"], "name": "", "output_dir": "runs", "resume": ""}, base=sweep.base)
    header = (f"# python trainer/run.py --config {path}\n"
              f"# best trial {best['trial']} of sweep {sweep.dir}: val macro F1 {best['val_macro_f1']:.4f} "
              f"({best['status']} after {best['epochs']} epochs)\n"
              f"# sampled: {json.dumps(best['params'])}\n")
    path.write_text(header + config_to_yaml(cfg))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, list):
        return "[" + ",".join(_fmt(x) for x in v) + "]"
    return str(v)


def format_table(rows: list[dict]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r["params"]))
    head = ["trial", "status", "epochs", "val_macro_f1", *keys, "time_s"]
    body = [[r["trial"], r["status"], str(r["epochs"]),
             "-" if r["val_macro_f1"] is None else f"{r['val_macro_f1']:.4f}",
             *[_fmt(r["params"].get(k, "")) for k in keys],
             "-" if r["time_s"] is None else f"{r['time_s']:.0f}"] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]
    lines += [f"  {r['trial']}: {r['error']}" for r in rows if r["error"]]
    base = next((r for r in rows if r.get("base_config")), None)
    if base is not None and base["val_macro_f1"] is not None and rows[0]["val_macro_f1"] is not None:
        lines.append(f"base config = trial {base['trial']} ({base['val_macro_f1']:.4f}); best - base = "
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
    if (Path(storage) / name / "sweep.json").exists():
        raise ConfigError(f"sweep '{name}' already exists in {storage}; pass --resume to continue it "
                          "or choose another --name")
    check_space(parse_space(space_raw, where=f"search space {args.space}"), base, search=args.search,
                where=f"search space {args.space}")
    return Sweep(name=name, storage=storage, base=base, space=space_raw, space_path=str(args.space),
                 backend=args.backend, gpu=args.gpu or base["modal_gpu"])


def find_sweep(storage: str, name: str | None) -> Sweep:
    root = Path(storage).resolve()
    if name is None:
        found = sorted(root.glob("*/sweep.json"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise ConfigError(f"--resume: no sweep in {root}; pass --storage/--name of the sweep to continue")
        return Sweep.load(found[-1].parent)
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
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], logging_level=logging.WARNING)
    else:
        ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)


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
    rows = run_sweep(sweep, resume=args.resume, num_samples=opts["num_samples"], scheduler=opts["scheduler"],
                     search=opts["search"], max_concurrent=opts["max_concurrent"],
                     cpus_per_trial=opts["cpus_per_trial"], gpus_per_trial=gpus)
    print(format_table(rows))
    print(f"\nbest config:  python trainer/run.py --config {sweep.dir / 'best.yaml'}"
          if (sweep.dir / "best.yaml").is_file() else "\nno trial finished without error: no best.yaml")
    print(f"TensorBoard:  tensorboard --logdir {sweep.runs_dir}   (HParams tab compares trials)")
    return 0 if any(r["status"] != "error" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
