"""Score a checkpoint on annotated videos.

    python -m trainer.evaluate --checkpoint runs/<name>/checkpoints/best
    python -m trainer.evaluate --checkpoint ... --data data/mabe --format mabe25 [--fit-postprocess]

Prints per-class frame F1, macro F1 over behaviours (background excluded), the confusion
matrix, and for mabe25 data the official MABe-2025 score per lab (trainer/metrics.py),
computed from the interval submission the model would make. Without `--data` it scores
the run's own validation videos. Scores are given for the raw (masked argmax) labels and,
when post-processing is configured, for the post-processed ones.

`--fit-postprocess` fits per-class thresholds (after `--smooth`) on these videos and saves
them as `postprocess.json` in the checkpoint directory, where predict picks them up: run
it on validation (or out-of-fold) videos, never on the test set (the scores printed
afterwards are then optimistic for those videos). For mabe25 videos it also fits
thresholds per lab x action on the MABe-2025 lab score, switching off (null) an action
whose prediction does not pay in that lab (predicting an action a lab never shows costs a
whole action there); predict uses them for recordings of those labs. Unless `--smooth` or
`--min-bout` is given, the smoothing window and minimum bout length are chosen too (1, 5 or
15 frames each, by the MABe-2025 score of the whole chain on these videos).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

import numpy as np

from trainer.data.recording import UNLABELLED, DataError
from trainer.kaggle_mabe import solution_frame, submission_frame
from trainer.metrics import frame_scores, mabe_score_details
from trainer.postprocess import (
    PostprocessSettings,
    fit_mabe_settings,
    fit_settings,
    search_mabe_settings,
)
from trainer.predict import (
    Ensemble,
    Predictor,
    add_postprocess_args,
    checkpoint_cli,
    checkpoint_models,
    select_recordings,
    settings_from_args,
    user_errors,
)
from trainer.rundir import one_line_errors

log = logging.getLogger("trainer.evaluate")


def scores_of(recs, labels: list[np.ndarray], pred: Predictor) -> dict:
    """Frame scores (and the MABe-2025 score for mabe25 recordings) of per-recording (T, P) labels."""
    y_true = np.concatenate([r.labels.reshape(-1) for r in recs])
    y_pred = np.concatenate([np.asarray(y).reshape(-1) for y in labels])
    out = {"frames": frame_scores(y_true, y_pred, pred.class_names, pred.class_names[pred.background])}
    if all(r.meta.get("format") == "mabe25" for r in recs):
        solution = solution_frame(recs)
        submission = submission_frame(recs, labels, background=pred.background)
        if len(solution) and len(submission):
            out["mabe"] = mabe_score_details(solution, submission)
        else:
            out["mabe"] = {"score": 0.0, "labs": {}, "note": "empty solution or submission"}
    return out


def fit_mabe(recs, probs, pred: Predictor, settings: PostprocessSettings) -> PostprocessSettings:
    """Per lab x action thresholds on the MABe-2025 score; smoothing window and minimum bout
    too (grid 1/5/15 frames, by the score) unless the settings already set either."""
    if settings.smooth_window == 1 and settings.min_bout == 1:
        settings, score, table = search_mabe_settings(recs, probs, pred.class_names, settings,
                                                      background=pred.background)
        for row in table:
            log.info("smooth %3d, min bout %3d: MABe-2025 score %.4f (thresholds fitted per lab x action)",
                     row["smooth_window"], row["min_bout"], row["score"])
        log.info("chose smooth %d, min bout %d (%.4f)", settings.smooth_window, settings.min_bout, score)
        return settings
    settings, per_lab = fit_mabe_settings(recs, probs, pred.class_names, settings, background=pred.background)
    for lab, d in per_lab.items():
        log.info("lab %s: thresholds fitted on the MABe-2025 lab score %.4f -> %.4f (frames, before bouts)",
                 lab, d["before"], d["after"])
    return settings


def evaluate_checkpoint(
    checkpoint: str | Path | Predictor | Ensemble,
    *,
    data: str | None = None,
    fmt: str | None = None,
    annotations: str | None = None,
    split: str = "val",
    settings: PostprocessSettings | None = None,
    fit: bool = False,
    batch_size: int = 64,
) -> dict:
    """Scores of `checkpoint` on annotated videos; see the module docstring.

    Frames unlabelled in truth (-1, or classes outside a pair's label mask) are left out of
    every frame score. Returns {"raw": scores, "postprocessed": scores or None,
    "settings": dict, "videos": n, ...} where scores = {"frames": frame_scores dict, "mabe": mabe_score_details dict (mabe25)}.
    """
    pred = checkpoint if isinstance(checkpoint, Predictor | Ensemble) else Predictor.load(checkpoint)
    args = argparse.Namespace(input=data, format=fmt, split=split, annotations=annotations)
    if data and annotations is None and pred.cfg.data.annotation_path:
        log.info("annotations of %s: the run's data.annotation_path %s (--annotations for others)", data,
                 pred.cfg.data.annotation_path)
    recs = select_recordings(pred, args)
    missing = [r.video_id for r in recs if r.labels is None]
    if missing:
        raise DataError(f"video {missing[0]} has no annotations; evaluate needs annotated videos "
                        "(dlc/sleap: give their annotation file/dir with --annotations)")
    probs = pred.probabilities(recs, batch_size=batch_size)
    raw = [np.stack([pr.argmax(axis=1) for pr in per_pair], axis=1) for per_pair in probs]
    settings = settings or pred.settings()
    if fit:
        seq_probs = [pr for per_pair in probs for pr in per_pair]
        seq_true = [r.labels[:, p] for r in recs for p in range(len(r.pairs))]
        labs = {}
        if recs and all(r.meta.get("format") == "mabe25" for r in recs):
            settings = fit_mabe(recs, probs, pred, settings)  # may choose smoothing / minimum bout
            labs = settings.lab_thresholds
        settings = fit_settings(seq_probs, seq_true, pred.class_names, background=pred.background,
                                smooth_window=settings.smooth_window, smooth_method=settings.smooth_method,
                                max_gap=settings.max_gap, min_bout=settings.min_bout)
        settings.lab_thresholds = labs  # the per-class thresholds stay the fallback for other labs
        settings.save(pred.checkpoint / "postprocess.json")
        log.info("saved fitted thresholds to %s", pred.checkpoint / "postprocess.json")
    active = settings != PostprocessSettings()
    post = pred.postprocess(recs, probs, settings) if active else None
    return {
        "raw": scores_of(recs, raw, pred),
        "postprocessed": scores_of(recs, post, pred) if post is not None else None,
        "settings": dataclasses.asdict(settings),
        "videos": len(recs),
        "class_names": pred.class_names,
        "labelled_frames": int(sum((r.labels != UNLABELLED).sum() for r in recs)),
    }


def format_report(result: dict) -> str:
    """Human-readable report: per-class F1, macro F1, confusion matrix, MABe score per lab."""
    names = result["class_names"]
    lines = [f"{result['videos']} video(s), {result['labelled_frames']} labelled frame-pairs"]
    for key, title in (("raw", "argmax"), ("postprocessed", "post-processed")):
        s = result[key]
        if s is None:
            continue
        fr = s["frames"]
        lines.append(f"\n[{title}] frame F1 per class:")
        for c in names:
            v = fr["f1"][c]
            lines.append(f"  {c:<20s} {'n/a' if v is None else f'{v:.3f}'}   ({fr['support'][c]} frames)")
        lines.append(f"  {'macro F1':<20s} {fr['macro_f1']:.3f}   (behaviours, background excluded)")
        lines.append(f"  {'accuracy':<20s} {fr['accuracy']:.3f}")
        width = max(8, *(len(c) for c in names)) + 1
        lines.append("  confusion (rows = true, columns = predicted):")
        lines.append("  " + " " * width + "".join(f"{c[:width - 1]:>{width}s}" for c in names))
        for c, row in zip(names, fr["confusion"], strict=True):
            lines.append("  " + f"{c[:width - 1]:<{width}s}" + "".join(f"{v:>{width}d}" for v in row))
        if "mabe" in s:
            m = s["mabe"]
            lines.append(f"  MABe-2025 score: {m['score']:.4f}")
            for lab, d in m["labs"].items():
                f1 = ", ".join(f"{a}={v:.3f}" for a, v in d["f1"].items())
                lines.append(f"    {lab:<24s} {d['score']:.4f}   [{f1}]")
    return "\n".join(lines)


@one_line_errors
@user_errors
def main(argv: list[str] | None = None) -> int:
    p = checkpoint_cli("python -m trainer.evaluate", __doc__.split("\n\n")[0])
    p.add_argument("--data", help="annotated tracking file/dir (default: the run's own validation videos)")
    p.add_argument("--format", help="reader for --data (default: the run's data.format)")
    p.add_argument("--annotations", help="dlc/sleap: annotation file/dir of --data (default: the run's "
                                         "data.annotation_path)")
    p.add_argument("--split", choices=["val", "train", "all"], default="val", help="without --data: which videos")
    p.add_argument("--fit-postprocess", action="store_true",
                   help="fit per-class (mabe25: per lab x action) thresholds on these videos and save "
                        "postprocess.json in the checkpoint")
    p.add_argument("--json", help="also write the full result as JSON here")
    p.add_argument("--batch-size", type=int, default=64)
    add_postprocess_args(p)
    args = p.parse_args(argv)
    with checkpoint_models(args) as pred:
        settings = settings_from_args(pred, args)
        result = evaluate_checkpoint(pred, data=args.data, fmt=args.format, split=args.split, annotations=args.annotations,
                                     settings=settings, fit=args.fit_postprocess, batch_size=args.batch_size)
    log.info("%s", format_report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
