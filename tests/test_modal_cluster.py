"""modal_cluster.py offline: these machines cannot reach Modal and have no token.

What runs for real: the function bodies (`.local()`), the local entrypoint, stream_trial, the
TensorBoard server and the error paths, with MABE_MODAL_LOCAL pointing at a temporary
directory that stands in for the volume. What cannot run here: containers, the image build,
volume commits (replaced by a recorder where a test needs to see them) and GPUs.
"""

from __future__ import annotations

import configparser
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

import modal_cluster
from trainer import checkpoint as ckpt_io
from trainer.config import ConfigError, make_config

ROOT = Path(__file__).resolve().parent.parent
V3 = str(ROOT / "configs" / "v3_transformer_t4.yaml")
V4 = str(ROOT / "configs" / "v4_conv_bilstm_a10g.yaml")
TINY = {
    "epochs": 2,
    "data.synthetic.num_videos": 4,
    "data.synthetic.frames_per_video": 600,
    "conv_channels": [16],
    "lstm_hidden": 16,
    "batch_size": 16,
}
TINY_ARGS = [f"{k}={json.dumps(v)}" for k, v in TINY.items()] + ["lstm_layers=1", "num_workers=0"]

pytestmark = pytest.mark.filterwarnings("ignore:.*executing locally:UserWarning")


@pytest.fixture
def vol(tmp_path, monkeypatch) -> Path:
    """A directory standing in for the mabe-data volume; functions run in-process."""
    root = tmp_path / "vol"
    root.mkdir()
    monkeypatch.setenv(modal_cluster.LOCAL_ENV, str(root))
    return root


