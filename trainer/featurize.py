"""Compute features once into the on-disk feature store (trainer/store.py).

    python -m trainer.featurize --config configs/x.yaml [key=value ...]   # build what is missing
    python -m trainer.featurize --list [feature_store=DIR]                # what the store holds
    python -m trainer.featurize --prune --older-than 30 [feature_store=DIR]

Training, tune.py, predict and evaluate build missing entries themselves; running this first
just moves the work (over `featurize_workers` processes) out of the first run; for a config
with one train/val split it also fits and stores the training set's statistics (mean/std,
PCA), so the first run starts as warm as the second. `--prune`
always removes entries left incomplete by killed writers (older than an hour), plus entries
older than `--older-than` days, or everything with `--all`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from trainer.config import ConfigError, make_config
from trainer.data.recording import DataError
from trainer.store import FeatureStore, featurised_ahead, store_root

log = logging.getLogger("trainer.featurize")


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GB"


def listing_text(store: FeatureStore) -> str:
    rows = store.listing()
    lines = [f"{'kind':<9}{'key':<14}{'size':>10}  {'age':>8}  status      contents"]
    for e in rows:
        status = "complete" if e["complete"] else "INCOMPLETE"
        lines.append(f"{e['kind']:<9}{e['key'][:12]:<14}{_size(e['bytes']):>10}  {e['age_s'] / 86400:>7.1f}d  "
                     f"{status:<10}  {e['video']}")
    total = sum(e["bytes"] for e in rows)
    n_feat = sum(e["kind"] == "features" and e["complete"] for e in rows)
    n_sets = sum(e["kind"] == "dataset" and e["complete"] for e in rows)
    n_bad = sum(not e["complete"] for e in rows)
    lines.append(f"{store.root}: {n_feat} feature entries, {n_sets} data sets, {n_bad} incomplete, {_size(total)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = argparse.ArgumentParser(prog="python -m trainer.featurize", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="YAML file (as for trainer/run.py)")
    p.add_argument("--list", action="store_true", help="show the store's entries and sizes")
    p.add_argument("--prune", action="store_true", help="delete incomplete entries (and old ones, see below)")
    p.add_argument("--older-than", type=float, help="with --prune: also entries older than this many days")
    p.add_argument("--all", action="store_true", help="with --prune: delete every entry")
    p.add_argument("overrides", nargs="*", help="key=value config overrides (feature_store=DIR, featurize_workers=N)")
    args = p.parse_args(argv)
    try:
        cfg = make_config(args.config, args.overrides)
        root = store_root(cfg)
        if root is None:
            raise ConfigError("feature_store=none: there is no store to build, list or prune")
        if args.list or args.prune:
            if not root.exists():
                raise DataError(f"feature store '{root}' does not exist (set feature_store=DIR)")
            store = FeatureStore(root, create=False)
            if args.prune:
                gone = store.prune(older_than_s=None if args.older_than is None else args.older_than * 86400,
                                   everything=args.all)
                log.info("pruned %d entr%s (%s)", len(gone), "y" if len(gone) == 1 else "ies",
                         _size(sum(e["bytes"] for e in gone)))
            if args.list:
                sys.stdout.write(listing_text(store) + "\n")  # the command's output (pipeable), not a log line
            return 0
        t0 = time.perf_counter()
        feats = featurised_ahead(cfg, names=cfg.feature_names(), params=cfg.feature_params())
        if feats.val and feats.store is not None:
            # one train/val split: its statistics (mean/std, PCA) are fixed too, so the first
            # training run starts warm (cross-validation fits each fold's in its own run)
            feats.fit()
        n = len(feats.train) + len(feats.val)
        frames = sum(v.num_frames * len(v.pairs) for v in feats.train + feats.val)
        log.info("feature store %s: %d videos, %d pair-frames ready (%d built, %d reused) in %.1f s",
                 feats.store.root, n, frames, feats.store.misses, feats.store.hits, time.perf_counter() - t0)
    except (ConfigError, DataError) as e:
        log.error("error: %s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
