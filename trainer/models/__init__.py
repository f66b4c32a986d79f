"""Model registry: name -> `ModelSpec` ("module:Class" + the config keys it reads + facts).

Each model maps (B, T, F) features to (B, T, C) logits. The registry imports no model
module (and so no torch): config validation reads the names, `build_model` imports the one
class it builds. A spec declares exactly the config keys its constructor takes besides
`input_dim` and `num_classes`; `build_model` passes those and nothing else, so a model never
sees the whole config, and a declared key that is not a config field fails at registration.
Add a model: one module + one `MODELS` line (docs/contributing.md).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from trainer.config import all_keys
from trainer.hints import did_you_mean

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry.

    target: "package.module:Class"; the class takes (input_dim=, num_classes=, **keys).
    keys: config fields passed to the constructor under their own names.
    recurrent: has an LSTM/GRU; bf16 autocast of those on a CPU without native bf16 is ~30x
        slower than fp32, so the precision policy falls back to fp32 there.
    trainer: "module:function" with train()'s signature for models fitted outside the
        Accelerate loop (gbdt); "" = the Accelerate loop.
    """

    target: str
    keys: tuple[str, ...] = ()
    recurrent: bool = False
    trainer: str = ""

    def __post_init__(self):
        valid = all_keys()
        for key in self.keys:
            if key not in valid:  # programming error in a registry line: loud, at import
                raise ValueError(f"model '{self.target}' declares config key '{key}', which is not a field of "
                                 f"trainer.config.Config{did_you_mean(key, valid)}")


MODELS: dict[str, ModelSpec] = {
    "conv_bilstm": ModelSpec("trainer.models.conv_bilstm:ConvBiLSTM", recurrent=True,
                             keys=("conv_channels", "conv_kernel", "lstm_hidden", "lstm_layers", "dropout")),
    "transformer": ModelSpec("trainer.models.transformer:TransformerTagger",
                             keys=("hidden_dim", "num_layers", "num_heads", "dropout")),
    # baseline without temporal context
    "per_frame_mlp": ModelSpec("trainer.models.per_frame_mlp:PerFrameMLP", keys=("hidden_dim", "num_layers", "dropout")),
    # dilated temporal convolutions + BiGRU: long context on real data
    "tcn_bigru": ModelSpec("trainer.models.tcn_bigru:TCNBiGRU", recurrent=True,
                           keys=("hidden_dim", "num_layers", "conv_kernel", "lstm_hidden", "dropout")),
    # per-frame gradient-boosted trees (context via rolling_stats features), fitted by scikit-learn
    "gbdt": ModelSpec("trainer.models.gbdt:GBDTModel", trainer="trainer.gbdt:train_gbdt"),
}


def _load(target: str):
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def model_class(model_type: str) -> type[nn.Module]:
    """The class registered as `model_type` (imports its module)."""
    return _load(MODELS[model_type].target)


def model_trainer(model_type: str) -> Callable | None:
    """The training entry of a model fitted outside the Accelerate loop, else None."""
    trainer = MODELS[model_type].trainer
    return _load(trainer) if trainer else None


def is_recurrent(model_type: str) -> bool:
    """Whether `model_type` has recurrent layers (the bf16-on-CPU precision policy asks)."""
    return MODELS[model_type].recurrent


def build_model(cfg, *, input_dim: int, num_classes: int) -> nn.Module:
    """Instantiate `cfg.model_type` with exactly the config keys its spec declares."""
    spec = MODELS[cfg.model_type]
    return model_class(cfg.model_type)(input_dim=input_dim, num_classes=num_classes,
                                       **{k: getattr(cfg, k) for k in spec.keys})


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
