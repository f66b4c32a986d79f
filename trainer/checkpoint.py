"""Atomic, verified checkpoint directories that never need unpickling.

A checkpoint is a directory of safetensors and JSON only:

    model.safetensors      weights of the unwrapped model
    optimizer.safetensors  the optimizer's per-parameter tensors (Adam moments, momentum, step)
    training.json          optimizer hyper-parameters per group, scheduler/warm-up/grad-scaler states
    meta.json              config, class names, feature statistics: everything predict needs
    trainer_state.json     epoch, best score, early-stopping counter, history
    manifest.json          size and sha256 of every file above, written last

Accelerate's `save_state`/`load_state` are not used: they store the registered schedulers
as `custom_checkpoint_*.pkl` and load them with `weights_only=False`, so a crafted file
could run code on resume. Random-number states are not stored either: the loop reseeds from
(seed, epoch) at every epoch, which is what makes a resumed run equal an uninterrupted one.
Resume refuses any checkpoint that holds a pickle file (old format or tampered) and
`verify` checks every file against the manifest, so damage is reported by file name with
the intact checkpoints to fall back to.

Writes go to a temporary sibling directory first, which is then renamed over the old one
(`last` -> `last.old`, `tmp` -> `last`, delete `last.old`). A kill at any moment leaves
either the new or the previous checkpoint; `resolve` falls back to `*.old` when the kill
landed between the two renames.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from trainer.config import ConfigError
from trainer.rundir import BEST, LAST, checkpoint_dir_of, remove_quietly, storage_error

log = logging.getLogger("trainer")

META = "meta.json"
STATE = "trainer_state.json"
WEIGHTS = "model.safetensors"
OPTIMIZER = "optimizer.safetensors"
TRAINING = "training.json"
MANIFEST = "manifest.json"
FORMAT = 2
# files a pickle-based trainer (Accelerate's save_state, torch.save) leaves; resume never loads them
PICKLE_SUFFIXES = (".pkl", ".pickle", ".bin", ".pt", ".pth", ".ckpt")

# what each JSON file must hold (key: type) for the trainer to use it
STATE_KEYS = {"epoch": int, "global_step": int, "best_score": (int, float), "best_epoch": int,
              "bad_epochs": int, "finished": bool}
META_KEYS = {"config": dict, "class_names": list, "features": dict, "input_dim": int, "num_classes": int,
             "window_length": int}


class CheckpointError(ConfigError):
    """A checkpoint that is damaged, incomplete or unsafe to load: one line, exit 2."""


# ============================================================================ helpers


def _complete(d: Path) -> bool:
    return (d / META).is_file() and (d / STATE).is_file() and (d / WEIGHTS).is_file()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pickle_files(d: Path) -> list[str]:
    """Names of files in checkpoint `d` that only an unpickler could read."""
    return sorted(p.name for p in d.iterdir() if p.suffix in PICKLE_SUFFIXES)


def write_json(path: Path, obj) -> None:
    """Write JSON atomically (tmp file + rename), so readers never see half a file.

    On a full or read-only disk the temporary file is removed and a StorageError names `path`.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(obj, indent=2))
        os.replace(tmp, path)
    except OSError as e:
        remove_quietly(tmp)
        raise storage_error(e, path) or e from None


def _read_json(path: Path, keys: dict, ck: Path) -> dict:
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{path} is damaged ({type(e).__name__}: {str(e)[:80]}){fallback_hint(ck)}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} is damaged (not a JSON object){fallback_hint(ck)}")
    for k, tp in keys.items():
        if not isinstance(obj.get(k), tp) or (tp is int and isinstance(obj.get(k), bool)):
            raise CheckpointError(f"{path} is damaged (no valid '{k}'){fallback_hint(ck)}")
    return obj


def read_meta(ckpt: Path) -> dict:
    """meta.json of `ckpt`, checked to hold what predict needs."""
    return _read_json(Path(ckpt) / META, META_KEYS, Path(ckpt))


