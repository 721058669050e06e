"""Pictures of a run, as PNG files (SPEC S4, C11).

* learning curves: loss and accuracy per epoch (training, validation, test);
* a grid of misclassified test images, each labelled ``true -> predicted``;
* the confusion matrix of the test set;
* the kernels of a conv layer (first-layer filters).

Every picture is written atomically (to a temporary file, then renamed). matplotlib is
imported lazily with the Agg backend, so nothing here needs a screen.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import torch

from descend.io import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def learning_curves(history: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Loss (left) and accuracy (right) per epoch from the Trainer's history."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, label in (("train_loss", "training"), ("val_loss", "validation"), ("test_loss", "test")):
        if history and key in history[0]:
            ax_loss.plot(epochs, [h[key] for h in history], marker="o", ms=3, label=label)
    ax_loss.set(xlabel="epoch", ylabel="loss", yscale="log", title="loss")
    for key, label in (("val_accuracy", "validation"), ("test_accuracy", "test")):
        if history and key in history[0]:
            ax_acc.plot(epochs, [100 * h[key] for h in history], marker="o", ms=3, label=label)
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def misclassified(
    images: torch.Tensor,
    labels: torch.Tensor,
    predictions: torch.Tensor,
    path: str | Path,
    classes: Sequence[str] = (),
    limit: int = 64,
) -> Path:
    """A grid of the first ``limit`` misclassified images, titled ``true -> predicted``."""
    plt = _pyplot()
    wrong = (predictions != labels).nonzero().flatten()[:limit]
    cols = 8
    rows = max(1, math.ceil(len(wrong) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.2, rows * 1.35), squeeze=False)
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
    return _save(fig, path)


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts ``m[true, predicted]`` as an integer tensor (num_classes, num_classes)."""
    flat = labels.long() * num_classes + predictions.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def confusion_matrix_plot(
    labels: torch.Tensor, predictions: torch.Tensor, path: str | Path, classes: Sequence[str] = ()
) -> Path:
    """The confusion matrix as a heat map with the counts written in each cell."""
    plt = _pyplot()
    k = len(classes) or int(max(labels.max(), predictions.max())) + 1
    m = confusion_matrix(labels, predictions, k)
    fig, ax = plt.subplots(figsize=(0.55 * k + 2, 0.55 * k + 1.5))
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
    return _save(fig, path)


def filters(weight: torch.Tensor, path: str | Path, title: str = "filters") -> Path:
    """The kernels of a conv layer, weight (maps, channels, k, k), one tile per map.

    Multi-channel kernels show their mean over input channels; each tile is scaled to
    its own range, so its pattern, not its size, is visible.
    """
    plt = _pyplot()
    w = weight.detach().float().cpu()
    w = w.mean(dim=1) if w.ndim == 4 else w
    cols = min(10, len(w))
    rows = math.ceil(len(w) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9, rows * 0.9), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, k in zip(axes.flat, w):
        ax.imshow(k.numpy(), cmap="gray", interpolation="nearest")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)
