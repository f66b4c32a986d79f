"""Where a run came from: the command that started it, the code's commit and the package versions.

Written into every run directory (trainer/runfiles.py: command.txt, env.json) and into the
benchmark results and Modal's attempt logs. Imports no torch: the Modal launcher uses it locally.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the checkout whose commit is recorded


def git_sha(root: Path = ROOT) -> str:
    """HEAD of the checkout, with '-dirty' when tracked files have uncommitted changes; 'unknown' without git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "") if sha.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict:
    """{"python": ..., package: version} for the packages a result depends on (missing ones left out)."""
    out = {"python": platform.python_version()}
    for pkg in ("torch", "accelerate", "numpy", "scikit-learn", "pandas", "tensorboard", "ray", "modal"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def process_cmdline(pid: int) -> list[str]:
    """argv of another process (Linux /proc); [] where unavailable."""
    try:
        return [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return []


def launcher_args(argv: list[str]) -> list[str] | None:
    """Arguments after `accelerate launch` (or `python -m accelerate.commands.launch`) in argv, else None."""
    for i, a in enumerate(argv):
        if Path(a).name == "accelerate" and argv[i + 1:i + 2] == ["launch"]:
            return argv[i + 2:]
        if a == "accelerate.commands.launch":
            return argv[i + 1:]
    return None


def command_line(num_processes: int) -> str:
    """The command that started this run, as typed: the launcher's own when under `accelerate launch`.

    Accelerate's launchers export ACCELERATE_DYNAMO_BACKEND to the processes they start and
    run them as their children, so the parent's argv is the `accelerate launch ...` line.
    """
    own = shlex.join([Path(sys.executable).name, *sys.argv])
    if "ACCELERATE_DYNAMO_BACKEND" not in os.environ:
        return own
    launched = launcher_args(process_cmdline(os.getppid()))
    if launched is not None:
        return f"{shlex.join(['accelerate', 'launch', *launched])}   # accelerate launch, {num_processes} process(es)"
    return f"{own}   # under accelerate launch, {num_processes} process(es)"
