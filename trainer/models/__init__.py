"""Model registry: name -> builder. Each model maps (B, T, F) features to (B, T, C) logits.

Builders take explicit keyword arguments; `build_model(cfg, input_dim, num_classes)` picks
the ones a model needs from the config, so models never see the whole config.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable

from torch import nn

from trainer.models.conv_bilstm import ConvBiLSTM
from trainer.models.gbdt import GBDTModel
from trainer.models.per_frame_mlp import PerFrameMLP
from trainer.models.tcn_bigru import TCNBiGRU
from trainer.models.transformer import TransformerTagger

MODELS: dict[str, type[nn.Module]] = {
    "conv_bilstm": ConvBiLSTM,
    "transformer": TransformerTagger,
    "per_frame_mlp": PerFrameMLP,  # baseline without temporal context
    "tcn_bigru": TCNBiGRU,  # dilated temporal convolutions + BiGRU: long context on real data
    "gbdt": GBDTModel,  # per-frame gradient-boosted trees (context via rolling_stats features)
}

# models not trained by the Accelerate loop: name -> "module:function" with train()'s signature
TRAINERS: dict[str, str] = {"gbdt": "trainer.gbdt:train_gbdt"}


def model_trainer(model_type: str) -> Callable | None:
    """The training entry of a model fitted outside the Accelerate loop, else None."""
    if model_type not in TRAINERS:
        return None
    module, fn = TRAINERS[model_type].split(":")
    return getattr(importlib.import_module(module), fn)


def build_model(cfg, *, input_dim: int, num_classes: int) -> nn.Module:
    """Instantiate `cfg.model_type` with the constructor arguments it declares, taken from `cfg`."""
    cls = MODELS[cfg.model_type]
    names = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "input_dim", "num_classes")]
    kwargs = {n: getattr(cfg, n) for n in names if hasattr(cfg, n)}  # others keep their defaults
    return cls(input_dim=input_dim, num_classes=num_classes, **kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
