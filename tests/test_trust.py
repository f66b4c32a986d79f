"""Issue 13: no code runs from a checkpoint or data file, no run is lost to a kill or a full disk.

Each test is one numbered case of the issue (named in its docstring). Files are made here;
disk-full and read-only cases use a small tmpfs mount when the test may mount one, and a
file standing where a directory is expected otherwise (root ignores chmod, so a chmod'ed
directory would prove nothing).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer import checkpoint as ckpt_io
from trainer import rundir
from trainer.config import make_config
from trainer.run import main, train


def _run(tmp_path, name):
    return tmp_path / "runs" / name


def _errors(caplog):
    return [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]


def _one_line(caplog, *fragments):
    errors = _errors(caplog)
    assert len(errors) == 1, errors
    assert "\n" not in errors[0] and "Traceback" not in errors[0]
    for f in fragments:
        assert f in errors[0], (f, errors[0])
    return errors[0]


class Evil:
    """Unpickling this creates `marker`: a stand-in for any command an attacker would run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def trained(tiny, tmp_path):
    """A finished 1-epoch run 'r' with checkpoints last, best and epoch_0001."""
    assert main([*tiny, "name=r", "epochs=1", "save_freq=1"]) == 0
    return _run(tmp_path, "r")


# ============================================================================ 1. no pickles


@pytest.mark.slow  # trains a run
def test_checkpoints_hold_no_pickles_and_have_a_manifest(trained):
    """Case 1: a checkpoint is safetensors + JSON only, every file listed with size and sha256."""
    last = trained / "checkpoints/last"
    suffixes = {p.suffix for p in last.iterdir()}
    assert suffixes == {".json", ".safetensors"}, sorted(p.name for p in last.iterdir())
    manifest = json.loads((last / "manifest.json").read_text())["files"]
    assert set(manifest) == {p.name for p in last.iterdir()} - {"manifest.json"}
    for name, entry in manifest.items():
        assert entry["bytes"] == (last / name).stat().st_size and len(entry["sha256"]) == 64


@pytest.mark.slow  # trains a run per pickle
@pytest.mark.parametrize("name", ["custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin"])
def test_resume_refuses_a_malicious_pickle(trained, tmp_path, caplog, name):
    """Case 1: a crafted pickle dropped into the checkpoint is refused with one line, never run."""
    marker = tmp_path / f"pwned-{name}"
    evil = trained / "checkpoints/last" / name
    torch.save(Evil(marker), evil)
    control = tmp_path / "control.pkl"  # the payload is real: loading it the way Accelerate did runs it
    control.write_bytes(evil.read_bytes())
    torch.load(control, weights_only=False)
    assert marker.exists()
    marker.unlink()
    assert main(["--resume", str(trained), "epochs=2"]) == 2
    _one_line(caplog, name, "never unpickles")
    assert not marker.exists()
    assert ckpt_io.read_state(trained / "checkpoints/last")["epoch"] == 1


# ============================================================================ 2. meta.json and .npy


def _evil_npy(path: Path, marker: Path) -> Path:
    arr = np.empty((), dtype=object)
    arr[()] = Evil(marker)
    np.save(path, arr, allow_pickle=True)
    return path


def test_tampered_meta_json_never_unpickles(trained, tmp_path, caplog):
    """Case 2: meta.json saying data.format=calms21, data.path=<.npy> makes predict/evaluate refuse."""
    from trainer.evaluate import main as evaluate_main
    from trainer.predict import main as predict_main

    marker = tmp_path / "pwned"
    ck = trained / "checkpoints/best"
    evil = _evil_npy(ck / "data.npy", marker)
    meta = json.loads((ck / "meta.json").read_text())
    meta["config"]["data"].update(format="calms21", path=str(evil))
    (ck / "meta.json").write_text(json.dumps(meta))
    for manifest in [ck / "manifest.json"]:
        manifest.unlink()  # the attacker rewrites or deletes the manifest too
    assert predict_main(["--checkpoint", str(ck), "--out", str(tmp_path / "p.csv")]) == 2
    assert "data.format=calms21" in _errors(caplog)[-1] and "pickle" in _errors(caplog)[-1]
    assert evaluate_main(["--checkpoint", str(ck)]) == 2
    outside = _evil_npy(tmp_path / "outside.npy", marker)
    assert evaluate_main(["--checkpoint", str(ck), "--data", str(outside)]) == 2
    # --input DIR without --format: the run's format (calms21) does not give consent either
    d = tmp_path / "incoming"
    d.mkdir()
    _evil_npy(d / "x.npy", marker)
    assert predict_main(["--checkpoint", str(ck), "--input", str(d), "--out", str(tmp_path / "q.csv")]) == 2
    assert not marker.exists()
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "q.csv").exists()


