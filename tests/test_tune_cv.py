"""tune.py with cross-validated trials (data.fold=-1): a real tiny Ray Tune sweep on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from conftest import TINY_TRIAL  # noqa: E402

import tune  # noqa: E402  (after the skip: tune.py imports ray)
from trainer import search_space  # noqa: E402
from trainer.config import make_config  # noqa: E402

pytestmark = pytest.mark.slow  # one ASHA sweep of two 2-fold trials: ~40 s on 2 busy cores

TINY = {
    **TINY_TRIAL,
    "data.split": "kfold",
    "data.num_folds": 2,
    "data.fold": -1,
}


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def cv_sweep(ray_cluster, tmp_path_factory):
    """ASHA over two cross-validated trials: a good one, and one that only predicts background (stopped at
    the first rung, epoch 1), run one after the other so ASHA is deterministic."""
    space = {"class_weights": {"grid": [[1, 5, 5, 5], [1, 0, 0, 0]]}}
    cfg = make_config(None, TINY)
    sweep = tune.Sweep(name="cv", storage=str(tmp_path_factory.mktemp("sweeps")), base=cfg.to_dict(), space=space)
    search_space.check_space(sweep.parsed_space, cfg.to_dict())
    rows = tune.run_sweep(sweep, num_samples=1, scheduler="asha", max_concurrent=1, cpus_per_trial=1)
    return sweep, {json.dumps(r["params"]["class_weights"]): r for r in rows}, rows


def _epochs(run_dir: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_cross_validated_trial_reports_the_running_mean_over_folds_each_epoch(cv_sweep):
    sweep, by_weights, _ = cv_sweep
    good = by_weights["[1, 5, 5, 5]"]
    assert good["status"] == "done" and good["epochs"] == TINY["epochs"]
    run = Path(good["run_dir"])
    # every epoch reported to Tune is the mean over the folds of their best val macro F1 so far
    reported = [json.loads(line) for line in (sweep.dir / run.name / "result.json").read_text().splitlines()]
    assert [r["epoch"] for r in reported] == [1, 2, 3, 4]
    for r in reported:
        per_fold = []
        for i in range(2):
            hist = [json.loads(x) for x in (run / f"fold_{i}" / "metrics.jsonl").read_text().splitlines()]
            per_fold.append(max(h["val_macro_f1"] for h in hist if h["epoch"] <= r["epoch"]))
        assert r[tune.METRIC] == pytest.approx(sum(per_fold) / 2)
    summary = json.loads((run / "cv.json").read_text())  # the trial ends like trainer/run.py's cross-validation
    assert good["val_macro_f1"] == pytest.approx(summary["mean"]["val_macro_f1"])
    assert good["val_macro_f1_std"] == pytest.approx(summary["std"]["val_macro_f1"])
    assert good["fold_scores"] == pytest.approx([f["val_macro_f1"] for f in summary["folds"]])
    assert (run / "oof.npz").is_file()


def test_asha_stops_a_weak_cross_validated_trial_on_its_mean(cv_sweep):
    _, by_weights, rows = cv_sweep
    weak = by_weights["[1, 0, 0, 0]"]
    assert weak["status"] == "stopped" and weak["epochs"] == 1, weak
    for i in range(2):  # every fold stopped after the epoch ASHA judged
        assert _epochs(Path(weak["run_dir"]) / f"fold_{i}") == [1]
    assert [r["status"] for r in rows] == ["done", "stopped"]


def test_sweep_table_and_best_yaml_record_the_folds(cv_sweep):
    sweep, by_weights, rows = cv_sweep
    good = by_weights["[1, 5, 5, 5]"]
    table = tune.format_table(rows)
    assert f"{good['val_macro_f1']:.4f} ± {good['val_macro_f1_std']:.4f}" in table
    text = (sweep.dir / "best.yaml").read_text()
    assert "# cross-validated over 2 folds (data.split=kfold, split_seed 0)" in text
    assert str(Path(good["run_dir"]) / "folds.json") in text
    cfg = make_config(sweep.dir / "best.yaml")
    assert (cfg.data.split, cfg.data.num_folds, cfg.data.fold, cfg.data.split_seed) == ("kfold", 2, -1, 0)
