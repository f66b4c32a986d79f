"""trainer/provenance.py: the commit a run, a benchmark or a Modal attempt records."""

import subprocess

from trainer.provenance import git_sha, launcher_args, versions


def _git(repo, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                   capture_output=True)


def test_git_sha_marks_uncommitted_changes_dirty(tmp_path):
    assert git_sha(tmp_path) == "unknown"  # not a checkout
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    _git(tmp_path, "add", "a.py")
    _git(tmp_path, "commit", "-qm", "one")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    (tmp_path / "new.py").write_text("")  # untracked files do not change what ran
    assert git_sha(tmp_path) == head
    (tmp_path / "a.py").write_text("x = 2\n")
    assert git_sha(tmp_path) == f"{head}-dirty"


def test_versions_and_launcher_args():
    assert {"python", "torch", "accelerate"} <= set(versions())
    assert launcher_args(["/usr/bin/python", "train.py"]) is None