def test_npy_needs_the_format_typed_on_the_command_line(tiny, tmp_path, caplog):
    """Case 2: training reads a .npy only with data.format=calms21 typed; a config file is not consent."""
    rng = np.random.default_rng(0)
    doc = {"vocabulary": {"attack": 0, "investigation": 1, "mount": 2, "other": 3},
           "sequences": {f"s{i}": {"keypoints": rng.random((300, 2, 2, 7)) * 500,
                                   "annotations": rng.integers(0, 4, 300)} for i in range(3)}}
    f = tmp_path / "train.npy"
    np.save(f, doc, allow_pickle=True)
    yml = tmp_path / "c.yaml"
    yml.write_text(f"data:\n  format: calms21\n  path: {f}\n")
    assert main(["--config", str(yml), *tiny, "name=a", "sequence_length=32"]) == 2
    _one_line(caplog, str(f), "data.format=calms21")
    assert main(["--config", str(yml), *tiny, "name=b", "sequence_length=32", "data.format=calms21"]) == 0


# ============================================================================ 3. names


@pytest.mark.parametrize("name", ["!!python/object:os.system", "../escape", "a/b", ".hidden", "x" * 200, "-rf"])
def test_unsafe_run_names_are_refused(tiny, tmp_path, caplog, name):
    """Case 3: a run name is one safe path component; nothing is created for a bad one."""
    assert main([*tiny, f"name={name}"]) == 2
    _one_line(caplog, "config key 'name'")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "escape").exists()


def test_unsafe_checkpoint_dir_is_refused(tiny, tmp_path, caplog):
    assert main([*tiny, "name=ok", "checkpoint_dir=../../elsewhere"]) == 2
    _one_line(caplog, "config key 'checkpoint_dir'")


# ============================================================================ 4. leftover temporaries


def test_kill_during_the_first_checkpoint_does_not_block_the_run(tiny, tmp_path, caplog):
    """Case 4: only `.tmp-last` (and a half-written JSON) exist: the run starts and cleans them."""
    ck = _run(tmp_path, "first") / "checkpoints"
    (ck / ".tmp-last").mkdir(parents=True)
    (ck / ".tmp-last" / "model.safetensors").write_bytes(b"half")
    (ck / ".trainer_state.json.tmp").write_text("{")
    assert main([*tiny, "name=first", "resume=auto", "epochs=1"]) == 0
    assert sorted(p.name for p in ck.iterdir()) == ["best", "last"]
    # the same state without resume=auto also just starts
    (ck.parent.parent / "second" / "checkpoints" / ".tmp-last").mkdir(parents=True)
    assert main([*tiny, "name=second", "epochs=1"]) == 0
    assert not list((ck.parent.parent / "second" / "checkpoints").glob(".tmp*"))


# ============================================================================ 5. one run per directory


