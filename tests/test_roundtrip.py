"""Train -> predict -> score on tiny files of every real-data format (2 epochs, tiny model)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from format_fixtures import BORIS, calms_seq, write_calms_json, write_dlc, write_mabe, write_simba

from trainer import predict
from trainer.config import make_config
from trainer.evaluate import evaluate_checkpoint, format_report
from trainer.metrics import mabe_score
from trainer.run import train

T = 90  # frames per video: a few 16-frame windows each


def calms21(root):
    seqs = {f"seq{i}": calms_seq(T, i) for i in range(3)}
    f = write_calms_json(root / "calms21.json", seqs)
    return {"data.format": "calms21", "data.path": str(f)}, str(f)


def mabe25(root):
    videos = [
        dict(lab_id=f"Lab{i % 2}", video_id=300 + i, fps=30.0, pix=10.0, T=T, mice=[1, 2],
             bl=["mouse1,mouse2,sniff", "mouse2,mouse1,sniff", "mouse1,self,rear"],
             ann=[(1, 2, "sniff", 10, 30), (2, 1, "sniff", 50, 70), (1, 1, "rear", 35, 45)])
        for i in range(4)
    ]
    write_mabe(root, videos=videos)
    return {"data.format": "mabe25", "data.path": str(root), "data.split": "by_lab", "data.units": "cm"}, str(root)


def dlc(root):
    for i in range(3):
        write_dlc(root / "trk" / f"session{i}DLC_resnet50_x.csv", T, ["resident", "intruder"], ["nose", "tail_base"],
                  seed=i)
        (root / "ann").mkdir(exist_ok=True)
        (root / "ann" / f"session{i}.csv").write_text(BORIS)
    return {"data.format": "dlc", "data.path": str(root / "trk"), "data.annotation_path": str(root / "ann")}, \
        str(root / "trk")


def simba(root):
    for i in range(3):
        att = np.zeros(T, int)
        att[10 + i:40] = 1
        write_simba(root / f"Video{i}.csv", T, behaviours={"Attack": att}, seed=i)
    return {"data.format": "simba", "data.path": str(root)}, str(root)


@pytest.mark.parametrize("writer", [calms21, *(pytest.param(w, marks=pytest.mark.slow) for w in (mabe25, dlc, simba))],
                         ids=lambda w: w.__name__)  # one format in the quick subset, every format in the full suite
def test_train_predict_score(tmp_path, writer):
    (tmp_path / "data").mkdir()
    data_keys, predict_input = writer(tmp_path / "data")
    overrides = dict(data_keys, **{
        "epochs": 2, "sequence_length": 16, "batch_size": 8, "model_type": "per_frame_mlp", "hidden_dim": 16,
        "num_layers": 1, "features": ["coords", "speed", "distances", "mask"], "output_dir": str(tmp_path / "runs"),
        "name": "rt", "learning_rate": 1e-3, "data.val_fraction": 0.34,
    })
    cfg = make_config(None, [f"{k}={v}" for k, v in overrides.items()])
    final = train(cfg)
    assert final["epochs_run"] == 2 and 0.0 <= final["val_macro_f1"] <= 1.0
    ck = tmp_path / "runs" / "rt" / "checkpoints" / "best"

    # evaluate: thresholds fitted on the run's validation videos, saved for predict
    result = evaluate_checkpoint(ck, fit=True)
    assert (ck / "postprocess.json").is_file() and result["postprocessed"] is not None
    assert set(result["raw"]["frames"]["f1"]) == set(result["class_names"])
    report = format_report(result)
    assert "macro F1" in report and "confusion" in report

    out = tmp_path / "pred" / "preds.csv"
    fmt = data_keys["data.format"]
    assert predict.main(["--checkpoint", str(ck), "--input", predict_input, "--format", fmt, "--out", str(out),
                         "--min-bout", "2"]) == 0
    frames = pd.read_csv(out)
    assert {"video_id", "frame", "pred", "final"} <= set(frames.columns)
    intervals = pd.read_csv(out.with_name("preds_intervals.csv"))
    assert list(intervals.columns) == ["video_id", "agent", "target", "action", "start_frame", "stop_frame"]
    assert (intervals["stop_frame"] - intervals["start_frame"] >= 2).all()
    if fmt == "mabe25":
        assert "mabe" in result["raw"] and set(result["raw"]["mabe"]["labs"]) <= {"Lab0", "Lab1"}
        sub = pd.read_csv(out.with_name("preds_submission.csv"))
        assert list(sub.columns) == ["row_id", "video_id", "agent_id", "target_id", "action", "start_frame",
                                     "stop_frame"]
        from trainer.config import DataConfig
        from trainer.data.mabe25 import read_mabe25
        from trainer.kaggle_mabe import solution_frame

        truth = solution_frame(read_mabe25(predict_input, data=DataConfig(), fps=30.0))
        if len(sub):  # a valid submission: scoring raises on overlaps or malformed rows
            assert 0.0 <= mabe_score(truth, sub) <= 1.0
    else:
        assert not out.with_name("preds_submission.csv").exists()


def test_a_checkpoint_reads_new_annotated_files_like_its_training_data(tmp_path):
    """rat46's case: Caltech streams hold a `base` period that training leaves unlabelled
    (data.unlabelled_behaviors). Predict / evaluate on new annotated files must read them the
    same way, not reject `base` as a class the model does not know."""
    from trainer import evaluate

    trk, ann = tmp_path / "trk", tmp_path / "ann"
    ann.mkdir(parents=True)
    for i in range(3):
        write_dlc(trk / f"{i}DLC_x.csv", T, ["individual1", "individual2"], ["top", "body", "tail"], seed=i)
        (ann / f"{i}_annot.txt").write_text(
            "Caltech Behavior Annotator - Annotation File\n\nConfiguration file:\n"
            "base\tb\nsocial\ts\nnonsocial\tn\n\nS1: start\tend\ttype\n-----------------------------\n"
            f"1\t{20 + i}\tbase\n{21 + i}\t50\tsocial\n51\t{T}\tnonsocial\n\n")
    overrides = {"data.format": "dlc", "data.path": str(trk), "data.annotation_path": str(ann),
                 "data.unlabelled_behaviors": "[base]", "data.val_fraction": 0.34, "epochs": 1,
                 "sequence_length": 16, "batch_size": 8, "model_type": "per_frame_mlp", "hidden_dim": 8,
                 "num_layers": 1, "features": "[coords,distances,mask]", "output_dir": str(tmp_path / "runs"),
                 "name": "rt"}
    train(make_config(None, [f"{k}={v}" for k, v in overrides.items()]))
    run = tmp_path / "runs" / "rt"
    pred = predict.Predictor.load(run / "checkpoints" / "best")
    recs = pred.read("dlc", str(trk))
    assert [r.class_names for r in recs] == [pred.class_names] * 3 and "base" not in pred.class_names
    r0 = next(r for r in recs if r.video_id.startswith("0"))
    assert (r0.labels[:20, 0] == -1).all() and (r0.labels[20:, 0] >= 0).all()  # base -> unlabelled, scored nowhere
    out = tmp_path / "eval.json"
    assert evaluate.main(["--checkpoint", str(run), "--data", str(trk), "--json", str(out)]) == 0
    assert out.is_file()

    # new videos elsewhere: `53` is not annotated by the run's `5_annot.txt` (a prefix inside a number),
    # predict reads tracking only, evaluate takes --annotations
    new_trk, new_ann = tmp_path / "new" / "trk", tmp_path / "new" / "ann"
    new_ann.mkdir(parents=True)
    write_dlc(new_trk / "53DLC_x.csv", T, ["individual1", "individual2"], ["top", "body", "tail"], seed=7)
    write_dlc(trk / "5DLC_x.csv", T, ["individual1", "individual2"], ["top", "body", "tail"], seed=5)
    (ann / "5_annot.txt").write_text((ann / "0_annot.txt").read_text())
    preds = tmp_path / "p" / "preds.csv"
    assert predict.main(["--checkpoint", str(run), "--input", str(new_trk), "--out", str(preds)]) == 0
    assert set(pd.read_csv(preds)["video_id"].astype(str)) == {"53"}
    assert evaluate.main(["--checkpoint", str(run), "--data", str(new_trk)]) == 2  # the run's annotations: none is 53's
    (new_ann / "53_annot.txt").write_text((ann / "1_annot.txt").read_text())
    result = evaluate.evaluate_checkpoint(run, data=str(new_trk), annotations=str(new_ann))
    assert result["videos"] == 1 and result["labelled_frames"] == T - 21  # 1_annot: frames 1-21 are base
