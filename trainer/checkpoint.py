"""Atomic checkpoint directories.

A checkpoint is a directory: Accelerate's `save_state` files (model.safetensors,
optimizer.bin, RNG states, the LR scheduler as a custom object) plus `meta.json` (config,
class names, feature statistics: everything predict needs) and `trainer_state.json`
(epoch, best score, early-stopping counter, history).

Writes go to a temporary sibling directory first, which is then renamed over the old one
(`last` -> `last.old`, `tmp` -> `last`, delete `last.old`). A kill at any moment leaves
either the new or the previous checkpoint; `resolve` falls back to `*.old` when the kill
landed between the two renames.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

META = "meta.json"
STATE = "trainer_state.json"
WEIGHTS = "model.safetensors"


def _complete(d: Path) -> bool:
    return (d / META).is_file() and (d / STATE).is_file() and (d / WEIGHTS).is_file()


def publish(tmp: Path, final: Path) -> None:
    """Atomically replace directory `final` by the finished directory `tmp`."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def copy_checkpoint(src: Path, dst: Path) -> None:
    """Copy a finished checkpoint to `dst` atomically (for best/ and epoch_NNNN/)."""
    tmp = dst.with_name(f".tmp-{dst.name}")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(src, tmp)
    publish(tmp, dst)


def write_json(path: Path, obj) -> None:
    """Write JSON atomically (tmp file + rename), so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def resolve(path: str | Path) -> Path | None:
    """A usable checkpoint directory for `path` (a checkpoint, its `.old` twin, or a run dir).

    Run directories resolve to <run>/checkpoints/last. Returns None if nothing complete exists.
    """
    p = Path(path)
    candidates = [p, p.with_name(p.name + ".old")]
    if (p / "checkpoints").is_dir():
        last = p / "checkpoints" / "last"
        candidates = [last, last.with_name("last.old")]
    for c in candidates:
        if c.is_dir() and _complete(c):
            return c
    return None


def read_meta(ckpt: Path) -> dict:
    return json.loads((ckpt / META).read_text())


def read_state(ckpt: Path) -> dict:
    return json.loads((ckpt / STATE).read_text())
