"""Dilated temporal-conv network + BiGRU tagger: seconds of context at the cost of a small model.

Real recordings need long context (a social bout is judged over many seconds, not the
2 s of a 64-frame window). Stacked residual convolutions with dilations 1, 2, 4, ...
(the action-segmentation TCN idea) see ~2^num_layers frames per side cheaply; a BiGRU on
top carries the context across the whole window; a per-frame linear head gives logits.
"""

from __future__ import annotations

import torch
from torch import nn

# helpers


class DilatedResidual(nn.Module):
    """x + Dropout(Conv1x1(ReLU(Conv_k,dilated(x)))) over (B, C, T); same length in and out."""

    def __init__(self, channels: int, kernel: int, dilation: int, dropout: float):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel, padding=dilation * (kernel // 2), dilation=dilation)
        self.mix = nn.Conv1d(channels, channels, 1)
        self.norm = nn.BatchNorm1d(channels)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(self.mix(torch.relu(self.norm(self.conv(x)))))


# classes


class TCNBiGRU(nn.Module):
    """(B, T, F) features -> (B, T, C) per-frame logits.

    hidden_dim: width of the conv stack; num_layers: dilated blocks (dilation 2^i, receptive
    field ~ (conv_kernel - 1) * (2^num_layers - 1) + 1 frames); lstm_hidden: GRU size per
    direction (0 = no recurrent layer).
    """

    def __init__(
        self,
        *,
        input_dim: int,
        num_classes: int,
        hidden_dim: int = 96,
        num_layers: int = 6,
        conv_kernel: int = 3,
        lstm_hidden: int = 64,
        dropout: float = 0.2,
    ):
        super().__init__()
        self.proj = nn.Conv1d(input_dim, hidden_dim, 1)
        self.blocks = nn.Sequential(*[DilatedResidual(hidden_dim, conv_kernel, 2**i, dropout) for i in range(num_layers)])
        self.gru = nn.GRU(hidden_dim, lstm_hidden, batch_first=True, bidirectional=True) if lstm_hidden else None
        out = 2 * lstm_hidden if lstm_hidden else hidden_dim
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(out, num_classes)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, T, F); padded frames are masked out of the loss, so `valid` is not needed here
        h = self.blocks(self.proj(x.transpose(1, 2))).transpose(1, 2)  # (B, T, hidden)
        if self.gru is not None:
            h, _ = self.gru(h.contiguous())  # (B, T, 2 * lstm_hidden)
        return self.head(self.drop(h))  # (B, T, classes)
