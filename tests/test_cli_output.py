"""What a user sees on the console and in the run directory when starting runs from the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")


@pytest.mark.parametrize("args, message", [
    (["lerning_rate=0.1"], "error: override: unknown config key 'lerning_rate'; did you mean 'learning_rate'?"),
    (["--config", "nope.yaml"], "error: config file 'nope.yaml' not found"),
    (["data.format=calms21", "data.path=missing.json"], "missing.json"),
])
@pytest.mark.slow  # a CLI subprocess each
def test_user_mistakes_give_one_line_and_exit_code_2(tmp_path, args, message):
    """The README's run command: a mistake is one line on stderr, exit code 2, no traceback."""
    proc = subprocess.run([sys.executable, str(ROOT / "trainer/run.py"), *args], capture_output=True, text=True,
                          timeout=120, env=ENV, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr and not proc.stdout.strip()
    assert not (tmp_path / "runs").exists()  # nothing was started


@pytest.mark.slow
def test_accelerate_launch_log_command_txt_and_threads(tiny, tmp_path):
    """Under `accelerate launch` with output redirected to a file: no progress-bar refreshes in the log,
    one summary line per epoch, command.txt holds the launcher's command line, `threads` is applied."""
    log = tmp_path / "train.log"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", str(ROOT / "trainer/run.py"), *tiny,
           "name=launched", "threads=2"]
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=300, env=ENV, cwd=tmp_path)
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    assert "\r" not in text and "it/s]" not in text  # no tqdm bar, not even a final one
    assert sum(line.startswith("epoch ") and "val_macro_f1" in line for line in text.splitlines()) == 2
    run = tmp_path / "runs" / "launched"
    command = (run / "command.txt").read_text().splitlines()
    assert len(command) == 1
    assert command[0].startswith("accelerate launch --num_processes 1 ") and "trainer/run.py" in command[0]
    assert command[0].endswith("# accelerate launch, 1 process(es)")
    # accelerate launch pins CPU runs to OMP_NUM_THREADS=1; the threads key overrides it
    assert json.loads((run / "env.json").read_text())["threads"] == 2


def test_plain_python_records_its_own_command(monkeypatch):
    from trainer.provenance import command_line

    monkeypatch.delenv("ACCELERATE_DYNAMO_BACKEND", raising=False)
    line = command_line(1)
    assert line.split()[0] == Path(sys.executable).name and "#" not in line


@pytest.mark.parametrize("parent, expected", [
    (["/usr/bin/python3", "/usr/local/bin/accelerate", "launch", "trainer/run.py", "epochs=2"],
     ["trainer/run.py", "epochs=2"]),
    (["python", "-m", "accelerate.commands.launch", "--multi_gpu", "trainer/run.py"], ["--multi_gpu", "trainer/run.py"]),
    (["bash", "-c", "x"], None),
])
def test_launcher_arguments_are_found_in_the_parent_command(parent, expected):
    from trainer.provenance import launcher_args

    assert launcher_args(parent) == expected


@pytest.mark.slow
def test_under_accelerate_launch_the_trainer_still_says_one_line(tmp_path):
    """`accelerate launch` adds its own notice and (without -q) a traceback on any non-zero exit; that is the
    launcher's, documented in docs/options.md. The trainer's own part stays the same one line, and with -q
    the launcher adds no traceback (its exit code is then 1)."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "-q", str(ROOT / "trainer/run.py"), "lerning_rate=0.1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=ENV, cwd=tmp_path)
    ours = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert ours == ["error: override: unknown config key 'lerning_rate'; did you mean 'learning_rate'?"]
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