def test_second_run_with_the_same_name_is_refused(tiny, tmp_path, caplog):
    """Case 5: a live holder of the run lock (another process) makes a second run exit 2."""
    run = _run(tmp_path, "twin")
    run.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from trainer.rundir import RunLock\n"
        f"RunLock(Path({str(run)!r})).acquire(); print('locked', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main([*tiny, "name=twin", "epochs=1"]) == 2
        _one_line(caplog, f"pid {holder.pid}", "in use by another run")
        assert not (run / "metrics.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder died without releasing: its lock file is stale and the next run takes over
    assert json.loads((run / ".lock").read_text())["pid"] == holder.pid
    assert main([*tiny, "name=twin", "epochs=1"]) == 0
    assert "stale lock" in caplog.text


def test_lock_is_exclusive_within_one_process_too(tmp_path):
    with rundir.RunLock(tmp_path):
        with pytest.raises(rundir.RunLockedError, match=f"pid {os.getpid()}"):
            rundir.RunLock(tmp_path).acquire()
    with rundir.RunLock(tmp_path):  # released: free again
        pass


# ============================================================================ 6. damaged checkpoints


def _truncate(p: Path):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _ff(p: Path):
    data = bytearray(p.read_bytes())
    data[-64:] = b"\xff" * 64  # inside the last tensor: NaNs, not a parse error
    p.write_bytes(bytes(data))


DAMAGE = {
    "truncated weights": ("model.safetensors", _truncate),
    "0xff in weights": ("model.safetensors", _ff),
    "optimizer deleted": ("optimizer.safetensors", Path.unlink),
    "optimizer truncated": ("optimizer.safetensors", _truncate),
    "garbage state": ("trainer_state.json", lambda p: p.write_bytes(os.urandom(50))),
    "empty state": ("trainer_state.json", lambda p: p.write_text("{}")),
    "meta without features": ("meta.json", lambda p: p.write_text(json.dumps(
        {k: v for k, v in json.loads(p.read_text()).items() if k != "features"}))),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_checkpoint_names_the_file_and_the_fallback(trained, caplog, damage):
    """Case 6: each damage -> one line naming the file and an intact checkpoint to use instead."""
    fname, hurt = DAMAGE[damage]
    hurt(trained / "checkpoints/last" / fname)
    assert main(["--resume", str(trained), "epochs=2"]) == 2
    line = _one_line(caplog, fname, "intact checkpoints to use instead", "checkpoints/best")
    assert "epoch_0001" in line


@pytest.mark.parametrize("damage", ["0xff in weights", "truncated weights", "meta without features"])
def test_predict_refuses_a_damaged_checkpoint(trained, tmp_path, caplog, damage):
    """Case 6: predict never writes NaN probabilities; with or without a manifest."""
    from trainer.predict import main as predict_main

    fname, hurt = DAMAGE[damage]
    ck = trained / "checkpoints/best"
    hurt(ck / fname)
    out = tmp_path / "p.csv"
    assert predict_main(["--checkpoint", str(ck), "--out", str(out)]) == 2
    _one_line(caplog, fname)
    if damage == "0xff in weights":  # without the manifest the NaN check still catches it
        (ck / "manifest.json").unlink()
        caplog.clear()
        assert predict_main(["--checkpoint", str(ck), "--out", str(out)]) == 2
        _one_line(caplog, "NaN/inf")
    assert not out.exists()


def test_one_damaged_run_does_not_break_nameless_resume_auto(tiny, tmp_path, caplog):
    """Case 6: a garbage trainer_state.json elsewhere under runs/ is skipped with a warning."""
    class Kill(Exception):
        pass

    def kill(row):
        raise Kill

    with pytest.raises(Kill):
        train(make_config(overrides=[*tiny, "name=good", "epochs=2"]), on_epoch_end=kill)
    with pytest.raises(Kill):
        train(make_config(overrides=[*tiny, "name=bad", "epochs=2"]), on_epoch_end=kill)
    (_run(tmp_path, "bad") / "checkpoints/last/trainer_state.json").write_text("garbage")
    os.utime(_run(tmp_path, "bad"), (time.time() + 10, time.time() + 10))  # newest
    assert main([*tiny, "resume=auto", "epochs=2"]) == 0
    assert "resume=auto skips" in caplog.text
    assert ckpt_io.read_state(_run(tmp_path, "good") / "checkpoints/last")["epoch"] == 2


# ============================================================================ 7. full / read-only disks


@pytest.fixture
def small_mount(tmp_path):
    """A 3 MB tmpfs (skipped where the test may not mount one)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()[:80]}); "
                    "test_output_dir_that_is_a_file covers the one-line path")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(mnt: Path, leave: int = 0) -> None:
    """Fill the file system at `mnt` up to `leave` bytes."""
    with open(mnt / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    if leave:
        size = (mnt / "filler").stat().st_size
        os.truncate(mnt / "filler", max(0, size - leave))


def test_disk_full_at_a_checkpoint_keeps_the_previous_one(tiny, small_mount, caplog):
    """Case 7: ENOSPC while writing epoch 2's checkpoint -> one line, epoch 1 intact, no temporaries."""
    def fill_after_1(row):
        if row["epoch"] == 1:
            _fill(small_mount)

    with pytest.raises(rundir.StorageError, match="No space left on device") as e:
        train(make_config(overrides=[*tiny, f"output_dir={small_mount}", "name=full", "epochs=2"]),
              on_epoch_end=fill_after_1)
    assert "\n" not in str(e.value)
    ck = small_mount / "full" / "checkpoints"
    assert ckpt_io.read_state(ck / "last")["epoch"] == 1
    ckpt_io.verify(ck / "last", resume=True)
    assert not list(ck.glob(".tmp*")) and not list((ck / "last").glob(".*"))
    # the CLI: one line, exit 2
    assert main([*tiny, f"output_dir={small_mount}", "name=full2", "epochs=1"]) == 2
    _one_line(caplog, "No space left on device")


def test_predict_on_a_full_disk_leaves_no_partial_csv(trained, small_mount, caplog):
    """Case 7: predict's CSV write fails -> one line, no `.p.csv.tmp` left."""
    from trainer.predict import main as predict_main

    _fill(small_mount)
    assert predict_main(["--checkpoint", str(trained), "--out", str(small_mount / "p.csv")]) == 2
    _one_line(caplog, "No space left on device", "p.csv")
    assert sorted(p.name for p in small_mount.iterdir()) == ["filler"]


def test_read_only_output_dir(tiny, trained, small_mount, caplog):
    """Case 7: a read-only output directory -> one line naming the path, for train and predict."""
    from trainer.predict import main as predict_main

    subprocess.run(["mount", "-o", "remount,ro", str(small_mount)], check=True)
    assert main([*tiny, f"output_dir={small_mount}", "name=ro", "epochs=1"]) == 2
    _one_line(caplog, "Read-only file system", str(small_mount))
    caplog.clear()
    assert predict_main(["--checkpoint", str(trained), "--out", str(small_mount / "p.csv")]) == 2
    _one_line(caplog, "Read-only file system")


def test_output_dir_that_is_a_file(tiny, tmp_path, caplog):
    """Case 7 without a mount: a file where the run directory should go -> one line, exit 2."""
    (tmp_path / "runs").write_text("not a directory")
    assert main([*tiny, "name=x", "epochs=1"]) == 2
    _one_line(caplog, "Not a directory", "runs")


# ============================================================================ issue 12, items 16 and 17


def test_resuming_a_finished_run_trains_nothing(tiny, tmp_path):
    """Issue 12 item 16: early-stopped and completed runs stay finished on resume."""
    es = [*tiny, "name=es", "epochs=6", "early_stopping_patience=2", "learning_rate=1e-12",
          "use_augmentation=false", "model_type=per_frame_mlp"]
    assert main(es) == 0
    rows = lambda: [json.loads(x)["epoch"] for x in (_run(tmp_path, "es") / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert rows() == [1, 2, 3]
    assert main([*es, "resume=auto"]) == 0
    assert main(["--resume", str(_run(tmp_path, "es"))]) == 0
    assert rows() == [1, 2, 3]
    assert main([*tiny, "name=done", "epochs=1"]) == 0
    assert main([*tiny, "name=done", "epochs=1", "resume=auto"]) == 0
    assert len((_run(tmp_path, "done") / "metrics.jsonl").read_text().splitlines()) == 1


def test_checkpoint_dir_is_respected_when_resolving_a_run(tiny, tmp_path):
    """Issue 12 item 17: checkpoint_dir=ckpts works for resume=auto and --resume <run>."""
    class Kill(Exception):
        pass

    def kill(row):
        raise Kill

    with pytest.raises(Kill):
        train(make_config(overrides=[*tiny, "name=c", "epochs=3", "checkpoint_dir=ckpts"]), on_epoch_end=kill)
    run = _run(tmp_path, "c")
    assert ckpt_io.resolve(run) == run / "ckpts/last"  # found through the run's config.yaml
    assert main([*tiny, "name=c", "epochs=2", "checkpoint_dir=ckpts", "resume=auto"]) == 0
    assert ckpt_io.read_state(run / "ckpts/last")["epoch"] == 2
    assert main(["--resume", str(run), "epochs=3"]) == 0
    assert ckpt_io.read_state(run / "ckpts/last")["epoch"] == 3
    assert not (run / "checkpoints").exists()


def test_unpickling_is_not_needed_anywhere(trained):
    """The checkpoint loads with pickle disabled entirely (no hidden torch.load)."""
    real = pickle.Unpickler

    class Refuse(real):
        def __init__(self, *a, **k):
            raise AssertionError("something unpickled during resume")

    pickle.Unpickler = Refuse
    try:
        assert main(["--resume", str(trained), "epochs=2"]) == 0
    finally:
        pickle.Unpickler = real


# ============================================================================ 8-13. readers


def _read(fmt, path, fps=30.0, **data):
    from trainer.config import DataConfig
    from trainer.data import get_reader

    return get_reader(fmt)(str(path), data=DataConfig(**data), fps=fps)


BORIS_HEAD = ("Time,Media file path,Total length,FPS,Subject,Behavior,Behavioral category,Comment,Status\n")


def test_boris_negative_and_past_end_times_are_clipped_and_reported(tmp_path, caplog):
    """Case 8: bouts at -1.0..-0.5 s no longer paint the end of the video; they are reported."""
    from format_fixtures import write_dlc

    write_dlc(tmp_path / "v.csv", 95, ["resident", "intruder"], ["nose"])
    rows = ["-1.0,v.mp4,10,10,Resident,sniff,,,START", "-0.5,v.mp4,10,10,Resident,sniff,,,STOP",
            "-0.3,v.mp4,10,10,Resident,sniff,,,START", "0.4,v.mp4,10,10,Resident,sniff,,,STOP",
            "9.0,v.mp4,10,10,Resident,sniff,,,START", "12.0,v.mp4,10,10,Resident,sniff,,,STOP"]
    (tmp_path / "v_boris.csv").write_text(BORIS_HEAD + "\n".join(rows) + "\n")
    (r,) = _read("dlc", tmp_path / "v.csv", annotation_path=str(tmp_path / "v_boris.csv"))
    sniff = r.class_names.index("sniff")
    lab = r.labels[:, 0]
    assert (lab[0:4] == sniff).all() and (lab[4:90] == 0).all() and (lab[90:95] == sniff).all()
    assert "1 dropped" in caplog.text and "2 before the start" in caplog.text and "v_boris.csv" in caplog.text


def test_simba_blank_cell_is_reported_never_dropped(tmp_path, caplog):
    """Case 9: a behaviour column with one blank cell stays a behaviour; the blank frame is unlabelled."""
    from format_fixtures import write_simba

    attack = np.zeros(20)
    attack[3:9] = 1
    attack[12] = np.nan
    write_simba(tmp_path / "v.csv", 20, behaviours={"Attack": attack})
    (r,) = _read("simba", tmp_path / "v.csv")
    assert r.class_names == ["other", "Attack"]
    assert (r.labels[3:9, 0] == 1).all() and r.labels[12, 0] == -1 and r.labels[11, 0] == 0
    assert "'Attack' has 1 blank cell(s)" in caplog.text


@pytest.mark.parametrize("fps", ["1e9", "0.5", "5000"])
def test_absurd_boris_fps_is_rejected(tmp_path, fps):
    """Case 10: BORIS FPS outside 1-1000 -> one line naming the file."""
    from format_fixtures import write_dlc

    from trainer.data.recording import DataError

    write_dlc(tmp_path / "v.csv", 30, ["resident", "intruder"], ["nose"])
    (tmp_path / "v_b.csv").write_text(BORIS_HEAD + f"0.5,v.mp4,10,{fps},Resident,sniff,,,POINT\n")
    with pytest.raises(DataError, match="v_b.csv: frame rate .* outside the plausible range 1-1000") as e:
        _read("dlc", tmp_path / "v.csv", annotation_path=str(tmp_path / "v_b.csv"))
    assert "\n" not in str(e.value)


def test_absurd_mabe_fps_is_rejected_before_allocating(tmp_path):
    """Case 10: MABe frames_per_second=1e12 -> one line naming train.csv (not sequence_length)."""
    import pandas as pd
    from format_fixtures import write_mabe

    from trainer.data.recording import DataError

    write_mabe(tmp_path)
    pd.read_csv(tmp_path / "train.csv").assign(frames_per_second=1e12).to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(DataError, match="train.csv video 101: frame rate 1e\\+12 fps is outside"):
        _read("mabe25", tmp_path)


def test_config_fps_out_of_range(tiny, caplog):
    assert main([*tiny, "fps=1e9"]) == 2
    _one_line(caplog, "config key 'fps'")


def test_duplicate_rows_are_reported(tmp_path, caplog):
    """Case 11: a duplicated DLC frame index is an error; duplicated MABe rows are reported."""
    import pandas as pd
    from format_fixtures import write_dlc, write_mabe

    from trainer.data.recording import DataError

    write_dlc(tmp_path / "d.csv", 6, None, ["nose"])
    lines = (tmp_path / "d.csv").read_text().splitlines()
    lines[4] = "2" + lines[4][1:]  # 3 header rows; the row of frame 1 now says 2: frame 2 twice
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="d.csv: frame index 2 appears 2 times"):
        _read("dlc", tmp_path / "d.csv")
    root = tmp_path / "mabe"
    write_mabe(root)
    f = root / "train_tracking/LabA/102.parquet"
    df = pd.read_parquet(f)
    pd.concat([df, df.iloc[:3].assign(x=-5.0)]).to_parquet(f, index=False)
    _read("mabe25", root)
    assert "102.parquet: 3 duplicated tracking row(s)" in caplog.text


@pytest.mark.parametrize("content, why", [(b"", "the file is empty"), (b"\x00\x01\x02PK\x03\x04" * 50, "binary")])
def test_dlc_empty_or_binary_tracking_file_is_named(tmp_path, caplog, content, why):
    """Case 12: the skipped tracking file is named with the reason (not only the annotation blamed)."""
    from format_fixtures import BORIS, write_dlc

    write_dlc(tmp_path / "trk" / "good.csv", 30, ["resident", "intruder"], ["nose"])
    (tmp_path / "trk" / "session1.csv").write_bytes(content)
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "session1.csv").write_text(BORIS)
    (tmp_path / "ann" / "good.csv").write_text(BORIS)
    _read("dlc", tmp_path / "trk", annotation_path=str(tmp_path / "ann"))
    assert f"{tmp_path / 'trk' / 'session1.csv'}: skipped as a tracking file" in caplog.text and why in caplog.text


def _mabe_break(kind):
    import pandas as pd

    def tracking(root, **cols):
        f = root / "train_tracking/L/7.parquet"
        pd.read_parquet(f).assign(**cols).to_parquet(f, index=False)

    def one_big_frame(root):
        f = root / "train_tracking/L/7.parquet"
        df = pd.read_parquet(f)
        df.loc[0, "video_frame"] = 10**12
        df.to_parquet(f, index=False)

    return {
        "x text": (lambda root: tracking(root, x="left"), "column 'x' is not numeric"),
        "video_frame strings": (lambda root: tracking(root, video_frame=lambda d: d.video_frame.astype(str)),
                                "column 'video_frame' is not numeric"),
        "behaviors_labeled=5": (lambda root: pd.read_csv(root / "train.csv").assign(behaviors_labeled=5)
                                .to_csv(root / "train.csv", index=False), "behaviors_labeled is 5, not a JSON list"),
        "video_frame=1e12": (one_big_frame, "implies a video of 1,000,000,000,001 frames"),
        "inf coordinates": (lambda root: tracking(root, x=lambda d: d.x.where(d.video_frame != 3, np.inf)),
                            "infinite coordinates"),
    }[kind]


@pytest.mark.parametrize("kind", ["x text", "video_frame strings", "behaviors_labeled=5", "video_frame=1e12",
                                  "inf coordinates"])
def test_malformed_mabe_values_give_one_line(tmp_path, tiny, caplog, kind):
    """Case 13: each malformed MABe value -> exit 2, one line naming the file; no huge allocation."""
    from format_fixtures import write_mabe

    videos = [dict(lab_id="L", video_id=v, fps=30.0, pix=10.0, T=60, mice=[1, 2], bl=["mouse1,mouse2,sniff"],
                   ann=[(1, 2, "sniff", 0, 5)]) for v in (7, 8)]
    write_mabe(tmp_path / "m", videos=videos)
    brk, match = _mabe_break(kind)
    brk(tmp_path / "m")
    assert main([*tiny, "data.format=mabe25", f"data.path={tmp_path / 'm'}", "sequence_length=16"]) == 2
    line = _one_line(caplog, match)
    assert "train.csv" in line or "7.parquet" in line


@pytest.mark.parametrize("kind", ["binary", "string ids", "negative id"])
def test_malformed_calms21_gives_one_line(tmp_path, kind):
    """Case 13: CalMS21 binary .json and vocabulary ids that are not integers."""
    from format_fixtures import calms_seq, write_calms_json

    from trainer.data.recording import DataError

    f = tmp_path / "c.json"
    if kind == "binary":
        f.write_bytes(b"\xff\xfe\x00\x81" * 100)
        match = "not a text file"
    else:
        seq = calms_seq(12, 0)
        seq["metadata"] = {"vocab": {"attack": "zero" if kind == "string ids" else -1, "other": 3}}
        write_calms_json(f, {"s": seq})
        match = "vocabulary id of 'attack' must be an integer"
    with pytest.raises(DataError, match=match) as e:
        _read("calms21", f)
    assert str(f) in str(e.value) and "\n" not in str(e.value)