def epochs_logged(run_dir: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def clean_env(home: Path) -> dict:
    """This environment without any Modal credentials or stand-in volume."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "MABE_"))}
    env.update(HOME=str(home), MODAL_CONFIG_PATH=str(home / "absent.toml"))
    return env


# ----------------------------------------------------------------------------- declaration


def test_import_needs_no_credentials(tmp_path):
    code = ("import sys, modal, modal_cluster as m\n"
            "print(m.app.name, m.VOLUME_NAME, 'torch' in sys.modules)\n"
            "print(sorted(n for n in dir(m) if isinstance(getattr(m, n), modal.Function)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean_env(tmp_path),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "mabe-trainer mabe-data False",  # light enough for Ray's per-trial processes
        "['bench', 'featurize', 'featurize_videos', 'list_runs', 'run_bench', 'tensorboard', 'train', 'train_trial']",
    ]


def test_function_settings_follow_the_config():
    plan = modal_cluster.plan_run(["--config", V4])
    assert (plan.gpu, plan.timeout) == ("A10G", 14400)  # the seed's modal_gpu / modal_timeout
    info = modal_cluster.configured(modal_cluster.train, gpu=plan.gpu, timeout=plan.timeout).info()
    assert info.gpus == [("A10G", 1)] and info.timeout == 14400
    assert info.volumes["/vol"].name == "mabe-data" and info.max_retries == 3

    plan = modal_cluster.plan_run(["--config", V4, "--gpu", "t4", "--timeout", "3600", "epochs=3"])
    assert (plan.gpu, plan.timeout, plan.config.epochs) == ("T4", 3600, 3)
    assert (plan.config.modal_gpu, plan.config.modal_timeout) == ("T4", 3600)  # recorded in config.yaml
    info = modal_cluster.configured(modal_cluster.train, gpu=plan.gpu, timeout=plan.timeout).info()
    assert info.gpus == [("T4", 1)] and info.timeout == 3600

    plan = modal_cluster.plan_run(["--config", V3, "modal_gpu=H100", "modal_timeout=7200"])
    assert (plan.gpu, plan.timeout) == ("H100", 7200)
    assert plan.config.name.startswith("transformer-")  # fixed before launch, so retries resume it

    trial = modal_cluster.configured(modal_cluster.train_trial, gpu="L4", timeout=900).info()
    assert trial.gpus == [("L4", 1)] and trial.timeout == 900 and trial.volumes["/vol"].name == "mabe-data"
    assert modal_cluster.configured(modal_cluster.run_bench, gpu="A100", timeout=3600).info().gpus == [("A100", 1)]
    tb = modal_cluster.tensorboard.info()
    assert tb.web_info is not None and tb.gpus == [] and tb.volumes["/vol"].name == "mabe-data"
    assert modal_cluster.list_runs.info().volumes["/vol"].name == "mabe-data"
    orchestrator = modal_cluster.bench.info()  # waits for the run_bench GPU containers on a CPU
    assert orchestrator.gpus == [] and orchestrator.volumes["/vol"].name == "mabe-data"


def test_bad_gpu_timeout_and_cloud_keys_are_one_line_errors():
    with pytest.raises(ConfigError) as e:
        modal_cluster.plan_run(["--config", V4, "--gpu", "A10X"])
    msg = str(e.value)
    assert "\n" not in msg and "unknown Modal GPU 'A10X'" in msg and "did you mean A10" in msg
    assert all(g in msg for g in modal_cluster.GPUS)
    with pytest.raises(ConfigError, match="config key 'modal_gpu': unknown Modal GPU 'V100'"):
        modal_cluster.plan_run(["modal_gpu=V100"])
    with pytest.raises(ConfigError, match="one GPU per container"):
        modal_cluster.plan_run(["--gpu", "A100:2"])
    with pytest.raises(ConfigError, match=r"--timeout: timeout must be whole seconds in \[60, 86400\]"):
        modal_cluster.plan_run(["--timeout", "100000"])
    with pytest.raises(ConfigError, match="goes before the file: modal run --detach modal_cluster.py"):
        modal_cluster.plan_run(["--config", V4, "--detach"])
    with pytest.raises(ConfigError, match="device=cpu in a GPU container"):
        modal_cluster.plan_run(["device=cpu"])
    with pytest.raises(ConfigError, match="rerun with name=<run name>"):
        modal_cluster.plan_run(["resume=runs/old"])
    with pytest.raises(ConfigError, match="outside the volume"):
        modal_cluster.plan_run(["output_dir=/home/me/runs"])
    with pytest.raises(ConfigError, match="unknown Modal GPU 'K80'"):
        modal_cluster.stream_trial(TINY, gpu="K80")
    with pytest.raises(ConfigError, match="unknown config key 'epoch'; did you mean 'epochs'"):
        modal_cluster.stream_trial({"epoch": 2}, gpu="T4")  # checked before any container starts
    with pytest.raises(ConfigError, match="config key 'modal_timeout': timeout must be whole seconds"):
        modal_cluster.stream_trial(dict(TINY, modal_timeout=30), gpu="T4")


def test_entrypoint_reports_bad_input_as_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        modal_cluster.main("--config", V4, "--gpu", "A10X")
    assert str(e.value).startswith("error: --gpu: unknown Modal GPU 'A10X'") and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="--gpus: unknown Modal GPU 'P100'"):
        modal_cluster.bench.local(gpus="T4,P100")


def test_modal_run_finds_each_command():
    """What `modal run modal_cluster.py[::name]` resolves to, by Modal's own CLI lookup."""
    from modal.cli.import_refs import import_and_filter, parse_import_ref

    def resolved(ref: str) -> tuple[str, str]:
        found, commands, _ = import_and_filter(parse_import_ref(f"{ROOT / 'modal_cluster.py'}{ref}", command="run"),
                                               base_cmd="modal run")
        assert found is not None, f"modal run modal_cluster.py{ref} is ambiguous"
        names = next(c.names for c in commands if c.runnable is found)
        return names[0], type(found).__name__

    assert resolved("") == ("main", "LocalEntrypoint")  # the bare command trains
    assert resolved("::bench") == ("bench", "Function")
    assert resolved("::list_runs") == ("list_runs", "Function")


def test_container_config_puts_paths_fp16_and_name_on_the_volume(vol):
    plan = modal_cluster.plan_run(["--config", V4, "--gpu", "A10G", "mixed_precision=fp16", "name=seed-v4",
                                   "data.path=data/calms21_task1_train.json", "train_data_dir=/data/abs"])
    cfg = modal_cluster.container_config(plan.config.to_dict(), plan.config.name)
    assert cfg.mixed_precision == "fp16" and cfg.device == "auto"  # fp16 reaches the GPU container as asked
    assert cfg.data.path == str(vol / "data" / "calms21_task1_train.json")  # relative = on the volume
    assert cfg.train_data_dir == "/data/abs"  # absolute paths are left alone
    assert (cfg.output_dir, cfg.name, cfg.resume) == (str(vol / "runs"), "seed-v4", "auto")
    assert (cfg.conv_channels, cfg.batch_size) == ([64, 128, 256], 64)  # the rest of the seed config is intact


def test_outside_modal_a_function_needs_a_stand_in_volume(monkeypatch):
    monkeypatch.delenv(modal_cluster.LOCAL_ENV, raising=False)
    assert "set MABE_MODAL_LOCAL=<dir> to stand in for the volume" in modal_cluster.train.local(dict(TINY), "x", {})["error"]
    with pytest.raises(ConfigError, match="set MABE_MODAL_LOCAL=<dir>"):
        next(modal_cluster.train_trial.local(dict(TINY), "x", {}))


def test_image_pins_satisfy_setup_cfg():
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    needed = [Requirement(line) for line in parser["options"]["install_requires"].split("\n") if line.strip()]
    pins = {Requirement(p).name.lower(): next(iter(Requirement(p).specifier)).version for p in modal_cluster.PINNED}
    assert all(next(iter(Requirement(p).specifier)).operator == "==" for p in modal_cluster.PINNED)
    for req in needed:
        assert req.name.lower() in pins, f"{req.name} is a dependency but not installed in the Modal image"
        assert req.specifier.contains(pins[req.name.lower()]), f"image pin {req.name}=={pins[req.name.lower()]} vs {req}"


def test_no_token_is_one_line(tmp_path):
    code = "\n".join([
        "import modal_cluster as m",
        "import sys",
        "for call in (lambda: m.stream_trial({'epochs': 1}, gpu='T4'), m.require_token):",
        "    try:",
        "        call()",
        "    except m.ModalSetupError as e:",
        "        print(e)",
        "print('torch' in sys.modules)",  # a trial's waiting Ray process stays light
    ])
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean_env(tmp_path),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["no Modal token: run `modal token new`"] * 2 + ["False"]


# ----------------------------------------------------------------------------- training in-process


class Preempted(Exception):
    """The container disappears right after the volume commit of epoch 1."""


def test_train_commits_every_checkpoint_and_a_rerun_resumes(vol, monkeypatch):
    commits = []

    def commit(checkpoint):  # stands in for volume.commit(): Modal is unreachable from here
        commits.append(ckpt_io.read_state(ckpt_io.resolve(checkpoint))["epoch"])  # complete when committed
        if len(commits) == 1:
            raise Preempted

    monkeypatch.setattr(modal_cluster, "commit_volume", commit)
    config = make_config(None, TINY).to_dict()  # what the entrypoint sends: the resolved config
    with pytest.raises(Preempted):
        modal_cluster.train.local(config, "run-a", {"git_sha": "abc"})
    run = vol / "runs" / "run-a"
    assert epochs_logged(run) == [1] and commits == [1]

    final = modal_cluster.train.local(config, "run-a", {"git_sha": "abc"})  # Modal's retry: same arguments
    assert commits == [1, 2]  # epoch 1 was not trained again
    assert epochs_logged(run) == [1, 2] and final["epochs_run"] == 2 and final["run_dir"] == str(run)
    attempts = [json.loads(line) for line in (run / "modal_attempts.jsonl").read_text().splitlines()]
    assert [a["resumed_from_epoch"] for a in attempts] == [0, 1] and attempts[0]["git_sha"] == "abc"
    assert yaml.safe_load((run / "config.yaml").read_text())["output_dir"] == str(vol / "runs")

    again = modal_cluster.train.local(config, "run-a", {})  # rerunning a finished run trains nothing
    assert commits == [1, 2] and epochs_logged(run) == [1, 2] and again["best_epoch"] == final["best_epoch"]

    runs = modal_cluster.list_runs.local()
    assert runs == [{"run": "runs/run-a", "epochs": 2, "best_val_macro_f1": final["val_macro_f1"],
                     "finished": True, "checkpoints": ["best", "last"]}]

    bad = modal_cluster.train.local(dict(TINY, num_classes=7), "run-b", {})  # a user error is returned,
    assert "num_classes" in bad["error"]  # not raised: Modal would retry an exception 3 times


def test_list_runs_reads_each_runs_own_checkpoint_dir(vol):
    """A run trained with checkpoint_dir=ckpts lists its checkpoints (the layout is trainer.rundir's)."""
    run = vol / "runs" / "run-c"
    (run / "ckpts" / "last").mkdir(parents=True)
    (run / "ckpts" / "epoch_0002").mkdir()
    (run / "checkpoints").mkdir()  # not this run's checkpoint directory: ignored
    (run / "config.yaml").write_text("checkpoint_dir: ckpts\n")
    (run / "metrics.jsonl").write_text(json.dumps({"epoch": 2, "val_macro_f1": 0.5}) + "\n")
    assert modal_cluster.list_runs.local() == [{"run": "runs/run-c", "epochs": 2, "best_val_macro_f1": 0.5,
                                                "finished": False, "checkpoints": ["epoch_0002", "last"]}]


def test_entrypoint_trains_in_process(vol, capsys):
    modal_cluster.main("--config", V4, "--gpu", "T4", *TINY_ARGS, "name=cli-run")
    out = capsys.readouterr().out
    assert "run cli-run: conv_bilstm, 2 epochs on T4 (timeout 14400 s, precision no) -> mabe-data:runs/cli-run" in out
    assert "best val macro F1" in out and "modal volume get mabe-data runs/cli-run runs/" in out
    saved = yaml.safe_load((vol / "runs" / "cli-run" / "config.yaml").read_text())
    assert (saved["modal_gpu"], saved["class_weights"], saved["epochs"]) == ("T4", [0.5, 10.0, 15.0, 15.0], 2)
    assert ckpt_io.resolve(vol / "runs" / "cli-run") is not None


@pytest.mark.slow  # a training run
def test_train_trial_streams_epochs_and_closing_stops_training(vol):
    rows = list(modal_cluster.train_trial.local(dict(TINY), "trial-full", {}))
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"train_loss", "val_loss", "val_macro_f1", "best_val_macro_f1", "checkpoint"} <= set(rows[0])
    assert rows[-1]["checkpoint"] == str(vol / "runs" / "trial-full" / "checkpoints" / "last")

    stream = modal_cluster.stream_trial(dict(TINY, epochs=5, name="trial-stopped"), gpu="a10g")
    first = next(stream)
    stream.close()  # what ASHA stopping the trial does
    run = vol / "runs" / "trial-stopped"
    assert first["epoch"] == 1 and epochs_logged(run) == [1]
    assert ckpt_io.read_state(ckpt_io.resolve(run))["epoch"] == 1
    assert not [t for t in threading.enumerate() if t.name.startswith("train-trial-")]


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_fp16_request_trains_in_fp16_on_a_gpu(vol):
    final = modal_cluster.train.local(make_config(None, dict(TINY, mixed_precision="fp16")).to_dict(), "fp16", {})
    assert final["precision_used"] == "fp16"


