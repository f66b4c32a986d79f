"""Figures for TensorBoard and predict: confusion matrix and ethogram (matplotlib, Agg)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def confusion_figure(cm, class_names: list[str], title: str = "val confusion (row-normalised)"):
    """Row-normalised confusion matrix with raw counts in each cell."""
    cm = np.asarray(cm, dtype=np.float64)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.2 * len(class_names) + 2, 1.1 * len(class_names) + 1.5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(class_names)):
        for j in range(len(class_names)):
            ax.text(j, i, f"{norm[i, j]:.2f}\n({int(cm[i, j])})", ha="center", va="center",
                    color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def ethogram_figure(tracks: list[tuple[str, np.ndarray, np.ndarray | None]], class_names: list[str], fps: float):
    """Behaviour over time: per track one row of predictions and, if given, one row of truth.

    tracks: [(label, pred (T,), true (T,) or None)]; -1 in truth = unlabelled (white).
    """
    cmap = plt.get_cmap("tab10")
    colors = np.array([cmap(i % 10) for i in range(len(class_names))])
    rows = []
    for name, pred, true in tracks:
        rows.append((f"{name} pred", pred))
        if true is not None:
            rows.append((f"{name} true", true))
    fig, axes = plt.subplots(len(rows), 1, figsize=(14, 0.45 * len(rows) + 1.2), sharex=True, squeeze=False)
    for ax, (name, seq) in zip(axes[:, 0], rows):
        seq = np.asarray(seq)
        img = np.ones((1, len(seq), 4))
        ok = seq >= 0
        img[0, ok] = colors[seq[ok]]
        ax.imshow(img, aspect="auto", interpolation="nearest", extent=(0, len(seq) / fps, 0, 1))
        ax.set_yticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    axes[-1, 0].set_xlabel("time (s)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[i]) for i in range(len(class_names))]
    fig.legend(handles, class_names, loc="upper center", ncol=len(class_names), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return fig
