"""The repository itself: nothing tracked may point outside the checkout."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tracked_symlinks() -> list[str]:
    """Paths git tracks as symlinks (mode 120000)."""
    out = subprocess.run(["git", "ls-files", "-s"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    return [line.split("\t", 1)[1] for line in out.stdout.splitlines() if line.startswith("120000 ")]


def test_no_tracked_symlink_points_outside_the_repo():
    bad = []
    for rel in _tracked_symlinks():
        target = os.readlink(ROOT / rel) if (ROOT / rel).is_symlink() else ""
        resolved = (ROOT / rel).parent.joinpath(target).resolve()
        if os.path.isabs(target) or not resolved.is_relative_to(ROOT.resolve()) or not resolved.exists():
            bad.append(f"{rel} -> {target}")
    assert not bad, f"tracked symlinks pointing outside the repo or nowhere: {bad}"
