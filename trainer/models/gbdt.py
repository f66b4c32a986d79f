"""Per-frame gradient-boosted trees as plain arrays, with their own vectorised predictor.

The trees are fitted by scikit-learn (trainer/gbdt.py exports them here); what is stored
and predicted with is only arrays, so a checkpoint is safetensors + JSON (never pickle)
and predict/evaluate need no scikit-learn. `GBDTModel` wraps the arrays as an nn.Module
with the networks' interface, (B, T, F) features -> (B, T, C) logits, so the whole
predict / evaluate / stitching path is shared with the networks.

Arrays (N nodes of all trees concatenated, I iterations, K trees per iteration):
    feature (N,) int64, threshold (N,) float64, left/right (N,) int64 (global node ids),
    missing_left (N,) bool (where NaN goes), is_leaf (N,) bool, value (N,) float64 (leaf
    output, learning rate included), roots (I, K) int64, baseline (K,) float64,
    classes (K',) int64 = class index of each model output (K' = K, or 2 when K = 1, binary).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

ABSENT_LOGIT = -1e4  # classes never seen in training: finite, so softmax and losses stay finite

# ----------------------------------------------------------------------------- helpers


@dataclass
class TreeEnsemble:
    """Boosted trees as flat node arrays (see the module docstring) and their predictor."""

    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    missing_left: np.ndarray
    is_leaf: np.ndarray
    value: np.ndarray
    roots: np.ndarray
    baseline: np.ndarray
    classes: np.ndarray

    ARRAYS = ("feature", "threshold", "left", "right", "missing_left", "is_leaf", "value", "roots", "baseline",
              "classes")

    @property
    def num_iterations(self) -> int:
        return int(self.roots.shape[0])

    def raw_predict(self, X: np.ndarray, start: int = 0, stop: int | None = None, *,
                    chunk_cells: int = 1 << 21) -> np.ndarray:
        """Summed leaf values of iterations [start, stop) for X (N, F) -> (N, K) float64.

        The baseline is not included (add `baseline` once). NaN features follow
        `missing_left`, like scikit-learn. Vectorised over (rows x trees): every unfinished
        (row, tree) cell advances one level per step, and cells that reached a leaf drop out.
        """
        roots = self.roots[start:stop]
        N, K = len(X), self.roots.shape[1]
        out = np.zeros((N, K))
        if roots.size == 0 or N == 0:
            return out
        flat = roots.reshape(-1)
        rows = max(1, chunk_cells // flat.size)
        for r0 in range(0, N, rows):
            Xc = np.asarray(X[r0:r0 + rows], dtype=np.float64)  # per chunk: a whole video in float64 is large
            node = np.tile(flat, len(Xc))  # cell i = (row i // trees, tree i % trees)
            row = np.repeat(np.arange(len(Xc)), flat.size)
            cells = np.flatnonzero(~self.is_leaf[node])
            while cells.size:
                nd = node[cells]
                x = Xc[row[cells], self.feature[nd]]
                go_left = np.where(np.isnan(x), self.missing_left[nd], x <= self.threshold[nd])
                nd = np.where(go_left, self.left[nd], self.right[nd])
                node[cells] = nd
                cells = cells[~self.is_leaf[nd]]
            out[r0:r0 + rows] = self.value[node].reshape(len(Xc), -1, K).sum(axis=1)
        return out

    def logits(self, X: np.ndarray, num_classes: int, stop: int | None = None) -> np.ndarray:
        """(N, F) -> (N, num_classes) float64 logits whose softmax is the predicted probability."""
        return self.to_logits(self.raw_predict(X, 0, stop) + self.baseline, num_classes)

    def to_logits(self, raw: np.ndarray, num_classes: int) -> np.ndarray:
        """Raw model outputs (N, K) incl. baseline -> (N, num_classes) logits.

        Binary models have one output r (log-odds of classes[1]): logits (0, r). Classes
        absent from training get ABSENT_LOGIT.
        """
        if raw.shape[1] == 1:
            raw = np.concatenate([np.zeros_like(raw), raw], axis=1)
        out = np.full((len(raw), num_classes), ABSENT_LOGIT)
        out[:, self.classes] = raw
        return out

    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(np.ascontiguousarray(getattr(self, k))) for k in self.ARRAYS}

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor]) -> TreeEnsemble:
        return cls(**{k: t[k].cpu().numpy() for k in cls.ARRAYS})


# ----------------------------------------------------------------------------- classes


class GBDTModel(nn.Module):
    """Tree arrays as buffers; forward(x (B, T, F), valid) -> (B, T, C) logits, frame by frame.

    Built empty (the tree count is only known after fitting); `load_state_dict` takes the
    arrays at whatever size the checkpoint has. Prediction runs the numpy TreeEnsemble on
    the CPU in float64, exactly like scikit-learn.
    """

    def __init__(self, *, input_dim: int, num_classes: int):
        super().__init__()
        self.input_dim, self.num_classes = input_dim, num_classes
        for k in TreeEnsemble.ARRAYS:
            self.register_buffer(k, torch.zeros(0))
        self._ensemble: TreeEnsemble | None = None

    def set_ensemble(self, ens: TreeEnsemble) -> GBDTModel:
        for k, v in ens.tensors().items():
            setattr(self, k, v)
        self._ensemble = ens
        return self

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        found = {k: state_dict[prefix + k] for k in TreeEnsemble.ARRAYS if prefix + k in state_dict}
        missing_keys += [prefix + k for k in TreeEnsemble.ARRAYS if k not in found]
        if len(found) == len(TreeEnsemble.ARRAYS):
            self.set_ensemble(TreeEnsemble.from_tensors(found))

    def ensemble(self) -> TreeEnsemble:
        if self._ensemble is None:
            if self.roots.ndim != 2:
                raise RuntimeError("GBDTModel has no trees yet: fit it (trainer/gbdt.py) or load a checkpoint")
            self._ensemble = TreeEnsemble.from_tensors({k: getattr(self, k) for k in TreeEnsemble.ARRAYS})
        return self._ensemble

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        B, T, F = x.shape  # (B, T, F) -> (B, T, C)
        flat = x.detach().reshape(B * T, F).to("cpu", torch.float64).numpy()
        logits = self.ensemble().logits(flat, self.num_classes)
        return torch.from_numpy(logits).to(device=x.device, dtype=torch.float32).reshape(B, T, -1)
