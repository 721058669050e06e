"""Pictures of a run, as PNG files.

* learning curves: loss and accuracy per epoch (training, validation, test);
* a grid of misclassified test images, each labelled ``true -> predicted``;
* the confusion matrix of the test set.

Kernels and feature maps of conv layers are drawn by :mod:`descend.viz`, with the same
two helpers: :func:`figure` (a matplotlib Figure on an Agg canvas, so nothing needs a
screen or pyplot's global state) and :func:`save` (PNG, written atomically).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import torch

from descend.io import atomic_path


def figure(width: float, height: float):
    """A matplotlib Figure on an Agg canvas: no global pyplot state, no display needed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def save(fig, path: str | Path) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return path


def learning_curves_figure(history: Sequence[dict[str, Any]], title: str = ""):
    """Loss (left, log scale) and accuracy (right) per epoch from the Trainer's history,
    with whole-number epoch ticks and a legend naming each split's line."""
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    fig = figure(10, 3.8)
    ax_loss, ax_acc = fig.subplots(1, 2)
    for key, label in (("train_loss", "training"), ("val_loss", "validation"), ("test_loss", "test")):
        if history and key in history[0]:
            ax_loss.plot(epochs, [h[key] for h in history], marker="o", ms=3, label=label)
    ax_loss.set(xlabel="epoch", ylabel="loss", yscale="log", title="loss")
    for key, label in (("train_accuracy", "training"), ("val_accuracy", "validation"), ("test_accuracy", "test")):
        if history and key in history[0]:
            ax_acc.plot(epochs, [100 * h[key] for h in history], marker="o", ms=3, label=label)
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
        else:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes, color="gray")
    if title:
        fig.suptitle(title)
    return fig


def learning_curves(history: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """:func:`learning_curves_figure` written as PNG to ``path``."""
    return save(learning_curves_figure(history, title), path)


def misclassified(
    images: torch.Tensor,
    labels: torch.Tensor,
    predictions: torch.Tensor,
    path: str | Path,
    classes: Sequence[str] = (),
    limit: int = 64,
) -> Path:
    """A grid of the first ``limit`` misclassified images, titled ``true -> predicted``."""
    wrong = (predictions != labels).nonzero().flatten()[:limit]
    cols = 8
    rows = max(1, math.ceil(len(wrong) / cols))
    fig = figure(cols * 1.2, rows * 1.35)
    axes = fig.subplots(rows, cols, squeeze=False)
    name = (lambda c: classes[c]) if classes else str
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong.tolist()):
        img = images[i]
        img = img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)
        ax.imshow(img.numpy(), cmap="gray", interpolation="nearest")
        ax.set_title(f"{name(int(labels[i]))}\u2192{name(int(predictions[i]))}", fontsize=8)
    total = int((predictions != labels).sum())
    fig.suptitle(f"{total} misclassified of {len(labels)} (true\u2192predicted)", fontsize=10)
    return save(fig, path)


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts ``m[true, predicted]`` as an integer tensor (num_classes, num_classes)."""
    flat = labels.long() * num_classes + predictions.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def confusion_matrix_plot(
    labels: torch.Tensor, predictions: torch.Tensor, path: str | Path, classes: Sequence[str] = ()
) -> Path:
    """The confusion matrix as a heat map with the counts written in each cell."""
    k = len(classes) or int(max(labels.max(), predictions.max())) + 1
    m = confusion_matrix(labels, predictions, k)
    fig = figure(0.55 * k + 2, 0.55 * k + 1.5)
    ax = fig.subplots()
    ax.imshow(torch.log1p(m.float()).numpy(), cmap="Blues")
    for t in range(k):
        for p in range(k):
            if m[t, p]:
                ax.text(p, t, str(int(m[t, p])), ha="center", va="center", fontsize=7,
                        color="white" if t == p else "black")
    names = list(classes) or [str(c) for c in range(k)]
    ax.set_xticks(range(k), names, rotation=90 if max(map(len, names)) > 2 else 0)
    ax.set_yticks(range(k), names)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix (test)")
    return save(fig, path)

