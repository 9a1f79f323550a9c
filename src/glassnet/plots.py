"""Training curves and a confusion matrix as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: works without a display
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: Sequence[dict[str, float]], path: str | Path) -> None:
    """Loss and accuracy per epoch, training and validation, side by side."""
    plt = _pyplot()
    epochs = [record["epoch"] for record in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, metric in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.plot(epochs, [r[f"train_{metric}"] for r in history], "o-", label="train")
        if any(r[f"val_{metric}"] is not None for r in history):  # None: no validation set
            values = [np.nan if r[f"val_{metric}"] is None else r[f"val_{metric}"] for r in history]
            ax.plot(epochs, values, "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    ax_loss.set_title("Cross-entropy loss")
    ax_acc.set_title("Accuracy")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(matrix: np.ndarray, classes: Sequence[str], path: str | Path) -> None:
    """Counts of (true class, predicted class), with the per-class accuracy on each row."""
    plt = _pyplot()
    matrix = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(8, 7), constrained_layout=True)
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, shrink=0.8)
    ticks = np.arange(len(classes))
    ax.set_xticks(ticks, classes, rotation=45, ha="right")
    rows = matrix.sum(axis=1)
    accuracy = matrix.diagonal() / np.maximum(rows, 1)
    ax.set_yticks(ticks, [f"{name} ({a:.0%})" for name, a in zip(classes, accuracy, strict=True)])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (per-class accuracy)")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), count in np.ndenumerate(matrix):
        color = "white" if count > threshold else "black"
        ax.text(j, i, str(count), ha="center", va="center", fontsize=7, color=color)
    ax.set_title(f"Confusion matrix (accuracy {matrix.trace() / max(matrix.sum(), 1):.2%})")
    fig.savefig(path, dpi=100)
    plt.close(fig)
