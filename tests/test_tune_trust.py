"""Issue 13 case 14 (sweeps): Ctrl+C exits 130, marks the trial interrupted, labels best.yaml partial;
--resume keeps the sampled values of errored trials. Also case 3 for sweep names."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

import tune  # noqa: E402  (after the skip: tune.py imports ray)

ROOT = Path(__file__).resolve().parent.parent
TINY_ARGS = ["data.synthetic.num_videos=4", "data.synthetic.frames_per_video=600", "conv_channels=[16]",
             "lstm_hidden=16", "batch_size=16", "epochs=8"]


def _epochs(run_dir: Path) -> list[int]:
    f = run_dir / "metrics.jsonl"
    return [json.loads(line)["epoch"] for line in f.read_text().splitlines()] if f.is_file() else []


@pytest.mark.slow
def test_sigint_exits_130_marks_the_trial_interrupted_and_resume_keeps_errored_params(tmp_path):
    """Case 14: a good trial, an errored one (overflowing loss), then Ctrl+C during the third."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        space = tmp_path / "cw.yaml"
        space.write_text("class_weights: {grid: [[1, 5, 5, 5], [1, 1.0e+38, 1.0e+38, 1.0e+38], [1, 4, 4, 4]]}\n")
        args = ["--space", str(space), "--num-samples", "1", "--max-concurrent", "1", "--scheduler", "none",
                "--storage", str(tmp_path), "--name", "s", *TINY_ARGS]
        env = dict(os.environ, RAY_ADDRESS=ray.get_runtime_context().gcs_address)
        driver = subprocess.Popen([sys.executable, str(ROOT / "tune.py"), *args], cwd=ROOT, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        runs = tmp_path / "s" / "runs"

        def started() -> list[Path]:
            return sorted((p for p in runs.glob("*") if (p / "metrics.jsonl").is_file()), key=lambda p: p.name)

        try:  # Ctrl+C while the third trial (second with epochs) is half-way
            deadline = time.time() + 240
            while not (len(started()) >= 2 and len(_epochs(started()[1])) >= 2):
                assert driver.poll() is None and time.time() < deadline, driver.stdout.read()[-3000:]
                time.sleep(0.1)
            driver.send_signal(signal.SIGINT)
            out, _ = driver.communicate(timeout=120)
        finally:
            driver.kill()
            driver.wait()
        assert driver.returncode == 130, out[-3000:]
        summary = json.loads((tmp_path / "s" / "trials.json").read_text())
        status = {json.dumps(r["params"]["class_weights"]): r["status"] for r in summary["trials"]}
        assert summary["interrupted"] is True
        assert status == {"[1, 5, 5, 5]": "done", "[1, 1e+38, 1e+38, 1e+38]": "error",
                          "[1, 4, 4, 4]": "interrupted"}, status
        best = (tmp_path / "s" / "best.yaml").read_text()
        assert best.startswith("# PARTIAL: the sweep was interrupted") and "--resume" in best.splitlines()[1]
        assert "interrupted: partial results" in out

        deadline = time.time() + 30  # the interrupted trial's actor goes away
        while ray.available_resources().get("CPU", 0) < 2:
            assert time.time() < deadline
            time.sleep(0.2)
        assert tune.main(["--storage", str(tmp_path), "--name", "s", "--resume"]) == 0
        summary = json.loads((tmp_path / "s" / "trials.json").read_text())
        rows = {r["status"]: r for r in summary["trials"]}
        assert sorted(r["status"] for r in summary["trials"]) == ["done", "done", "error"]
        assert rows["error"]["params"] == {"class_weights": [1, 1e38, 1e38, 1e38]}  # not {} after --resume
        assert rows["error"]["error"].startswith("NonFiniteLossError")
        assert summary["interrupted"] is False
        assert not (tmp_path / "s" / "best.yaml").read_text().startswith("# PARTIAL")
        for run in started():
            assert _epochs(run) == list(range(1, 9)), run.name  # the interrupted trial continued, no epoch twice
    finally:
        ray.shutdown()


@pytest.mark.parametrize("name", ["../up", "a/b", "!!python/object"])
def test_unsafe_sweep_names_are_refused_before_ray_starts(tmp_path, caplog, name):
    """Case 3 for sweeps: --name is one safe path component."""
    assert tune.main(["--storage", str(tmp_path), "--name", name, "epochs=1"]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "--name must be one name" in errors[0]
    assert not any(tmp_path.iterdir())
