"""Run directories that a second run, a kill or a full disk cannot spoil.

* `check_name`: run, sweep and checkpoint-directory names are single safe path components,
  so a `name=` override can never create or reach directories elsewhere.
* `RunLock`: an OS lock (`fcntl.flock`) on `<run>/.lock`, held for the life of a run. The
  kernel drops it when the process dies, so a lock file left by a killed run is stale by
  construction: the next run takes it over. A second live run on the same directory is
  refused with the owner's pid and host.
* `clean_temporaries`: `.tmp-*` directories and `.*.tmp` files are half-written outputs of a
  killed run, never checkpoints; they are removed when the next run takes the lock.
* `StorageError`/`storage_error`: a full disk or read-only directory becomes one line naming
  the path and the cause.
* The layout: the names of what a run directory holds (below), one place for all of them.
  Imports no torch: the Modal run listing reads run directories with it.

    <run>/config.yaml, command.txt, env.json     the resolved config and provenance
    <run>/metrics.jsonl, metrics.json            one row per epoch; the final result
    <run>/events.out.tfevents.*                  TensorBoard
    <run>/<checkpoint_dir>/last, best, epoch_NNNN   checkpoints (checkpoint_dir: config key)
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import socket
import time
from pathlib import Path

import yaml

from trainer.config import Config, ConfigError

log = logging.getLogger("trainer")

# the run directory's layout
CONFIG, COMMAND, ENV = "config.yaml", "command.txt", "env.json"
METRICS_JSONL, METRICS_JSON = "metrics.jsonl", "metrics.json"
CHECKPOINT_DIR = Config.checkpoint_dir  # the default of config key checkpoint_dir ("checkpoints")
LAST, BEST = "last", "best"  # checkpoints: the newest epoch; the best val macro F1 so far

SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
LOCK = ".lock"
# errors a user's storage causes (not a bug): reported in one line, exit 2
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                  errno.EISDIR, errno.EEXIST, errno.EFBIG}


class StorageError(ConfigError):
    """The disk refused a write (full, read-only, not a directory): one line, exit 2."""


class RunLockedError(ConfigError):
    """Another live process holds the run directory."""


def epoch_checkpoint(epoch: int) -> str:
    """Name of the checkpoint kept for `epoch` every save_freq epochs: epoch_NNNN."""
    return f"epoch_{epoch:04d}"


def checkpoint_dir_of(run: Path) -> str:
    """The run's `checkpoint_dir` from its config.yaml (default CHECKPOINT_DIR)."""
    try:
        value = (yaml.safe_load((Path(run) / CONFIG).read_text()) or {}).get("checkpoint_dir")
    except (OSError, yaml.YAMLError, AttributeError):
        value = None
    return value if isinstance(value, str) and value else CHECKPOINT_DIR


def checkpoints_of(run: Path) -> Path:
    """<run>/<checkpoint_dir>, the directory holding the run's checkpoints (checkpoint_dir from its config.yaml)."""
    return Path(run) / checkpoint_dir_of(run)


def check_name(value: str, key: str) -> str:
    """`value` if it is one safe path component (letters, digits, `-_.`, not starting with `.`/`-`).

    key: how the user set it, for the error ("config key 'name'", "--name").
    """
    if not SAFE_NAME.fullmatch(value):
        raise ConfigError(
            f"{key} must be one name of letters, digits, '-', '_' or '.' "
            f"(not starting with '.' or '-', at most 128 characters), got {value!r}"
        )
    return value


def describe_os_error(e: OSError, path: str | Path | None = None) -> str:
    """'cannot write <path>: <cause>' for an OSError raised while writing."""
    where = e.filename or path or "?"
    cause = e.strerror or os.strerror(e.errno) if e.errno else str(e)
    hint = {errno.ENOSPC: "free some space or choose another output_dir",
            errno.EDQUOT: "free some space or choose another output_dir",
            errno.EROFS: "choose a writable output_dir",
            errno.EACCES: "choose a writable output_dir",
            errno.ENOTDIR: "a file stands where a directory is needed; move it or choose another output_dir"}
    return f"cannot write '{where}': {cause}" + (f"; {hint[e.errno]}" if e.errno in hint else "")


