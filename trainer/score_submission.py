"""Score a MABe-2025 submission CSV locally, as the competition host would.

    python -m trainer.score_submission --data data/mabe --submission submission.csv [--json out.json]
    python -m trainer.score_submission --data data/mabe --submission preds_submission.csv --videos 5,18,25   # a validation split

The solution is built from the annotated videos of `--data` (root or train.csv; every
video with `behaviors_labeled` and an annotation file): ids written `mouse<N>` and `self`
for a self target, as in Kaggle's files. The score is `trainer.metrics.mabe_score`, equal
to the host's including its quirks (docs/formats.md, "Scoring"); input the host rejects
(overlapping actions of one pair, stop_frame < start_frame, float frames, ...) is reported
as one line and exit code 2.

Like the host, the score counts every annotated video of `--data`: a video without a predicted
bout is all misses. To score the predictions of a validation split, name its videos with
`--videos` (comma-separated ids, or @file with one id per line).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import pandas as pd

from trainer.data.mabe25 import locate, read_annotation_table, read_video_table
from trainer.data.recording import DataError
from trainer.kaggle_mabe import video_solution
from trainer.metrics import mabe_score_details

log = logging.getLogger("trainer.score_submission")


def solution_from_layout(path: str, videos: list[str] | None = None) -> pd.DataFrame:
    """Truth intervals of a MABe-2025 train layout in the scorer's form (kaggle_mabe.SOLUTION_COLUMNS):
    every video with behaviors_labeled and an annotation file (or only `videos`), ids and frames as stored."""
    root, split, csv_path, _ = locate(path)
    table = read_video_table(csv_path)
    if videos is not None:
        unknown = sorted(set(videos) - set(table["video_id"].astype(str)))
        if unknown:
            raise DataError(f"--videos: {', '.join(unknown[:5])} not in {csv_path}")
        table = table[table["video_id"].astype(str).isin(set(videos))]
    parts = []
    for row in table.itertuples(index=False):
        bl = row.behaviors_labeled
        if not isinstance(bl, str) or bl.strip() in ("", "[]"):
            continue
        file = root / f"{split}_annotation" / str(row.lab_id) / f"{row.video_id}.parquet"
        if not file.is_file():
            continue
        parts.append(video_solution(read_annotation_table(file), video_id=str(row.video_id),
                                    lab_id=str(row.lab_id), behaviors_labeled=bl))
    if not parts:
        raise DataError(f"{csv_path}: no annotated video (behaviors_labeled + annotation file) to score against")
    return pd.concat(parts, ignore_index=True)


def video_list(spec: str | None) -> list[str] | None:
    """`--videos`: "a,b,c" or "@file" (one id per line) -> ids; None -> None (every video)."""
    if spec is None:
        return None
    if spec.startswith("@"):
        try:
            text = Path(spec[1:]).read_text()
        except OSError as e:
            raise DataError(f"--videos {spec}: cannot read ({e.strerror})") from None
        ids = text.split()
    else:
        ids = spec.split(",")
    ids = [v.strip() for v in ids if v.strip()]
    if not ids:
        raise DataError(f"--videos {spec!r}: no video id given")
    return ids


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = argparse.ArgumentParser(prog="python -m trainer.score_submission", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="MABe-2025 root or train.csv with train_annotation/")
    p.add_argument("--submission", required=True, help="submission CSV (row_id, video_id, agent_id, ...)")
    p.add_argument("--videos", help="score only these video ids (comma-separated, or @file with one per line), "
                                    "e.g. a validation split; default: every annotated video, as the host does")
    p.add_argument("--json", help="also write the per-lab breakdown as JSON here")
    args = p.parse_args(argv)
    try:
        solution = solution_from_layout(args.data, video_list(args.videos))
        try:
            submission = pd.read_csv(args.submission)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise DataError(f"{args.submission}: cannot read as CSV ({str(e).splitlines()[0]})") from None
        result = mabe_score_details(solution, submission)
    except DataError as e:  # SubmissionError included
        log.error("error: %s", e)
        return 2
    log.info("MABe-2025 score: %.6f", result["score"])
    for lab, d in result["labs"].items():
        log.info("  %-24s %.4f   [%s]", lab, d["score"], ", ".join(f"{a}={v:.3f}" for a, v in d["f1"].items()))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
