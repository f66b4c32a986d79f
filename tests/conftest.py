"""Shared fixtures: tiny configs that train in seconds on 2 CPU cores."""

from __future__ import annotations

import logging

import pytest

# a model and data set small enough for a 2-epoch run in a few seconds
# a tiny sweep trial (tests/test_tune*.py): 4 short videos, a small Conv-BiLSTM, 4 epochs
TINY_TRIAL = {
    "epochs": 4,
    "data.synthetic.num_videos": 4,
    "data.synthetic.frames_per_video": 600,
    "conv_channels": [16],
    "lstm_hidden": 16,
    "batch_size": 16,
}
TINY = [
    "epochs=2",
    "data.synthetic.num_videos=4",
    "data.synthetic.frames_per_video=600",
    "conv_channels=[16]",
    "lstm_hidden=16",
    "hidden_dim=32",
    "num_heads=2",
    "num_layers=1",
    "batch_size=16",
    "log_every=1",
]


@pytest.fixture
def tiny(tmp_path):
    """key=value overrides for a tiny run writing into tmp_path/runs."""
    return [*TINY, f"output_dir={tmp_path / 'runs'}"]


@pytest.fixture(autouse=True)
def _quiet_accelerate():
    logging.getLogger("accelerate").setLevel(logging.WARNING)
