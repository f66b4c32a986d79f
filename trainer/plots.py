"""Figures for TensorBoard and predict: confusion matrix and ethogram (matplotlib, Agg)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

# Okabe & Ito's palette, distinguishable with red-green colour blindness (no red/green pair)
OKABE_ITO = ["#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#F0E442", "#000000"]
BACKGROUND_COLOR = "#DDDDDD"  # light grey: the background class dominates the time line, so it stays quiet
CONFUSION_DPI = 80  # TensorBoard shows images at their pixel size up to its card width (~400 px)
CONFUSION_FONT = 12  # points; at CONFUSION_DPI a digit is ~13 px tall


def behaviour_colors(class_names: list[str], background: str | None = None) -> list[str]:
    """One colour per class: light grey for the background class, Okabe-Ito for the behaviours in order."""
    background = class_names[0] if background is None else background
    out, k = [], 0
    for name in class_names:
        if name == background:
            out.append(BACKGROUND_COLOR)
        else:
            out.append(OKABE_ITO[k % len(OKABE_ITO)])
            k += 1
    return out


def confusion_figure(cm, class_names: list[str], title: str = "val recall % (rows: true)"):
    """Row-normalised confusion matrix, one whole-percent number per cell, legible at TensorBoard's size.

    cm: (C, C) counts, rows = true, columns = predicted. Each row's frame count goes in its label;
    above 10 classes the cells carry colour only (the numbers would not fit).
    """
    cm = np.asarray(cm, dtype=np.float64)
    C = len(class_names)
    support = cm.sum(axis=1)
    norm = cm / np.maximum(support[:, None], 1)
    side = min(6.0, 1.0 + 0.55 * C)  # inches; at CONFUSION_DPI 4 classes give ~ 300 x 320 px
    fig, ax = plt.subplots(figsize=(side + 1.4, side + 1.0), dpi=CONFUSION_DPI)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    rows = [f"{c} ({int(n)})" for c, n in zip(class_names, support)]
    ax.set_xticks(range(C), class_names, rotation=40, ha="right", fontsize=CONFUSION_FONT - 1)
    ax.set_yticks(range(C), rows, fontsize=CONFUSION_FONT - 1)
    ax.set_xlabel("predicted", fontsize=CONFUSION_FONT)
    if C <= 10:
        for i in range(C):
            for j in range(C):
                ax.text(j, i, f"{100 * norm[i, j]:.0f}", ha="center", va="center", fontsize=CONFUSION_FONT,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title, fontsize=CONFUSION_FONT)
    fig.tight_layout()
    return fig


def ethogram_figure(tracks: list[tuple[str, np.ndarray, np.ndarray | None]], class_names: list[str], fps: float,
                    background: str | None = None):
    """Behaviour over time: per track one row of predictions and, if given, one row of truth.

    tracks: [(label, pred (T,), true (T,) or None)]; -1 in truth = unlabelled (white).
    background: the background class (light grey); default the first class.
    """
    colors = np.array([matplotlib.colors.to_rgba(c) for c in behaviour_colors(class_names, background)])
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
