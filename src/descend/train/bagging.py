"""Bagging (bootstrap aggregating) for ensembles of networks (CS189: "Ensemble of neural
nets. Random initial weights + bagging"; Deep Learning sec. 7.11).

Each member of a bagged ensemble trains on its own bootstrap resample of the training
set: n examples drawn uniformly *with replacement* from the n training examples (about
63% of them distinct, some several times). :class:`Bootstrap` is a Trainer sampler that
draws the resample once, from its own seed (so member i's resample depends only on i's
seed), and presents it in a fresh random order every epoch. ``descend train --ensemble N
--set train.bagging=true`` gives member i the seed ``seed + i - 1`` and hence its own
resample; the members are combined by averaged probabilities or majority vote
(:mod:`descend.train.ensemble`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from descend.errors import ConfigError


def bootstrap_indices(n: int, generator: torch.Generator) -> Tensor:
    """n indices drawn uniformly with replacement from range(n)."""
    if n < 1:
        raise ConfigError(f"a bootstrap resample needs a non-empty training set, got n={n}")
    return torch.randint(0, n, (n,), generator=generator)


class Bootstrap:
    """Sampler: one bootstrap resample of the training set (seeded by ``seed``), reshuffled each epoch."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self.indices: Tensor | None = None

    def resample(self, n: int) -> Tensor:
        # Its own stream (not the Trainer's per-epoch generator): the same for every epoch.
        generator = torch.Generator().manual_seed(self.seed * 7_919 + 104_729)
        self.indices = bootstrap_indices(n, generator)
        return self.indices

    def __call__(self, trainer, epoch: int, generator: torch.Generator) -> Tensor:
        n = len(trainer.data.train)
        if self.indices is None or len(self.indices) != n:
            self.resample(n)
        return self.indices[torch.randperm(n, generator=generator)]

    def __repr__(self) -> str:
        return f"Bootstrap(seed={self.seed})"
