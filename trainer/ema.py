"""Exponential moving average (EMA) of a model's weights, kept beside the trained weights.

On real recordings validation scores swing from epoch to epoch (the rare class most: a
rat46 fold's aggression F1 went 0.67 -> 0.32 -> 0.58 over three epochs at a constant
recipe). Evaluating and predicting with an average of the recent weights removes most of
that noise at the cost of one copy of the parameters. The trained (raw) weights stay what
the optimizer steps and what a resumed run continues from; the average is written next to
them as `ema.safetensors`, which predict/evaluate prefer when present.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

FILE = "ema.safetensors"


class WeightEMA:
    """shadow <- decay * shadow + (1 - decay) * weights, after every optimizer step.

    Floating-point parameters and buffers are averaged; integer buffers (BatchNorm's step
    counter) are copied. `decay` near 1 averages over ~1 / (1 - decay) steps.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = float(decay)
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if s.is_floating_point():
                s.mul_(self.decay).add_(v.detach().to(s.dtype), alpha=1.0 - self.decay)
            else:
                s.copy_(v)

    @contextmanager
    def applied(self, model: torch.nn.Module):
        """Temporarily load the averaged weights into `model` (for validation), then restore."""
        raw = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.shadow)
        try:
            yield model
        finally:
            model.load_state_dict(raw)

    def save(self, directory: Path) -> None:
        save_file({k: v.contiguous().cpu() for k, v in self.shadow.items()}, str(Path(directory) / FILE))

    def load(self, directory: Path) -> None:
        for k, v in load_file(str(Path(directory) / FILE)).items():
            self.shadow[k].copy_(v)
