"""benchmarks/rat46_to_mabe25.py: DLC + Caltech recordings -> a MABe-2025 folder the mabe25 reader takes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from format_fixtures import write_dlc

from benchmarks import rat46_to_mabe25 as conv
from trainer.config import DataConfig
from trainer.data.mabe25 import read_mabe25
from trainer.kaggle_mabe import solution_frame, submission_frame
from trainer.metrics import mabe_score

CALTECH = (
    "Caltech Behavior Annotator - Annotation File\n\nConfiguration file:\n"
    "base\tz\naggression\ta\nsocial\ts\nnonsocial\te\nchase\tc\n\n"
    "S1:\tstart\tend\ttype\n-----------------------------\n{rows}\n"
)


def _write(root, name, T, bouts, seed):
    vals = write_dlc(root / "dlc" / f"{name}DLC_dlcrnetms5_DLC_ratJan24shuffle1_5000_el_filtered.csv", T,
                     ["individual1", "individual2"], ["top", "body", "tail"], seed=seed)
    rows = "\n".join(f"   \t{s}\t{e}\t{b}" for s, e, b in bouts)  # 1-based inclusive
    (root / "annot").mkdir(exist_ok=True)
    (root / "annot" / f"{name}_annot.txt").write_text(CALTECH.format(rows=rows))
    return vals


def test_layout_round_trips_through_the_mabe25_reader(tmp_path):
    v11 = _write(tmp_path, "11", 60, [(1, 10, "base"), (11, 30, "social"), (31, 35, "aggression"),
                                      (36, 50, "nonsocial"), (51, 60, "base")], seed=1)
    _write(tmp_path, "12", 40, [(1, 20, "social"), (21, 40, "aggression")], seed=2)
    out = tmp_path / "mabe"
    assert conv.main(["--dlc", str(tmp_path / "dlc"), "--annot", str(tmp_path / "annot"), "--out", str(out)]) == 0
    table = pd.read_csv(out / "train.csv", dtype={"video_id": str})
    assert table["video_id"].tolist() == ["11", "12"] and (table["frames_per_second"] == 30).all()
    assert table["source_first_frame"].tolist() == [10, 0]
    assert json.loads(table["behaviors_labeled"][0]) == ["mouse1,mouse2,aggression", "mouse1,mouse2,nonsocial",
                                                          "mouse1,mouse2,social"]
    ann = pd.read_parquet(out / "train_annotation" / "rat46" / "11.parquet")
    assert ann.values.tolist() == [[1, 2, "social", 0, 20], [1, 2, "aggression", 20, 25], [1, 2, "nonsocial", 25, 40]]

    recs = read_mabe25(str(out), data=DataConfig(), fps=30.0)
    r = {x.video_id: x for x in recs}["11"]
    assert r.num_frames == 40 and r.pairs == [(0, 1)] and r.class_names == ["other", "aggression", "nonsocial", "social"]
    assert r.bodyparts == ["top", "body", "tail"] and r.mouse_ids == ["mouse1", "mouse2"]
    # DLC x of individual1's "top" on source frame 10 is frame 0 here (float32 pixels)
    assert np.allclose(r.keypoints[0, 0, 0], v11[10, :2], atol=1e-3)
    assert np.allclose(r.keypoints[5, 1, 2], v11[15, 15:17], atol=1e-3)
    sub = submission_frame(recs, [x.labels for x in recs])
    assert mabe_score(solution_frame(recs), sub) == 1.0


def test_refuses_the_repository_and_non_empty_directories(tmp_path):
    _write(tmp_path, "11", 20, [(1, 20, "social")], seed=1)
    args = ["--dlc", str(tmp_path / "dlc"), "--annot", str(tmp_path / "annot"), "--out"]
    assert conv.main(args + [str(conv.REPO / "rat46_mabe")]) == 2
    assert not (conv.REPO / "rat46_mabe").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    assert conv.main(args + [str(tmp_path / "full")]) == 2
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