# ----------------------------------------------------------------------------- tensorboard


def test_sync_event_files_appends_only_the_new_tail(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    f = src / "a" / "tb" / "events.out.tfevents.1.host"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"first")
    (src / "a" / "metrics.jsonl").write_text("{}")
    assert modal_cluster.sync_event_files(src, dst) == 1
    mirror = dst / "a" / "tb" / "events.out.tfevents.1.host"
    inode = mirror.stat().st_ino
    with open(f, "ab") as out:
        out.write(b"+second")
    assert modal_cluster.sync_event_files(src, dst) == 1 and modal_cluster.sync_event_files(src, dst) == 0
    assert mirror.read_bytes() == b"first+second" and mirror.stat().st_ino == inode  # appended in place
    assert not (dst / "a" / "metrics.jsonl").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _runs_served(port: int, want: set[str], wait_s: float = 60.0) -> set[str]:
    deadline, seen = time.monotonic() + wait_s, set()
    while time.monotonic() < deadline and not want <= seen:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=2) as r:
                seen = set(json.load(r))
        except OSError:
            pass
        time.sleep(0.2)
    return seen


@pytest.mark.slow  # a TensorBoard server
def test_tensorboard_serves_the_volume_runs_and_picks_up_new_ones(vol, monkeypatch):
    from torch.utils.tensorboard import SummaryWriter

    def write_run(name: str) -> None:
        with SummaryWriter(str(vol / "runs" / name / "tb")) as w:
            w.add_scalar("val/macro_f1", 0.5, 1)

    write_run("first")
    port = _free_port()
    monkeypatch.setattr(modal_cluster, "TB_PORT", port)
    monkeypatch.setattr(modal_cluster, "TB_REFRESH_S", 0.2)
    monkeypatch.setattr(modal_cluster, "TB_RELOAD_S", 1)
    modal_cluster.tensorboard.local()
    proc = modal_cluster.tensorboard_proc
    try:
        assert _runs_served(port, {"first/tb"}) == {"first/tb"}
        write_run("second")  # a run committed while TensorBoard is up
        assert _runs_served(port, {"first/tb", "second/tb"}) == {"first/tb", "second/tb"}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ----------------------------------------------------------------------------- the other engineers' entry points

