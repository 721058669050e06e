from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from descend.data import Splits, TensorPair
from descend.errors import ConfigError, DataError, ShapeError
from descend.train import Trainer
from descend.train.curriculum import (
    ClassBalanced,
    DeterministicCurriculum,
    Emphasis,
    StochasticCurriculum,
    per_example_loss,
    probe_scores,
)
from reference import curriculum as ref

Z = 5.0


def fake_trainer(n=200, features=5, classes=3, seed=0, model=None):
    g = torch.Generator().manual_seed(seed)
    train = TensorPair(torch.randn(n, features, generator=g), torch.randint(0, classes, (n,), generator=g))
    model = model or nn.Linear(features, classes)
    return SimpleNamespace(data=Splits(train), model=model, eval_batch_size=64, device=torch.device("cpu"))


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_deterministic_curriculum_uses_only_the_easiest_examples_and_grows():
    trainer = fake_trainer()
    scores = torch.rand(200, generator=gen(1))
    cur = DeterministicCurriculum(scores, start=0.2, ramp_epochs=4)
    for epoch in range(1, 7):
        idx = cur(trainer, epoch, gen(epoch))
        assert len(idx) == 200  # the baseline's number of examples per epoch
        expected_pool = ref.easiest(scores.numpy(), ref.pace(epoch, 0.2, 4))
        assert set(idx.tolist()) == expected_pool  # every pool example, and nothing else
    assert cur.pool_size(1) == 40 and cur.pool_size(4) == 200


def test_deterministic_curriculum_sorted_order_is_easy_to_hard():
    trainer = fake_trainer()
    scores = torch.rand(200, generator=gen(2))
    idx = DeterministicCurriculum(scores, start=0.5, ramp_epochs=3, order="sorted", fill=False)(trainer, 1, gen(0))
    assert len(idx) == 100
    assert torch.all(scores[idx][1:] >= scores[idx][:-1])


