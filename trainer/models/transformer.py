"""Transformer encoder tagger (seed V3): projection, sinusoidal positions, encoder, per-frame head."""

from __future__ import annotations

import math

import torch
from torch import nn

MAX_LEN = 4096  # frames the positional table is built for (forward extends it for longer windows)

# helpers


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """(length, dim) fixed sin/cos position encoding (Vaswani et al.)."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div[: dim // 2])
    return pe


# classes


class TransformerTagger(nn.Module):
    """(B, T, F) features -> (B, T, C) per-frame logits.

    hidden_dim (d), num_layers, num_heads as in seed V3 (256, 4, 8); feed-forward 4d.
    Padded frames (valid == False) are hidden from attention.
    """

    def __init__(
        self,
        *,
        input_dim: int,
        num_classes: int,
        hidden_dim: int = 256,
        num_layers: int = 4,
        num_heads: int = 8,
        dropout: float = 0.1,
    ):
        super().__init__()
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim {hidden_dim} must be divisible by num_heads {num_heads}")
        self.proj = nn.Linear(input_dim, hidden_dim)
        self.register_buffer("pe", sinusoidal_positions(MAX_LEN, hidden_dim), persistent=False)
        layer = nn.TransformerEncoderLayer(
            hidden_dim, num_heads, dim_feedforward=4 * hidden_dim, dropout=dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden_dim)
        self.head = nn.Linear(hidden_dim, num_classes)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        T = x.shape[1]
        if T > self.pe.shape[0]:
            self.pe = sinusoidal_positions(T, self.pe.shape[1]).to(self.pe)
        h = self.proj(x) + self.pe[:T]  # (B, T, d)
        pad = None if valid is None else ~valid.bool()
        h = self.encoder(h, src_key_padding_mask=pad)
        return self.head(self.norm(h))  # (B, T, classes)
