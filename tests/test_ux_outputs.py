"""What a user reads: predict's score report, TensorBoard's hyper-parameters and figures."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import matplotlib.colors as mcolors
import numpy as np
import pytest

from trainer.config import flat_dict, make_config
from trainer.plots import BACKGROUND_COLOR, OKABE_ITO, behaviour_colors, confusion_figure, ethogram_figure
from trainer.report import hparams_of, is_hparam
from trainer.run import main

CLASSES = ["other", "investigation", "mount", "attack"]
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # trains, then predicts
def test_predict_prints_per_class_and_macro_f1_when_truth_is_known(tiny, tmp_path, caplog):
    from trainer.predict import main as predict_main

    assert main([*tiny, "name=p"]) == 0
    run = tmp_path / "runs" / "p"
    caplog.set_level(logging.INFO)
    caplog.clear()
    assert predict_main(["--checkpoint", str(run / "checkpoints/best"), "--out", str(tmp_path / "preds.csv")]) == 0
    text = caplog.text
    for c in CLASSES:
        assert re.search(rf"^\s+{c}\s+(\d\.\d{{3}}|n/a)\s+\(\d+ frames\)", text, re.M), c
    # the README's column lists are the files' columns
    import pandas as pd

    readme = (ROOT / "README.md").read_text()
    cols = [c for c in pd.read_csv(tmp_path / "preds.csv", nrows=1).columns if not c.startswith("prob_")]
    assert cols == ["video_id", "frame", "agent", "target", "pred", "final", "true"]
    assert "`video_id, frame, agent, target, pred, prob_<class>…, final, true`" in readme
    intervals = list(pd.read_csv(tmp_path / "preds_intervals.csv", nrows=1).columns)
    assert f"`{', '.join(intervals)}`" in readme and "preds_intervals.csv" in readme
    macro = float(re.search(r"macro F1\s+(\d\.\d{3})", text).group(1))
    # the validation videos again, scored the same way as training's best epoch
    assert abs(macro - json.loads((run / "metrics.json").read_text())["val_macro_f1"]) < 2e-3


def test_hparams_are_hyper_parameters_only():
    cfg = make_config(overrides=["class_weights=[1,2,3,4]"])
    hp = hparams_of(cfg, "fp32")
    for key in ("learning_rate", "model_type", "epochs", "batch_size", "data.format", "class_weights_3",
                "precision_used", "sequence_length", "features", "noise_std"):
        assert key in hp, key
    for key in ("checkpoint_dir", "output_dir", "name", "resume", "data.annotation_path", "data.path", "modal_gpu",
                "threads", "log_every", "data.synthetic.seed"):
        assert key not in hp, key
    assert not [k for k in hp if re.search(r"(dir|path|name)$", k)]
    # a sweep shows its swept keys only
    assert set(hparams_of(cfg, "fp32", ["learning_rate", "class_weights"])) == {
        "learning_rate", *(f"class_weights_{i}" for i in range(4))}
    # every config key is classified (new keys land on the hyper-parameter side unless listed)
    assert {k for k in flat_dict(cfg.to_dict()) if is_hparam(k)} >= {"learning_rate", "data.split"}


def test_confusion_matrix_is_legible_at_tensorboard_size():
    cm = np.array([[900, 20, 5, 3], [30, 200, 1, 0], [2, 0, 40, 1], [5, 1, 0, 30]])
    fig = confusion_figure(cm, CLASSES)
    width, height = fig.get_size_inches() * fig.dpi
    assert width <= 420 and height <= 420  # shown at its own size, not scaled down
    fig.canvas.draw()
    texts = [t for t in fig.axes[0].texts]
    assert len(texts) == 16 and texts[0].get_text() == "97"  # one whole-percent number per cell
    heights = [t.get_window_extent().height for t in texts]
    assert min(heights) >= 11  # pixels: readable without "show actual image size"
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()][0] == "other (928)"


@pytest.mark.parametrize("background", [None, "investigation"])
def test_ethogram_palette_is_quiet_and_colour_blind_safe(background):
    colors = behaviour_colors(CLASSES, background)
    bg = CLASSES.index(background or "other")
    assert colors[bg] == BACKGROUND_COLOR
    others = [c for i, c in enumerate(colors) if i != bg]
    assert others == OKABE_ITO[:3]
    r, g, b = mcolors.to_rgb(BACKGROUND_COLOR)
    assert min(r, g, b) > 0.8 and max(r, g, b) - min(r, g, b) < 0.05  # light grey
    pred = np.array([0, 0, 1, 2, 3, 0])
    fig = ethogram_figure([("v1 m1->m2", pred, pred)], CLASSES, fps=30.0)
    legend = fig.legends[0]
    drawn = [mcolors.to_hex(h.get_facecolor()) for h in legend.legend_handles]
    assert drawn == [c.lower() for c in behaviour_colors(CLASSES)]