def test_stochastic_curriculum_mixes_in_a_rising_share_of_hard_examples():
    n = 4000
    trainer = fake_trainer(n=n)
    scores = torch.rand(n, generator=gen(3))
    cur = StochasticCurriculum(scores, easy_fraction=0.5, start_hard_share=0.1, ramp_epochs=5)
    hard = set(np.argsort(scores.numpy(), kind="stable")[n // 2:].tolist())
    shares = []
    for epoch in (1, 3, 5, 8):
        idx = cur(trainer, epoch, gen(epoch)).tolist()
        share = sum(i in hard for i in idx) / n
        expected = 0.1 + (0.5 - 0.1) * min(1.0, (epoch - 1) / 4)
        assert abs(share - expected) < Z * math.sqrt(expected * (1 - expected) / n)
        shares.append(share)
    assert shares[0] < shares[1] < shares[2]  # rising until the ramp ends


def test_samplers_are_seeded_and_reproducible():
    trainer = fake_trainer()
    scores = torch.rand(200, generator=gen(4))
    for sampler in (DeterministicCurriculum(scores), StochasticCurriculum(scores), Emphasis(start_epoch=1),
                    ClassBalanced()):
        a, b = sampler(trainer, 2, gen(9)), sampler(trainer, 2, gen(9))
        assert torch.equal(a, b) and a.dtype == torch.long
        assert not torch.equal(a, sampler(trainer, 2, gen(10)))


def test_emphasis_samples_in_proportion_to_loss_with_a_floor():
    n = 50
    trainer = fake_trainer(n=n, seed=5)
    emphasis = Emphasis(mode="loss", floor=0.2, start_epoch=1, refresh_every=1000)  # one refresh
    losses = per_example_loss(trainer.model, trainer.data.train)
    expected = ref.emphasis_probabilities(losses.numpy(), 0.2)
    counts = torch.zeros(n)
    draws = 0
    for epoch in range(1, 401):
        idx = emphasis(trainer, epoch, gen(epoch))
        counts += torch.bincount(idx, minlength=n)
        draws += len(idx)
    freq = counts.numpy() / draws
    # Each frequency within Z binomial standard errors of its probability.
    assert np.all(np.abs(freq - expected) < Z * np.sqrt(expected * (1 - expected) / draws))
    assert expected.min() >= 0.2 / n * (1 - 1e-12)  # the floor: no example is dropped


def test_emphasis_on_misclassified_examples_and_refresh():
    trainer = fake_trainer(n=100, seed=6)
    emphasis = Emphasis(mode="misclassified", floor=0.1, start_epoch=2, refresh_every=2)
    assert torch.equal(torch.sort(emphasis(trainer, 1, gen(0))).values, torch.arange(100))  # uniform epoch 1
    emphasis(trainer, 2, gen(0))
    wrong = (trainer.model(trainer.data.train.x).argmax(1) != trainer.data.train.y).double().numpy()
    p = emphasis.weights.numpy() / emphasis.weights.numpy().sum()
    np.testing.assert_allclose(p, ref.emphasis_probabilities(wrong, 0.1))
    before = emphasis.weights.clone()
    with torch.no_grad():
        trainer.model.weight.mul_(-1)
    emphasis(trainer, 3, gen(0))  # not a refresh epoch
    assert torch.equal(emphasis.weights, before)
    emphasis(trainer, 4, gen(0))
    assert not torch.equal(emphasis.weights, before)
    state = emphasis.state_dict()
    other = Emphasis(mode="misclassified")
    other.load_state_dict(state)
    assert torch.equal(other.weights, emphasis.weights)


def test_class_balanced_presents_rare_classes_as_often_as_common_ones():
    y = torch.tensor([0] * 180 + [1] * 15 + [2] * 5)
    trainer = SimpleNamespace(data=Splits(TensorPair(torch.zeros(200, 1), y)))
    np.testing.assert_allclose(ClassBalanced(1.0).weights(y).numpy() / ClassBalanced(1.0).weights(y).numpy().sum(),
                               ref.class_balanced_probabilities(y.numpy(), 1.0))
    idx = torch.cat([ClassBalanced(1.0)(trainer, e, gen(e)) for e in range(1, 51)])
    share = torch.bincount(y[idx], minlength=3).double() / len(idx)
    assert torch.all((share - 1 / 3).abs() < Z * math.sqrt((1 / 3) * (2 / 3) / len(idx)))


def test_samplers_plug_into_the_trainer():
    g = gen(7)
    x = torch.randn(120, 4, generator=g)
    y = (x[:, 0] > 0).long()
    data = Splits(TensorPair(x, y), TensorPair(x[:40], y[:40]))
    scores = probe_scores(data.train, epochs=1, seed=0)
    assert scores.shape == (120,) and torch.isfinite(scores).all()
    for sampler in (DeterministicCurriculum(scores, ramp_epochs=2), StochasticCurriculum(scores, ramp_epochs=2),
                    Emphasis()):
        torch.manual_seed(0)
        model = nn.Linear(4, 2)
        history = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.5), data, epochs=3, batch_size=16,
                          sampler=sampler, quiet=True).fit()
        assert history[-1]["val_accuracy"] > 0.8


def test_bad_curriculum_input_raises_clear_errors():
    trainer = fake_trainer(n=200)
    with pytest.raises(ShapeError, match="has 199 difficulty scores but the training set has 200"):
        DeterministicCurriculum(torch.rand(199))(trainer, 1, gen(0))
    with pytest.raises(ShapeError, match="has 50 difficulty scores"):
        StochasticCurriculum(torch.rand(50))(trainer, 1, gen(0))
    with pytest.raises(ShapeError, match="1-D"):
        DeterministicCurriculum(torch.rand(10, 2))
    with pytest.raises(DataError, match="NaN"):
        StochasticCurriculum(torch.tensor([0.1, float("nan")]))
    with pytest.raises(ConfigError, match="start fraction"):
        DeterministicCurriculum(torch.rand(10), start=0.0)
    with pytest.raises(ConfigError, match="natural share"):
        StochasticCurriculum(torch.rand(10), easy_fraction=0.8, start_hard_share=0.5)
    with pytest.raises(ConfigError, match="mode"):
        Emphasis(mode="rare")
    with pytest.raises(ConfigError, match="floor"):
        Emphasis(floor=0.0)
