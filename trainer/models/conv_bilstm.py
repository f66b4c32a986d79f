"""Conv1D + BiLSTM tagger (seed V4): local motion filters, then long-range context."""

from __future__ import annotations

import torch
from torch import nn

# helpers


def conv_block(c_in: int, c_out: int, kernel: int, dropout: float) -> nn.Sequential:
    """Conv1d (same padding) + BatchNorm + ReLU + Dropout, over (B, C, T)."""
    return nn.Sequential(
        nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2),
        nn.BatchNorm1d(c_out),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
    )


# classes


class ConvBiLSTM(nn.Module):
    """(B, T, F) features -> (B, T, C) per-frame logits.

    conv_channels: widths of the Conv1d blocks (seed: 64, 128, 256).
    lstm_hidden, lstm_layers: bidirectional LSTM size (seed: 256 x 2).
    With the seed sizes and F = 28 this has ~2.76M parameters (not the seed's "~2.1M").
    """

    def __init__(
        self,
        *,
        input_dim: int,
        num_classes: int,
        conv_channels: list[int] = (64, 128, 256),
        conv_kernel: int = 3,
        lstm_hidden: int = 256,
        lstm_layers: int = 2,
        dropout: float = 0.3,
    ):
        super().__init__()
        widths = [input_dim, *conv_channels]
        self.convs = nn.Sequential(*[conv_block(a, b, conv_kernel, dropout) for a, b in zip(widths, widths[1:])])
        self.lstm = nn.LSTM(
            widths[-1],
            lstm_hidden,
            num_layers=lstm_layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if lstm_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * lstm_hidden, num_classes)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, T, F); valid (B, T) is unused: padded frames are masked out of the loss
        h = self.convs(x.transpose(1, 2)).transpose(1, 2)  # (B, T, C_last)
        h, _ = self.lstm(h.contiguous())  # (B, T, 2H); unpacked input keeps the cuDNN fast path
        return self.head(self.dropout(h))  # (B, T, classes)
