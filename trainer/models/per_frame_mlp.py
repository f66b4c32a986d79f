"""Per-frame MLP: the same features, no temporal context (the baseline sequence models must beat)."""

from __future__ import annotations

import torch
from torch import nn


class PerFrameMLP(nn.Module):
    """(B, T, F) -> (B, T, C), each frame classified on its own features only."""

    def __init__(self, *, input_dim: int, num_classes: int, hidden_dim: int = 256, num_layers: int = 2, dropout: float = 0.1):
        super().__init__()
        layers: list[nn.Module] = []
        width = input_dim
        for _ in range(max(1, num_layers)):
            layers += [nn.Linear(width, hidden_dim), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = hidden_dim
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x)