def read_state(ckpt: Path) -> dict:
    """trainer_state.json of `ckpt`, checked to hold what resume needs."""
    return _read_json(Path(ckpt) / STATE, STATE_KEYS, Path(ckpt))


# ============================================================================ publish


def write_manifest(d: Path) -> None:
    """manifest.json: size and sha256 of every regular file in `d` (written last, before publish)."""
    files = {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)}
             for p in sorted(d.iterdir()) if p.is_file() and not p.name.startswith(".") and p.name != MANIFEST}
    write_json(d / MANIFEST, {"format": FORMAT, "files": files})


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
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        shutil.copytree(src, tmp)
        publish(tmp, dst)
    except OSError as e:
        remove_quietly(tmp)
        raise storage_error(e, dst) or e from None


# ============================================================================ training state


def _tensor_free(obj):
    """`obj` with tuples as lists, checked to be plain JSON data (no tensors or objects)."""
    if isinstance(obj, dict):
        return {str(k): _tensor_free(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_tensor_free(v) for v in obj]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} as JSON in a checkpoint")


def save_training(d: Path, model: torch.nn.Module, optimizer, objects: dict) -> None:
    """Write model weights, optimizer state and `objects` ({name: obj with state_dict()}) into `d`.

    model: the unwrapped module. Optimizer tensors go to optimizer.safetensors as
    `<param index>.<name>`; everything else (param groups, scheduler states) to training.json.
    """
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, entries in opt["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[name] = _tensor_free(value)
    save_file(weights, str(d / WEIGHTS))
    save_file(tensors, str(d / OPTIMIZER))
    write_json(d / TRAINING, {
        "optimizer": {"param_groups": _tensor_free(opt["param_groups"]), "scalars": scalars},
        "objects": {name: _tensor_free(obj.state_dict()) for name, obj in objects.items()},
    })


def load_training(ck: Path, model: torch.nn.Module, optimizer, objects: dict) -> None:
    """Restore what `save_training` wrote, after `verify(ck, resume=True)`. No unpickling."""
    verify(ck, resume=True)
    try:
        training = json.loads((ck / TRAINING).read_text())
        weights = load_file(str(ck / WEIGHTS))
        tensors = load_file(str(ck / OPTIMIZER))
    except (OSError, ValueError, SafetensorError) as e:
        raise CheckpointError(f"checkpoint '{ck}' is damaged ({str(e)[:80]}){fallback_hint(ck)}") from None
    check_finite(weights, ck / WEIGHTS)
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise CheckpointError(f"{ck / WEIGHTS} does not fit this model ({str(e).splitlines()[0][:120]}); "
                              "resume with the run's own config") from None
    state: dict = {}
    for key, value in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    for pid, entries in training["optimizer"]["scalars"].items():
        state.setdefault(int(pid), {}).update(entries)
    optimizer.load_state_dict({"state": state, "param_groups": training["optimizer"]["param_groups"]})
    for name, obj in objects.items():
        if name not in training["objects"]:
            raise CheckpointError(f"{ck / TRAINING} has no state for '{name}': the run's config changed "
                                  "(scheduler/warm-up/precision); resume with the run's own config")
        obj.load_state_dict(training["objects"][name])


def check_finite(weights: dict, path: Path) -> None:
    """Non-finite weights are damage, never a model to train or predict with."""
    for name, t in weights.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise CheckpointError(f"{path}: weight '{name}' holds NaN/inf values (damaged or diverged)"
                                  f"{fallback_hint(path.parent)}")


# ============================================================================ verify


def verify(ck: Path, *, resume: bool = False) -> None:
    """Check checkpoint `ck` against its manifest; with resume=True also that no pickle is there.

    Raises CheckpointError naming the damaged file and the intact checkpoints to use instead.
    A checkpoint without manifest (written before manifests existed) is accepted for
    prediction with a warning; resume needs the manifest-era format.
    """
    ck = Path(ck)
    if resume:
        pickles = pickle_files(ck)
        if pickles:
            raise CheckpointError(
                f"checkpoint '{ck}' holds {', '.join(pickles)}: resume never unpickles (a pickle can run code); "
                "it was written by an older trainer or tampered with. predict/evaluate can still use its "
                "weights; to continue training start a new run"
            )
    manifest_path = ck / MANIFEST
    if not manifest_path.is_file():
        if resume:
            raise CheckpointError(f"checkpoint '{ck}' has no {MANIFEST} (older trainer or damaged){fallback_hint(ck)}")
        log.warning("checkpoint %s has no %s (written by an older trainer): its files are not verified",
                    ck, MANIFEST)
        return
    try:
        files = json.loads(manifest_path.read_text())["files"]
        assert isinstance(files, dict)
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        raise CheckpointError(f"{manifest_path} is damaged{fallback_hint(ck)}") from None
    for name, want in files.items():
        p = ck / name
        if not p.is_file():
            raise CheckpointError(f"checkpoint '{ck}' is damaged: {name} is missing{fallback_hint(ck)}")
        size = p.stat().st_size
        if size != want.get("bytes"):
            raise CheckpointError(f"checkpoint '{ck}' is damaged: {name} has {size} bytes, "
                                  f"the manifest says {want.get('bytes')}{fallback_hint(ck)}")
        if _sha256(p) != want.get("sha256"):
            raise CheckpointError(f"checkpoint '{ck}' is damaged: {name} does not match its checksum"
                                  f"{fallback_hint(ck)}")


def _intact(d: Path) -> bool:
    try:
        if not (d.is_dir() and _complete(d) and (d / MANIFEST).is_file()):
            return False
        _verify_quiet(d)
        return True
    except CheckpointError:
        return False


def _verify_quiet(d: Path) -> None:
    files = json.loads((d / MANIFEST).read_text())["files"]
    for name, want in files.items():
        p = d / name
        if not p.is_file() or p.stat().st_size != want["bytes"] or _sha256(p) != want["sha256"]:
            raise CheckpointError(name)


def fallbacks(ck: Path) -> list[Path]:
    """Intact sibling checkpoints of `ck` (best, newest epoch_NNNN first, last, *.old)."""
    root = Path(ck).parent
    if not root.is_dir():
        return []
    epochs = sorted(root.glob("epoch_*"), reverse=True)
    order = [root / BEST, *epochs, root / LAST, root / f"{LAST}.old", root / f"{BEST}.old"]
    out = []
    for d in order:
        try:
            if d.resolve() != Path(ck).resolve() and d not in out and _intact(d):
                out.append(d)
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def fallback_hint(ck: Path) -> str:
    """'; intact checkpoints to use instead: ...' (or that none is left)."""
    alt = fallbacks(ck)
    if not alt:
        return "; no other intact checkpoint next to it"
    return "; intact checkpoints to use instead: " + ", ".join(str(a) for a in alt[:3])


# ============================================================================ resolve


def resolve(path: str | Path, checkpoint_dir: str | None = None) -> Path | None:
    """A usable checkpoint directory for `path` (a checkpoint, its `.old` twin, or a run dir).

    Run directories resolve to <run>/<checkpoint_dir>/last (checkpoint_dir: given, else the
    run's config.yaml, else rundir.CHECKPOINT_DIR). Returns None if nothing complete exists.
    """
    p = Path(path)
    candidates = [p, p.with_name(p.name + ".old")]
    sub = p / (checkpoint_dir or checkpoint_dir_of(p))
    if sub.is_dir():
        last = sub / LAST
        candidates = [last, last.with_name(f"{LAST}.old")]
    for c in candidates:
        if c.is_dir() and _complete(c):
            return c
    return None