def storage_error(e: BaseException, path: str | Path | None = None) -> StorageError | None:
    """A StorageError for OSErrors the user's storage causes; None for anything else (stays loud)."""
    if isinstance(e, OSError) and e.errno in STORAGE_ERRNOS:
        return StorageError(describe_os_error(e, path))
    # safetensors reports a failed write as its own error type holding the OS message
    text = str(e)
    for code in (errno.ENOSPC, errno.EROFS, errno.EDQUOT):
        if os.strerror(code) in text:
            return StorageError(f"cannot write '{path or '?'}': {os.strerror(code)}")
    return None


def remove_quietly(path: Path) -> None:
    """Delete a temporary file or directory; never raises (the disk may be full or read-only)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists() or path.is_symlink():
            path.unlink()
    except OSError:
        pass


def clean_temporaries(root: Path) -> list[Path]:
    """Remove half-written outputs of a killed run under `root` (one level deep); returns them."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith(".tmp-") or
             (p.name.startswith(".") and p.name.endswith(".tmp"))]
    for p in found:
        remove_quietly(p)
    if found:
        log.info("removed %d half-written file(s) of an interrupted run in %s: %s", len(found), root,
                 ", ".join(p.name for p in found))
    return found


def has_checkpoints(root: Path) -> bool:
    """True if `root` holds anything other than temporaries (a real, even damaged, checkpoint)."""
    return root.is_dir() and any(not p.name.startswith(".") for p in root.iterdir())


class RunLock:
    """Exclusive OS lock on `<run_dir>/.lock` for the life of a run (see module docstring).

    The lock file records {"pid", "host", "started"} of the holder for the refusal message.
    On file systems without flock (some network volumes) the run goes on unlocked, with a warning.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self.fd: int | None = None
        self.created: list[Path] = []  # directories this lock made (deepest first): removed again if left empty

    def acquire(self) -> RunLock:
        import fcntl

        d = self.path.parent
        while not d.exists() and d != d.parent:
            self.created.append(d)
            d = d.parent
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise storage_error(e, self.path) or e from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunLockedError(
                f"run directory '{self.path.parent}' is in use by another run ({holder}); "
                "wait for it to finish or choose another name"
            ) from None
        except OSError as e:  # ENOLCK/EOPNOTSUPP: the file system has no locks
            log.warning("could not lock %s (%s): two runs with this name would not be detected",
                        self.path, e.strerror)
        stale = _read_holder(fd)
        if stale != "unknown process":
            log.warning("took over the stale lock of a run that ended without releasing it (%s)", stale)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "started": time.strftime("%Y-%m-%dT%H:%M:%S")}).encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)  # an empty lock file: nobody holds it
        except OSError:
            pass
        os.close(self.fd)  # closing drops the flock
        self.fd = None
        self._remove_if_unused()

    def _remove_if_unused(self) -> None:
        """A run that stopped before writing anything (a bad data path, say) leaves no empty directory."""
        try:
            if not self.created or [p.name for p in self.path.parent.iterdir()] != [LOCK]:
                return
            self.path.unlink()
            for d in self.created:
                d.rmdir()  # only empty ones: anything another process wrote meanwhile stays
        except OSError:
            pass

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "null")
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (OSError, ValueError, TypeError, KeyError):
        return "unknown process"


def one_line_errors(main):
    """Decorate a CLI `main`: a full or read-only disk becomes one 'error:' line and exit 2.

    Only OSErrors the user's storage causes (STORAGE_ERRNOS) are caught; other errors stay loud.
    """
    import functools

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except StorageError as e:
            logging.getLogger("trainer").error("error: %s", e)
            return 2
        except OSError as e:
            err = storage_error(e)
            if err is None:
                raise
            logging.getLogger("trainer").error("error: %s", err)
            return 2

    return wrapper
