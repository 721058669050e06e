from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from descend.data import Splits, TensorPair
from descend.errors import ConfigError
from descend.train.bagging import Bootstrap, bootstrap_indices


def trainer_with(n):
    return SimpleNamespace(data=Splits(TensorPair(torch.zeros(n, 1), torch.zeros(n, dtype=torch.long))))


def test_bootstrap_resample_is_fixed_per_member_and_reshuffled_per_epoch():
    trainer = trainer_with(500)
    member = Bootstrap(seed=3)
    e1 = member(trainer, 1, torch.Generator().manual_seed(1))
    e2 = member(trainer, 2, torch.Generator().manual_seed(2))
    assert torch.equal(torch.sort(e1).values, torch.sort(e2).values)  # the same resample ...
    assert not torch.equal(e1, e2)  # ... in a new order
    again = Bootstrap(seed=3)(trainer, 1, torch.Generator().manual_seed(1))
    assert torch.equal(again, e1)  # reproducible
    other = Bootstrap(seed=4)(trainer, 1, torch.Generator().manual_seed(1))
    assert not torch.equal(torch.sort(other).values, torch.sort(e1).values)  # members differ


def test_bootstrap_draws_with_replacement_about_63_percent_distinct():
    n = 20000
    idx = bootstrap_indices(n, torch.Generator().manual_seed(0))
    distinct = len(torch.unique(idx)) / n
    # E[distinct / n] = 1 - (1 - 1/n)^n ~ 1 - 1/e; the standard deviation is below 1/sqrt(n).
    expected = 1 - (1 - 1 / n) ** n
    assert abs(distinct - expected) < 5 / math.sqrt(n)
    assert idx.min() >= 0 and idx.max() < n
    with pytest.raises(ConfigError, match="non-empty"):
        bootstrap_indices(0, torch.Generator())
