"""In-memory data sets: a pair of tensors, and the train/validation/test splits.

Everything descend trains on fits in memory as tensors (all of MNIST as float32 is
220 MB), so a batch is one indexing operation ``x[idx]``, not thousands of
per-sample ``Dataset.__getitem__`` calls.
"""

from __future__ import annotations

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
