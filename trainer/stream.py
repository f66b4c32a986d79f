"""A training run as a generator of its per-epoch rows: `train()` in a thread, paused between epochs.

Used where something else decides after every epoch whether the run goes on: a Ray Tune
trial (ASHA), a Modal trial streamed back to the sweep, and cross-validation in lock-step
(trainer/cv.py), which advances k folds one epoch at a time. The trainer thread runs only
while the consumer waits for its next row, so several streams in one process never train
at the same time (Accelerate's per-process state is rebuilt by each train(), see
build.new_accelerator, and the global RNG is re-seeded every epoch).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator


class TrialStopped(Exception):
    """Raised from the epoch hook to end train() once the stream's consumer has gone."""


_END = object()


def epoch_stream(cfg, *, train_fn=None, **train_kwargs) -> Generator[dict, None, dict | None]:
    """Yield train(cfg)'s on_epoch_end rows; the generator's return value is train()'s final dict.

    After each epoch the trainer waits until the consumer asks for the next row; closing the
    generator (ASHA stopping the trial) makes the trainer stop at that point (return value
    None). An error of train() is re-raised in the consumer's thread. `train_kwargs` go to
    train() (e.g. on_checkpoint, recordings).
    """
    if train_fn is None:
        from trainer.run import train as train_fn

    rows: queue.Queue = queue.Queue()
    more = threading.Semaphore(0)
    stop = threading.Event()
    outcome: dict = {}

    def on_epoch_end(row: dict) -> None:
        rows.put(row)
        more.acquire()
        if stop.is_set():
            raise TrialStopped

    def work() -> None:
        try:
            outcome["final"] = train_fn(cfg, on_epoch_end=on_epoch_end, **train_kwargs)
        except BaseException as e:  # re-raised in the consumer's thread below
            outcome["error"] = e
        finally:
            rows.put(_END)

    thread = threading.Thread(target=work, name=f"train-{cfg.name}", daemon=True)
    thread.start()
    try:
        while (row := rows.get()) is not _END:
            yield row
            more.release()
    finally:
        stop.set()
        more.release()
        thread.join()
    error = outcome.get("error")
    if error is not None and not isinstance(error, TrialStopped):
        raise error
    return outcome.get("final")
