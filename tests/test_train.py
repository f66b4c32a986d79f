"""The real entry point (trainer/run.py main / train) on tiny synthetic data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from trainer import checkpoint as ckpt_io
from trainer import engine
from trainer.config import make_config
from trainer.run import main, train

ROOT = Path(__file__).resolve().parent.parent


def _run_dir(tmp_path, name):
    return tmp_path / "runs" / name


def test_two_epoch_run_leaves_a_complete_run_dir(tiny, tmp_path, capsys):
    assert main([*tiny, "name=r", "save_freq=1"]) == 0
    run = _run_dir(tmp_path, "r")
    for f in ["config.yaml", "command.txt", "env.json", "metrics.jsonl", "metrics.json"]:
        assert (run / f).is_file(), f
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"train_loss", "val_loss", "val_macro_f1", "lr", "it_per_s", "samples_per_s", "peak_mem_mb",
            "val_f1_attack"} <= set(rows[0])
    final = json.loads((run / "metrics.json").read_text())
    assert set(final["f1"]) == {"other", "investigation", "mount", "attack"}
    assert np.array(final["confusion"]).shape == (4, 4)
    env = json.loads((run / "env.json").read_text())
    assert env["precision_used"] == "fp32" and env["git_sha"] and "torch" in env["versions"]
    for c in ["last", "best", "epoch_0001", "epoch_0002"]:
        assert ckpt_io.resolve(run / "checkpoints" / c) == run / "checkpoints" / c
    assert not list((run / "checkpoints").glob(".tmp*"))
    out = capsys.readouterr().out
    assert "macro F1" in out and "investigation" in out
    # TensorBoard: event files in the run directory itself (TensorBoard names the run by its name)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert list(run.glob("events.out.tfevents.*")) and not (run / "tb").exists()
    ea = EventAccumulator(str(run), size_guidance={"images": 0, "scalars": 0})
    ea.Reload()
    tags = ea.Tags()
    assert {"0_val/best_macro_f1", "0_val/macro_f1", "0_val/loss", "1_val_f1/investigation", "2_train_epoch/loss",
            "3_train_step/loss", "3_train_step/lr", "4_perf/it_per_s", "4_perf/peak_mem_mb"} <= set(tags["scalars"])
    assert "0_val/confusion" in tags["images"]
    best = [e.value for e in ea.Scalars("0_val/best_macro_f1")]
    assert np.allclose(best, np.maximum.accumulate([r["val_macro_f1"] for r in rows]), atol=1e-6)  # float32
    assert abs(best[-1] - final["val_macro_f1"]) < 1e-6  # what HParams shows is the run's result
    assert ea.PluginTagToContent("hparams")


def test_resume_equals_uninterrupted(tiny, tmp_path):
    cfg = make_config(overrides=[*tiny, "epochs=3", "name=full"])
    full = train(cfg)

    class Kill(Exception):
        pass

    def kill_after_2(row):
        if row["epoch"] == 2:
            raise Kill  # as if the process died right after epoch 2's checkpoint

    with pytest.raises(Kill):
        train(make_config(overrides=[*tiny, "epochs=3", "name=cut"]), on_epoch_end=kill_after_2)
    assert main(["--resume", str(_run_dir(tmp_path, "cut"))]) == 0
    resumed = json.loads((_run_dir(tmp_path, "cut") / "metrics.json").read_text())
    assert resumed["epochs_run"] == 3
    assert resumed["val_macro_f1"] == pytest.approx(full["val_macro_f1"], abs=1e-9)
    assert resumed["confusion"] == full["confusion"]
    a = load_file(str(_run_dir(tmp_path, "full") / "checkpoints/last/model.safetensors"))
    b = load_file(str(_run_dir(tmp_path, "cut") / "checkpoints/last/model.safetensors"))
    assert all(np.allclose(a[k].numpy(), b[k].numpy(), atol=1e-6) for k in a)
    rows = (_run_dir(tmp_path, "cut") / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2, 3]  # the finished epochs were not redone


def test_pinned_loss_regression(tiny, tmp_path):
    # fixed seed, fixed data, CPU fp32: losses must not drift when the code is refactored.
    final = train(make_config(overrides=[*tiny, "name=pin", "epochs=1"]))
    row = json.loads((Path(final["run_dir"]) / "metrics.jsonl").read_text().splitlines()[0])
    assert row["train_loss"] == pytest.approx(PINNED_TRAIN_LOSS, rel=2e-3)
    assert row["val_loss"] == pytest.approx(PINNED_VAL_LOSS, rel=2e-3)


PINNED_TRAIN_LOSS = 1.326024055480957  # torch 2.13 CPU, seed 42
PINNED_VAL_LOSS = 1.2304383516311646


def test_existing_run_is_never_overwritten(tiny, tmp_path, caplog):
    assert main([*tiny, "name=keep", "epochs=1"]) == 0
    before = (_run_dir(tmp_path, "keep") / "checkpoints/last/trainer_state.json").read_text()
    assert main([*tiny, "name=keep", "epochs=1"]) == 2
    assert "already has checkpoints" in caplog.text and "resume=auto" in caplog.text
    assert (_run_dir(tmp_path, "keep") / "checkpoints/last/trainer_state.json").read_text() == before


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["class_weights=[1,2,3]"], "class_weights' has 3 values but the data has 4 classes"),
        (["sequence_length=5000"], "longer than every training video"),
        (["data.synthetic.num_videos=1"], "need at least 2 videos"),
        (["data.synthetic.num_videos=0"], "no recordings found"),
        (["num_classes=5"], "num_classes' is 5 but the data has 4"),
        (["input_dim=30"], "input_dim' is 30 but the data has 28"),
        (["data.format=calms"], "unknown format 'calms'"),
    ],
)
def test_bad_inputs_give_one_clear_line(tiny, overrides, message, caplog):
    assert main([*tiny, *overrides]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and message in errors[0] and "\n" not in errors[0]


def test_missing_config_file_and_unknown_key(tmp_path, caplog):
    assert main(["--config", str(tmp_path / "nope.yaml")]) == 2
    assert main(["learning_rat=0.1"]) == 2
    assert "not found" in caplog.text and "did you mean 'learning_rate'" in caplog.text


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tiny, tmp_path, monkeypatch, caplog):
    assert main([*tiny, "name=nan", "epochs=1"]) == 0
    good = ckpt_io.read_state(_run_dir(tmp_path, "nan") / "checkpoints/last")
    real = engine.frame_loss

    def poisoned(*args, **kwargs):  # fault injection: the loss blows up in the resumed epoch
        return real(*args, **kwargs) * float("nan")

    monkeypatch.setattr(engine, "frame_loss", poisoned)
    assert main(["--resume", str(_run_dir(tmp_path, "nan")), "epochs=2"]) == 1
    assert "training loss became nan at epoch 2, step 0" in caplog.text
    after = ckpt_io.read_state(ckpt_io.resolve(_run_dir(tmp_path, "nan")))
    assert after["epoch"] == good["epoch"] == 1


def test_kill_between_renames_keeps_previous_checkpoint(tiny, tmp_path):
    assert main([*tiny, "name=k", "epochs=1"]) == 0
    ck = _run_dir(tmp_path, "k") / "checkpoints"
    os.replace(ck / "last", ck / "last.old")  # the state right after `last` -> `last.old`
    (ck / ".tmp-last").mkdir()  # half-written new checkpoint
    assert ckpt_io.resolve(_run_dir(tmp_path, "k")) == ck / "last.old"
    assert main(["--resume", str(_run_dir(tmp_path, "k")), "epochs=2"]) == 0
    assert ckpt_io.read_state(ck / "last")["epoch"] == 2 and not (ck / "last.old").exists()


def test_predict_writes_every_frame_and_an_ethogram(tiny, tmp_path):
    from trainer.predict import main as predict_main

    assert main([*tiny, "name=p"]) == 0
    out = tmp_path / "preds.csv"
    assert predict_main(["--checkpoint", str(_run_dir(tmp_path, "p") / "checkpoints/best"), "--out", str(out)]) == 0
    import pandas as pd

    df = pd.read_csv(out)
    assert len(df) == 600 and df["frame"].tolist() == list(range(600))  # 1 val video of 600 frames
    probs = df[[c for c in df if c.startswith("prob_")]].to_numpy()
    assert np.allclose(probs.sum(1), 1, atol=1e-3)
    assert set(df["pred"]) <= {"other", "investigation", "mount", "attack"} and "true" in df
    assert (tmp_path / "preds_ethogram.png").stat().st_size > 1000


@pytest.mark.parametrize("extra", [["model_type=transformer", "mixed_precision=bf16"],
                                   ["mixed_precision=fp16", "grad_accum_steps=2", "scheduler=onecycle", "loss=focal"],
                                   ["scheduler=plateau", "warmup_epochs=1", "optimizer=sgd", "mixup_alpha=0.4",
                                    "frame_gap=2", "label_smoothing=0.1"]])
def test_options_train(tiny, tmp_path, extra):
    final = train(make_config(overrides=[*tiny, *extra, "epochs=1"]))
    assert np.isfinite(final["val_macro_f1"])
    env = json.loads((Path(final["run_dir"]) / "env.json").read_text())
    if "mixed_precision=fp16" in extra:
        assert env["precision_used"] == "fp32"  # no GPU: recorded as really used
    if "mixed_precision=bf16" in extra:
        assert env["precision_used"] == "bf16"  # transformer keeps bf16 on the CPU


@pytest.mark.slow  # accelerate launch of two processes
def test_two_process_cpu_run(tmp_path):
    """accelerate launch --multi_gpu --num_processes 2 on a machine without GPUs is one gloo group."""
    from conftest import TINY  # not tests.conftest: sleap-io 0.9.5 installs a top-level `tests` package

    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           str(ROOT / "trainer/run.py"), *TINY, f"output_dir={tmp_path}", "name=ddp"]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "ddp"
    assert json.loads((run / "env.json").read_text())["num_processes"] == 2
    final = json.loads((run / "metrics.json").read_text())
    assert sum(final["support"].values()) == 600  # every val frame counted exactly once
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


@pytest.mark.slow  # a launcher subprocess
def test_launcher_world_size_without_process_group_is_an_error(tmp_path):
    from conftest import TINY  # not tests.conftest: sleap-io 0.9.5 installs a top-level `tests` package

    env = dict(os.environ, WORLD_SIZE="2", CUDA_VISIBLE_DEVICES="")
    env.pop("MASTER_ADDR", None)
    proc = subprocess.run([sys.executable, str(ROOT / "trainer/run.py"), *TINY, f"output_dir={tmp_path}"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: Accelerate could not start the process group")


def test_early_stopping_and_resume_auto(tiny, tmp_path):
    # lr ~ 0 and no BatchNorm statistics: predictions never change, so val macro F1 never improves
    final = train(make_config(overrides=[*tiny, "name=es", "epochs=6", "early_stopping_patience=2",
                                         "learning_rate=1e-12", "use_augmentation=false", "model_type=per_frame_mlp"]))
    assert final["epochs_run"] == 3 and final["best_epoch"] == 1
    # resume=auto continues the named run from its last checkpoint; a finished run stays finished
    assert main([*tiny, "name=es", "resume=auto", "epochs=6", "early_stopping_patience=2",
                 "learning_rate=1e-12", "use_augmentation=false", "model_type=per_frame_mlp"]) == 0
    rows = (_run_dir(tmp_path, "es") / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2, 3]  # the early-stopped run trained no epoch 4


@pytest.mark.slow  # the presets at their own model sizes
@pytest.mark.parametrize("yaml", ["configs/v3_transformer_t4.yaml", "configs/v4_conv_bilstm_a10g.yaml"])
def test_seed_yamls_run_with_overrides_only(yaml, tmp_path):
    tiny_data = ["epochs=1", "data.synthetic.num_videos=3", "data.synthetic.frames_per_video=400",
                 f"output_dir={tmp_path}", "batch_size=8"]
    assert main(["--config", str(ROOT / yaml), *tiny_data]) == 0
    (run,) = [d for d in tmp_path.iterdir() if d.name != "feature_store"]  # the store sits next to runs
    cfg = (run / "config.yaml").read_text()
    assert "input_dim: 28" in cfg and json.loads((run / "metrics.json").read_text())["epochs_run"] == 1
