"""The Accelerate loop: `train_one_epoch` and `evaluate`, each returning a metric dict.

Everything around them (run directory, checkpoints, early stopping, logging) lives in
trainer/run.py and the modules it calls (build.py, runfiles.py, report.py); these two
functions only do forward/backward/step and scoring.
"""

from __future__ import annotations

import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from trainer.data.recording import UNLABELLED
from trainer.data.windows import Sequence, Stitcher
from trainer.metrics import confusion_matrix, scores_from_confusion


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN/inf; the run stops and keeps its last good checkpoint."""

    def __init__(self, epoch: int, step: int, value: float):
        self.epoch, self.step, self.value = epoch, step, value
        super().__init__(
            f"training loss became {value} at epoch {epoch}, step {step}; stopped without saving. "
            "Lower learning_rate, set grad_clip, or use mixed_precision=no"
        )

    def __reduce__(self):  # pickle/copy rebuild from (epoch, step, value): Ray ships errors between processes
        return type(self), (self.epoch, self.step, self.value)


# ----------------------------------------------------------------------------- loss


def frame_loss(
    logits: torch.Tensor,
    y: torch.Tensor,
    class_mask: torch.Tensor | None = None,
    *,
    weight: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    focal_gamma: float = 0.0,
    soft_f1: float = 0.0,
) -> torch.Tensor:
    """Weighted per-frame cross entropy (focal when focal_gamma > 0), plus soft_f1 x (1 - soft macro F1).

    logits (B, T, C); y (B, T) with -1 = unlabelled/padding (ignored); class_mask (B, C)
    bool = classes annotated for the window's pair: the others are removed from the softmax,
    so an unannotated behaviour is never treated as a negative. Returns the mean over
    labelled frames weighted by weight[y] (like F.cross_entropy's weighted mean).
    soft_f1 > 0 adds the batch's differentiable macro F1 loss (`soft_macro_f1_loss`), the
    score itself: it counts a rare class as much as a common one.
    """
    logits = logits.float()
    C = logits.shape[-1]
    if class_mask is not None:
        logits = logits.masked_fill(~class_mask.bool()[:, None, :], -1e4)
    logp = F.log_softmax(logits, dim=-1).reshape(-1, C)
    yy = y.reshape(-1)
    valid = yy != UNLABELLED
    if not valid.any():
        return logits.sum() * 0.0  # keeps the graph (and DDP) alive for all-unlabelled batches
    logp, yy = logp[valid], yy[valid]
    nll = -logp.gather(1, yy[:, None]).squeeze(1)
    if label_smoothing > 0:
        allowed = torch.ones_like(logp, dtype=torch.bool)
        if class_mask is not None:
            allowed = class_mask.bool()[:, None, :].expand(-1, y.shape[1], -1).reshape(-1, C)[valid]
        smooth = -(logp * allowed).sum(1) / allowed.sum(1)
        nll = (1 - label_smoothing) * nll + label_smoothing * smooth
    if focal_gamma > 0:
        pt = torch.exp(-nll.detach()).clamp(max=1.0)
        nll = (1 - pt) ** focal_gamma * nll
    w = weight[yy] if weight is not None else torch.ones_like(nll)
    loss = (w * nll).sum() / w.sum().clamp_min(1e-12)
    if soft_f1 > 0:
        loss = loss + soft_f1 * soft_macro_f1_loss(logp.exp(), yy)
    return loss


def soft_macro_f1_loss(probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """1 - the mean over behaviours of 2 TP / (2 TP + FP + FN), counted with probabilities.

    probs (N, C) of labelled frames, y (N,) their classes. Class 0 (the background) is left out
    like in the project's macro F1; so are behaviours with no frame in the batch (their F1 would
    only push their probability to 0). Returns 0 when the batch holds no behaviour frame.
    """
    onehot = F.one_hot(y, probs.shape[1]).to(probs.dtype)
    tp = (probs * onehot).sum(0)
    fp = (probs * (1 - onehot)).sum(0)
    fn = ((1 - probs) * onehot).sum(0)
    f1 = 2 * tp / (2 * tp + fp + fn).clamp_min(1e-6)
    present = onehot.sum(0) > 0
    present[0] = False
    if not present.any():
        return probs.sum() * 0.0
    return 1 - f1[present].mean()


def mixup(batch: dict, alpha: float, generator: torch.Generator) -> tuple[dict, dict | None, float]:
    """Mix each window with another of the batch: x = lam x + (1 - lam) x[perm]."""
    if alpha <= 0:
        return batch, None, 1.0
    lam = float(np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=generator))).beta(alpha, alpha))
    perm = torch.randperm(batch["x"].shape[0], generator=generator).to(batch["x"].device)
    mixed = dict(batch, x=lam * batch["x"] + (1 - lam) * batch["x"][perm])
    other = {"y": batch["y"][perm], "class_mask": batch["class_mask"][perm]}
    return mixed, other, lam


# ----------------------------------------------------------------------------- loop


def _bars_off(accelerator) -> bool:
    """Progress bars on the local main process, on a terminal only: redirected to a file or a CI log,
    every refresh would be a line of its own (the per-epoch summary lines are logged either way).
    TQDM_DISABLE=1 (e.g. Ray Tune trials) hides them too."""
    return (not accelerator.is_local_main_process or not sys.stderr.isatty()
            or os.environ.get("TQDM_DISABLE", "") not in ("", "0"))


def train_one_epoch(
    model,
    loader,
    optimizer,
    accelerator,
    *,
    epoch: int,
    loss_kwargs: dict,
    grad_clip: float = 0.0,
    step_scheduler=None,
    mixup_alpha: float = 0.0,
    log_every: int = 10,
    global_step: int = 0,
    seed: int = 0,
    total_epochs: int | None = None,
    ema=None,
) -> dict:
    """One pass over `loader`. Returns {"train_loss", "steps", "samples", "time_s", "global_step"}.

    ema: optional trainer.ema.WeightEMA, updated after every optimizer step.

    step_scheduler: a per-optimizer-step LR scheduler (cosine/onecycle/warm-up) or None.
    The loss is checked for NaN/inf every `log_every` steps (one sync) and at the end.
    """
    model.train()
    gen = torch.Generator().manual_seed(seed * 1000 + epoch)
    total = torch.zeros((), device=accelerator.device)
    window = torch.zeros((), device=accelerator.device)
    n_batches, samples, t0 = 0, 0, time.perf_counter()
    bar = tqdm(
        loader, desc=f"epoch {epoch}/{total_epochs or '?'}", leave=False, dynamic_ncols=True, disable=_bars_off(accelerator)
    )
    for step, batch in enumerate(bar):
        batch, other, lam = mixup(batch, mixup_alpha, gen)
        with accelerator.accumulate(model):
            logits = model(batch["x"], batch["valid"])
            loss = frame_loss(logits, batch["y"], batch["class_mask"], **loss_kwargs)
            if other is not None:
                loss = lam * loss + (1 - lam) * frame_loss(logits, other["y"], other["class_mask"], **loss_kwargs)
            accelerator.backward(loss)
            if accelerator.sync_gradients and grad_clip > 0:
                accelerator.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if accelerator.sync_gradients:
                global_step += 1
                if step_scheduler is not None:
                    step_scheduler.step()
                if ema is not None:
                    ema.update(accelerator.unwrap_model(model))
        total += loss.detach()
        window += loss.detach()
        n_batches += 1
        samples += batch["x"].shape[0]
        if (step + 1) % max(1, log_every) == 0:
            mean = accelerator.gather(window[None]).mean().item() / log_every
            if not math.isfinite(mean):
                raise NonFiniteLossError(epoch, step, mean)
            window.zero_()
            bar.set_postfix(loss=f"{mean:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
            # per optimizer step, apart from the per-epoch charts (report.py names the TensorBoard groups)
            accelerator.log({"3_train_step/loss": mean, "3_train_step/lr": optimizer.param_groups[0]["lr"]},
                            step=global_step)
    mean = accelerator.gather(total[None]).mean().item() / max(1, n_batches)
    if not math.isfinite(mean):
        raise NonFiniteLossError(epoch, n_batches - 1, mean)
    return {
        "train_loss": mean,
        "steps": n_batches,
        "samples": samples * accelerator.num_processes,
        "time_s": time.perf_counter() - t0,
        "global_step": global_step,
    }


@torch.no_grad()
def predict_logits(model, loader, accelerator, seqs: list[Sequence], *, num_classes: int, gap: int, length: int,
                   on_done=None):
    """Every frame of every sequence exactly once: per sequence (T, C) logits (overlaps averaged).

    Windows are sharded over processes; `gather_for_metrics` drops the padding duplicates
    Accelerate adds to even out the last batch, so each window is counted once. With
    `on_done(seq_index, logits)` each sequence is handed over as soon as it is complete and
    nothing is returned (memory: the sequences in flight only).
    """
    model.eval()
    expected = loader.dataset.windows_per_sequence() if on_done is not None else None
    stitcher = Stitcher(seqs, num_classes, gap, length, expected=expected, on_done=on_done)
    for batch in tqdm(loader, desc="eval", leave=False, disable=_bars_off(accelerator)):
        logits = model(batch["x"], batch["valid"]).float()
        logits, index = accelerator.gather_for_metrics((logits, batch["index"]))
        stitcher.add(logits.cpu().numpy(), index.cpu().numpy())
    return None if on_done is not None else stitcher.logits()


def masked_argmax(logits: np.ndarray, class_mask: np.ndarray) -> np.ndarray:
    """(T, C) logits -> (T,) class, choosing only among the classes annotated for the pair."""
    return np.where(class_mask[None, :], logits, -np.inf).argmax(axis=1)


def evaluate(
    model, loader, accelerator, seqs: list[Sequence], *, class_names: list[str], background: str, gap: int, length: int
) -> dict:
    """Val loss (unweighted per-frame CE) and frame scores over every val frame once.

    Sequence by sequence: the confusion matrix and the loss sum are accumulated as each
    sequence's windows complete, so memory does not grow with the number of val frames.
    """
    C = len(class_names)
    cm = np.zeros((C, C), dtype=np.int64)
    loss = {"sum": 0.0, "n": 0}

    def done(i: int, lg: np.ndarray) -> None:
        s = seqs[i]
        y = np.array(s.y, dtype=np.int64)  # a copy: stored labels are read-only
        cm[...] += confusion_matrix(y, masked_argmax(lg, s.class_mask), C)
        n = int((y != UNLABELLED).sum())
        if n:
            t = torch.from_numpy(lg).float().masked_fill(~torch.from_numpy(s.class_mask)[None], -1e4)
            loss["sum"] += frame_loss(t[None], torch.from_numpy(y)[None], None).item() * n
            loss["n"] += n

    predict_logits(model, loader, accelerator, seqs, num_classes=C, gap=gap, length=length, on_done=done)
    scores = scores_from_confusion(cm, class_names, background)
    scores["val_loss"] = loss["sum"] / max(loss["n"], 1)
    return scores
