"""tune.py: real Ray Tune sweeps of tiny configs on the CPU, search spaces, resume after a killed driver."""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ray = pytest.importorskip("ray")

from conftest import TINY_TRIAL  # noqa: E402

import tune  # noqa: E402  (after the skip: tune.py imports ray)
from trainer import search_space  # noqa: E402
from trainer.config import ConfigError, make_config  # noqa: E402
from trainer.run import main as run_main  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TINY = {**TINY_TRIAL, "log_every": 1}  # check the loss every step: a non-finite one fails at once
TINY_ARGS = [f"{k}={json.dumps(v)}" for k, v in TINY.items()]


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


def _sweep(tmp: Path, name: str, space: dict, **base) -> tune.Sweep:
    cfg = make_config(None, {**TINY, **base})
    sweep = tune.Sweep(name=name, storage=str(tmp), base=cfg.to_dict(), space=space)
    search_space.check_space(sweep.parsed_space, cfg.to_dict())
    return sweep


def _epochs(run_dir: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------- search spaces in Ray
# (the language itself: tests/test_search_space.py, without Ray)


def test_every_kind_of_distribution_has_a_ray_domain():
    assert set(tune.RAY_DOMAINS) == set(search_space.KINDS)


@pytest.mark.parametrize("path", sorted((ROOT / "search_spaces").glob("*.yaml")), ids=lambda p: p.name)
def test_a_sample_of_every_search_space_is_a_valid_config(path):
    from ray.tune.search.variant_generator import generate_variants

    space = search_space.load_space(path)
    for _, params in generate_variants(tune.ray_param_space(space)):
        make_config(None, space.overrides(params))


def test_cli_rejects_an_unknown_key_without_starting_ray(tmp_path, caplog):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lerning_rate: {loguniform: [1.0e-4, 1.0e-2]}\n")
    ray_was_up = ray.is_initialized()
    assert tune.main(["--space", str(bad), "--storage", str(tmp_path / "sweeps")]) == 2
    assert "did you mean 'learning_rate'" in caplog.text
    assert not (tmp_path / "sweeps").exists() and ray.is_initialized() == ray_was_up


def test_user_errors_survive_the_trip_from_a_trial_worker():
    import pickle

    from trainer.data.recording import DataError
    from trainer.engine import NonFiniteLossError

    for e in (NonFiniteLossError(3, 7, float("nan")), ConfigError("config key 'x'"), DataError("bad file")):
        assert str(pickle.loads(pickle.dumps(e))) == str(e)


# ---------------------------------------------------------------------------- real sweeps


@pytest.fixture(scope="module")
def sweep_result(ray_cluster, tmp_path_factory):
    """One sequential ASHA sweep: a good trial, one that can only predict background (ASHA stops it at
    the first rung) and one whose loss overflows (errored); in that order, so ASHA is deterministic."""
    space = {"class_weights": {"grid": [[1, 5, 5, 5], [1, 0, 0, 0], [1, 1e38, 1e38, 1e38]]}}
    sweep = _sweep(tmp_path_factory.mktemp("sweeps"), "asha", space)
    rows = tune.run_sweep(sweep, num_samples=1, scheduler="asha", max_concurrent=1, cpus_per_trial=1)
    return sweep, {json.dumps(r["params"]["class_weights"]): r for r in rows}, rows


@pytest.mark.slow  # the module's ASHA sweep of three tiny trials: ~25 s
def test_asha_stops_the_weak_trial_and_a_failing_trial_does_not_stop_the_sweep(sweep_result):
    sweep, by_weights, rows = sweep_result
    good, weak, bad = (by_weights[k] for k in ("[1, 5, 5, 5]", "[1, 0, 0, 0]", "[1, 1e+38, 1e+38, 1e+38]"))
    assert good["status"] == "done" and good["epochs"] == TINY["epochs"] and good["val_macro_f1"] > 0
    assert weak["status"] == "stopped" and weak["epochs"] == 1, weak  # first rung: epochs // 4 = 1
    assert _epochs(Path(weak["run_dir"])) == [1]  # its training really stopped there
    assert bad["status"] == "error" and bad["error"].startswith("NonFiniteLossError: training loss became")
    assert [r["status"] for r in rows] == ["done", "stopped", "error"]  # sorted by val macro F1, errors last
    summary = json.loads((sweep.dir / "trials.json").read_text())
    assert len(summary["trials"]) == 3 and summary["wall_time_s"] > 0


@pytest.mark.slow  # the module's ASHA sweep of three tiny trials: ~25 s
def test_trials_share_one_feature_store_and_the_sweep_featurises_once(sweep_result):
    sweep, _, rows = sweep_result
    counts = json.loads((sweep.dir / "trials.json").read_text())["feature_store"]
    videos = sweep.base["data"]["synthetic"]["num_videos"]
    assert counts["misses"] == videos  # once, before the trials
    assert counts["hits"] >= len(rows) * videos


@pytest.mark.slow  # the module's ASHA sweep of three tiny trials: ~25 s
def test_trials_share_one_tensorboard_dir_with_hparams(sweep_result):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    sweep, by_weights, rows = sweep_result
    runs = sorted(p for p in sweep.runs_dir.iterdir() if (p / "metrics.jsonl").is_file())
    assert len(runs) == 2  # the errored trial failed before its first epoch
    # run names: the trial's number and its swept values, no '/tb'
    assert [p.name for p in runs] == ["trial_000-class_weights_1_5_5_5", "trial_001-class_weights_1_0_0_0"]
    for run in runs:
        ea = EventAccumulator(str(run))
        ea.Reload()
        assert "0_val/best_macro_f1" in ea.Tags()["scalars"]
        content = ea.PluginTagToContent("hparams")
        start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
        assert set(start.session_start_info.hparams) == {f"class_weights_{i}" for i in range(4)}  # the swept key
        exp = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
        assert exp.experiment.metric_infos[0].name.tag == "0_val/best_macro_f1"
        # HParams and the sweep table agree: both show the best epoch so far
        best = ea.Scalars("0_val/best_macro_f1")[-1].value
        row = next(r for r in rows if r["run_dir"] == str(run))
        assert abs(best - row["val_macro_f1"]) < 1e-6
    # the weights are stored once, in the trial's run directory; Tune's checkpoints only point there
    assert not [p for p in sweep.dir.rglob("model.safetensors") if sweep.runs_dir not in p.parents]
    good = Path(by_weights["[1, 5, 5, 5]"]["run_dir"])
    pointers = list((sweep.dir / good.name).glob("checkpoint_*/trainer_checkpoint.json"))
    assert pointers and all(Path(json.loads(p.read_text())["path"]).is_dir() for p in pointers)
    assert (good / "checkpoints" / "best" / "model.safetensors").is_file()


@pytest.mark.slow  # the module's ASHA sweep of three tiny trials: ~25 s
def test_best_yaml_is_a_complete_config_that_reproduces_the_best_trial(sweep_result, tmp_path):
    sweep, by_weights, rows = sweep_result
    best_yaml = sweep.dir / "best.yaml"
    text = best_yaml.read_text()
    assert text.startswith(f"# python trainer/run.py --config {best_yaml}")
    cfg = make_config(best_yaml)
    assert cfg.class_weights == [1, 5, 5, 5] and cfg.name == "" and cfg.output_dir == "runs"
    assert set(yaml.safe_load(text)) == set(make_config().to_dict())  # every key, not just differences
    assert run_main(["--config", str(best_yaml), f"output_dir={tmp_path}", "name=again"]) == 0
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert abs(again["val_macro_f1"] - rows[0]["val_macro_f1"]) < 0.02


def _closing_stream(overrides: dict, *, gpu: str, marks: str):
    """Stand-in for modal_cluster.stream_trial: val macro F1 = learning_rate * epoch; marks how it ended."""
    lr, name = overrides["learning_rate"], overrides["name"]
    try:
        for epoch in range(1, overrides["epochs"] + 1):
            time.sleep(0.05)
            yield {"epoch": epoch, "val_macro_f1": lr * epoch, "best_val_macro_f1": lr * epoch,
                   "checkpoint": f"/remote/{name}/checkpoints/last", "gpu": gpu}
    except GeneratorExit:
        time.sleep(0.5)  # a network call to stop the container: must not be cut short by Ray
        Path(marks, f"{lr}.closed").write_text(name)
        raise
    Path(marks, f"{lr}.finished").write_text(name)


@pytest.mark.slow  # starts Ray and runs a two-trial sweep
def test_stream_backend_closes_the_stream_of_a_trial_asha_stops(ray_cluster, tmp_path):
    space = {"learning_rate": {"grid": [0.08, 0.01]}}
    sweep = _sweep(tmp_path, "stream", space, epochs=8)
    sweep.gpu = "T4"
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import tests/
    backend = tune.stream_backend(functools.partial(_closing_stream, marks=str(tmp_path)))
    rows = tune.run_sweep(sweep, backend=backend, num_samples=1, max_concurrent=1, cpus_per_trial=0.5)
    status = {r["params"]["learning_rate"]: r["status"] for r in rows}
    # ASHA rungs at epochs 2, 4, 8: at epoch 2, 0.01 is below the trial before it
    assert status == {0.08: "done", 0.01: "stopped"}, status
    for lr, st in status.items():
        assert (tmp_path / f"{lr}.{'finished' if st == 'done' else 'closed'}").is_file(), lr
    assert rows[0]["val_macro_f1"] == pytest.approx(0.64) and rows[1]["epochs"] == 2


@pytest.mark.slow  # a sweep of three 8-epoch trials, killed and resumed
def test_resume_after_the_driver_is_killed_redoes_no_finished_work(ray_cluster, tmp_path):
    space = tmp_path / "lr.yaml"
    space.write_text("learning_rate: {grid: [0.002, 0.003, 0.004]}   # three trials, run one at a time\n")
    args = ["--space", str(space), "--num-samples", "1", "--max-concurrent", "1", "--scheduler", "none",
            "--storage", str(tmp_path), "--name", "r", *TINY_ARGS, "epochs=8"]
    env = dict(os.environ, RAY_ADDRESS=ray.get_runtime_context().gcs_address)
    driver = subprocess.Popen([sys.executable, str(ROOT / "tune.py"), *args], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = tmp_path / "r" / "runs"

    def started() -> list[Path]:
        return sorted((p for p in runs.glob("*") if (p / "metrics.jsonl").is_file()), key=lambda p: p.name)

    try:  # kill the driver while the second trial is half-way
        deadline = time.time() + 120
        while not (len(started()) >= 2 and len(_epochs(started()[1])) >= 2):
            assert driver.poll() is None and time.time() < deadline, "sweep did not get to its second trial"
            time.sleep(0.1)
        os.kill(driver.pid, signal.SIGKILL)
    finally:
        driver.kill()
        driver.wait()
    first, second = started()[:2]
    assert len(_epochs(first)) == 8 and len(_epochs(second)) < 8
    first_done = (first / "metrics.json").stat().st_mtime_ns
    deadline = time.time() + 30  # the killed driver's trial actor goes away with it
    while ray.available_resources().get("CPU", 0) < 2:
        assert time.time() < deadline
        time.sleep(0.2)

    assert tune.main(["--storage", str(tmp_path), "--name", "r", "--resume"]) == 0
    rows = json.loads((tmp_path / "r" / "trials.json").read_text())["trials"]
    assert [r["status"] for r in rows] == ["done"] * 3
    for run in (p for p in runs.iterdir() if p.name != "feature_store"):  # the shared store sits next to trial runs
        assert _epochs(run) == list(range(1, 9)), run.name  # every epoch trained exactly once
    assert (first / "metrics.json").stat().st_mtime_ns == first_done  # the finished trial did not run again
    assert len((second / "command.txt").read_text().splitlines()) == 2  # started, then resumed
    assert (tmp_path / "r" / "best.yaml").is_file()


@pytest.mark.slow
def test_smoke_test_console_ends_with_the_summary(tmp_path):
    """tune.py --smoke-test as a user sees it: a line per trial, then the table, nothing wide or late."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, "tune.py", "--smoke-test", "--storage", str(tmp_path)], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    lines = out.stdout.rstrip().splitlines()
    assert out.returncode == 0, out.stdout[-3000:]
    width = max(len(line.replace(str(tmp_path), "runs/sweeps")) for line in lines)  # paths are the user's
    assert len(lines) <= 20 and width <= 160, out.stdout
    for noise in ("Checkpoint successfully created", "Token authentication", "pid=", "╭", "Trial status"):
        assert noise not in out.stdout, noise
    assert sum(bool(re.match(r"trial \d+ ended after \d+ epoch", line)) for line in lines) == 2
    header = next(i for i, line in enumerate(lines) if line.startswith("trial ") and "val_macro_f1" in line)
    assert lines[-2].startswith("best config:  python trainer/run.py --config ")
    assert lines[-1].startswith("TensorBoard:  tensorboard --logdir ")
    assert not any(re.match(r"trial \d+ ended", line) for line in lines[header:])  # nothing arrives late


def test_resume_puts_back_pointer_checkpoints_tune_deleted_before_saving_its_state(tmp_path):
    """ray-project/ray#27790: a killed driver can leave a state naming a deleted checkpoint."""
    from types import SimpleNamespace

    trial = tmp_path / "trial_001-learning_rate_0.003"
    (trial / "checkpoint_000002").mkdir(parents=True)
    (trial / "checkpoint_000002" / "trainer_checkpoint.json").write_text('{"path": "x"}')
    (tmp_path / "trial_000-learning_rate_0.002").mkdir()  # no checkpoint at all: left alone
    assert tune.restore_pointer_checkpoints(SimpleNamespace(dir=tmp_path)) == 2
    for i in (0, 1):
        assert (trial / f"checkpoint_00000{i}" / "trainer_checkpoint.json").read_text() == '{"path": "x"}'
    assert tune.restore_pointer_checkpoints(SimpleNamespace(dir=tmp_path)) == 0
    assert list((tmp_path / "trial_000-learning_rate_0.002").iterdir()) == []