BENCH_ARGS = ("--suite model --models conv_bilstm --batch-sizes 8 --seq-len 16 --windows 1 --warmup 1 "
              "--min-window-s 0.05 --model-size default")


def test_bench_runs_the_harness_and_appends_its_records(vol):
    results = json.loads(modal_cluster.bench.local(gpus="t4", args=BENCH_ARGS))
    records = results["T4"]
    assert "model" in {r["suite"] for r in records} and all("--no-save" in r["command"] for r in records)
    saved = list((vol / "benchmarks").glob("*.json"))  # on the volume, where `modal volume get` fetches it
    assert [f.name for f in saved] == [f"{records[0]['device_slug']}.json"]
    assert len(json.loads(saved[0].read_text())) == len(records)


@pytest.mark.slow
def test_tune_modal_backend_runs_a_real_sweep(tmp_path):
    vol = tmp_path / "vol"
    env = dict(clean_env(tmp_path), **{modal_cluster.LOCAL_ENV: str(vol)})  # train_trial.local for the remote call
    cmd = [sys.executable, "tune.py", "--smoke-test", "--backend", "modal", "--gpu", "T4",
           "--storage", str(tmp_path / "sweeps"), "--name", "s1"]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    log = out.stdout[-3000:] + out.stderr[-3000:]
    trials = json.loads((tmp_path / "sweeps" / "s1" / "trials.json").read_text())["trials"]
    assert len(trials) == 2, log
    for t in trials:
        run = vol / "runs" / f"s1-{t['trial']}"  # each trial's run directory, on the stand-in volume
        assert t["epochs"] >= 1 and epochs_logged(run) == list(range(1, t["epochs"] + 1))  # stopped = stopped training
        attempt = json.loads((run / "modal_attempts.jsonl").read_text().splitlines()[0])
        assert attempt["requested_gpu"] == "T4"
    assert out.returncode == 0, log
    assert all(t["status"] in ("done", "stopped") for t in trials), log


@pytest.mark.slow  # featurises 5 videos in 2 stand-in containers
def test_featurize_maps_videos_over_containers_into_the_volume_store(vol):
    config = {"data.synthetic.num_videos": 5, "data.synthetic.frames_per_video": 200}
    out = modal_cluster.featurize.local(config, 2)
    assert out == {**out, "videos": 5, "built": 5, "reused": 0, "containers": 2}
    store = vol / "runs" / "feature_store"
    assert out["store"] == str(store) and len(list((store / "features").glob("*/*/DONE.json"))) == 5
    again = modal_cluster.featurize.local(config, 3)
    assert again["built"] == 0 and again["reused"] == 5
    # a training run on the volume now starts warm: no video is featurised again
    modal_cluster.train.local({**TINY, **config, "epochs": 1}, "warm", {})
    events = [json.loads(x) for x in (store / "events.jsonl").read_text().splitlines()]
    assert events[-1]["misses"] == 0 and events[-1]["hits"] == 5
