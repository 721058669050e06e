"""In-memory data sets: a pair of tensors, and the train/validation/test splits.

Everything descend trains on fits in memory as tensors (all of MNIST as float32 is
220 MB), so a batch is one indexing operation ``x[idx]``, not thousands of
per-sample ``Dataset.__getitem__`` calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from descend.errors import DataError


@dataclass
class TensorPair:
    """Inputs ``x`` (n, ...) and integer targets ``y`` (n, ...), indexed together."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise DataError(f"inputs and targets differ in length: {len(self.x)} vs {len(self.y)}")

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index) -> "TensorPair":
        return TensorPair(self.x[index], self.y[index])

    def to(self, device: torch.device | str) -> "TensorPair":
        return TensorPair(self.x.to(device), self.y.to(device))


@dataclass
class Splits:
    """Training, validation (optional) and test (optional) data of one data set."""

    train: TensorPair
    val: TensorPair | None = None
    test: TensorPair | None = None
    classes: tuple[str, ...] = field(default_factory=tuple)
    name: str = ""

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, e.g. (1, 28, 28)."""
        return tuple(self.train.x.shape[1:])

    @property
    def num_classes(self) -> int:
        if self.classes:
            return len(self.classes)
        return int(self.train.y.max()) + 1

    def limited(self, train: int | None = None, evaluation: int | None = None) -> "Splits":
        """The first ``train`` training and ``evaluation`` validation/test examples (for quick runs)."""

        def cut(pair: TensorPair | None, n: int | None) -> TensorPair | None:
            return pair if pair is None or n is None else pair[:n]

        return Splits(cut(self.train, train), cut(self.val, evaluation), cut(self.test, evaluation), self.classes, self.name)


def check_splits(splits: Splits, source: str, finite: bool = True) -> Splits:
    """Refuse data that would train silently wrong, naming ``source`` and the problem.

    Checked: a non-empty training set; integer labels, 1-D, in ``0..num_classes-1``;
    floating-point inputs without NaN or infinity (``finite=False`` skips this pass
    over the pixels, for inputs finite by construction); one input shape in every split.
    """
    parts = [(name, pair) for name, pair in (("train", splits.train), ("val", splits.val), ("test", splits.test)) if pair is not None]
    if len(splits.train) == 0:
        raise DataError(f"{source}: the training set is empty")
    for name, pair in parts:
        y = pair.y
        if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool or y.ndim != 1:
            raise DataError(
                f"{source}: {name} labels must be a 1-D integer tensor of class indices, got {y.dtype} {tuple(y.shape)}"
            )
    num_classes = len(splits.classes) or 1 + max(int(pair.y.max()) for _, pair in parts if len(pair))
    shape = tuple(splits.train.x.shape[1:])
    for name, pair in parts:
        if tuple(pair.x.shape[1:]) != shape:
            raise DataError(
                f"{source}: {name} inputs have shape {tuple(pair.x.shape[1:])} per example but training inputs "
                f"have {shape}; every split must hold inputs of one shape"
            )
        if not pair.x.is_floating_point():
            raise DataError(f"{source}: {name} inputs have dtype {pair.x.dtype}; expected floating-point pixels")
        # NaN and infinity propagate through a sum; only then (or on overflow) count exactly.
        if finite and not math.isfinite(float(pair.x.sum(dtype=torch.float64))):
            bad = int((~torch.isfinite(pair.x)).sum())
            if bad:
                raise DataError(f"{source}: {name} inputs hold {bad} NaN or infinite values; fix or drop those examples")
        if len(pair.y):
            lo, hi = int(pair.y.min()), int(pair.y.max())
            if lo < 0 or hi >= num_classes:
                raise DataError(
                    f"{source}: {name} labels range over {lo}..{hi}, but class indices must lie in "
                    f"0..{num_classes - 1} ({num_classes} classes)"
                )
    return splits
