"""Sequence data: sequential MNIST views and the synthetic memory tasks.

Oracles: per-element loops over the definitions of each task, written independently
of the vectorized generators.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from descend.data.sequences import adding_problem, copy_task, make_splits, parity, sequential_mnist
from descend.errors import ConfigError, ShapeError


@pytest.mark.parametrize("C", [1, 3])
def test_sequential_mnist_rows_and_pixels_follow_raster_order(C):
    images = torch.arange(2 * C * 4 * 5, dtype=torch.float32).view(2, C, 4, 5)
    rows = sequential_mnist(images, "rows")
    pixels = sequential_mnist(images, "pixels")
    assert rows.shape == (2, 4, C * 5) and pixels.shape == (2, 20, C)
    for n in range(2):
        for r in range(4):
            for col in range(5):
                for ch in range(C):
                    v = images[n, ch, r, col]
                    assert rows[n, r, ch * 5 + col] == v  # step r sees row r, channel by channel
                    assert pixels[n, r * 5 + col, ch] == v  # step r*W+c sees pixel (r, c)


def test_sequential_mnist_accepts_unbatched_channel_and_rejects_bad_input():
    images = torch.rand(3, 28, 28)
    torch.testing.assert_close(sequential_mnist(images), images)
    with pytest.raises(ShapeError, match=r"\(N, C, H, W\)"):
        sequential_mnist(torch.rand(28, 28))
    with pytest.raises(ConfigError, match="order"):
        sequential_mnist(images, "columns")


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 6), delay=st.integers(1, 12), length=st.integers(1, 5), symbols=st.integers(1, 6), seed=st.integers(0, 99))
def test_copy_task_structure(n, delay, length, symbols, seed):
    pair = copy_task(n, delay, length=length, symbols=symbols, generator=seed)
    T = 2 * length + delay
    assert pair.x.shape == (n, T, symbols + 2) and pair.y.shape == (n, T)
    assert pair.x.dtype == torch.float32 and pair.y.dtype == torch.int64
    assert (pair.x.sum(2) == 1).all()  # one-hot
    seq = pair.x.argmax(2)
    for i in range(n):
        data = seq[i, :length].tolist()
        assert all(1 <= s <= symbols for s in data)
        for t in range(length, T):
            expected = symbols + 1 if t == length + delay - 1 else 0
            assert seq[i, t] == expected
        assert pair.y[i, : T - length].tolist() == [0] * (T - length)
        assert pair.y[i, T - length :].tolist() == data  # repeat after the delimiter


def test_adding_problem_target_is_the_sum_of_the_two_marked_values():
    pair = adding_problem(50, 12, generator=3)
    assert pair.x.shape == (50, 12, 2) and pair.y.shape == (50,)
    for i in range(50):
        values, marker = pair.x[i, :, 0].numpy(), pair.x[i, :, 1].numpy()
        marked = [t for t in range(12) if marker[t] == 1.0]
        assert len(marked) == 2 and marked[0] < 6 <= marked[1]  # one per half
        assert set(np.unique(marker)) <= {0.0, 1.0}
        assert 0 <= values.min() and values.max() < 1
        assert pair.y[i].item() == pytest.approx(values[marked[0]] + values[marked[1]], rel=1e-6)
    # Predicting the mean sum 1 gives mean squared error near 1/6 (two uniform variances).
    big = adding_problem(20000, 10, generator=0)
    assert ((big.y - 1) ** 2).mean().item() == pytest.approx(1 / 6, abs=0.01)


@pytest.mark.parametrize("running", [False, True])
def test_parity_targets(running):
    pair = parity(40, 9, running=running, generator=1)
    bits = pair.x[:, :, 0].long()
    assert set(bits.unique().tolist()) <= {0, 1}
    for i in range(40):
        prefix = [sum(bits[i, : t + 1].tolist()) % 2 for t in range(9)]
        assert (pair.y[i].tolist() == prefix) if running else (pair.y[i].item() == prefix[-1])


def test_generators_are_deterministic_given_the_seed():
    for task, kw in ((copy_task, {"delay": 5}), (adding_problem, {"length": 8}), (parity, {"length": 8})):
        a, b = task(7, generator=torch.Generator().manual_seed(4), **kw), task(7, generator=4, **kw)
        c = task(7, generator=5, **kw)
        torch.testing.assert_close(a.x, b.x)
        torch.testing.assert_close(a.y, b.y)
        assert not torch.equal(a.x, c.x)


def test_make_splits_uses_independent_streams():
    s = make_splits(adding_problem, (30, 10, 20), seed=2, length=6)
    assert (len(s.train), len(s.val), len(s.test)) == (30, 10, 20)
    bigger = make_splits(adding_problem, (60, 10, 20), seed=2, length=6)
    torch.testing.assert_close(s.test.x, bigger.test.x)  # test set unchanged by train size
    assert not torch.equal(s.train.x[:10], s.val.x)
    assert make_splits(parity, (5, 0, 0), length=3).val is None


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: copy_task(0, 5), "n must be"),
        (lambda: copy_task(4, 0), "delay must be"),
        (lambda: adding_problem(4, 1), "length must be an integer >= 2"),
        (lambda: parity(4, 3, generator="seed"), "torch.Generator or an int"),
        (lambda: make_splits(parity, (5, 1), length=3), "sizes must be"),
        (lambda: make_splits(parity, (0, 1, 1), length=3), "training set size"),
    ],
)
def test_bad_options_raise_config_errors(call, match):
    with pytest.raises(ConfigError, match=match):
        call()


def test_copy_task_baseline_loss_is_length_log_symbols():
    """Sanity of the task definition: guessing uniformly over the symbols in the copy
    phase and predicting blank elsewhere costs length * log(symbols) per sequence."""
    pair = copy_task(3, 4, length=5, symbols=8, generator=0)
    T = pair.y.shape[1]
    logits = torch.full((3, T, 9), -1e9)
    logits[:, : T - 5, 0] = 0.0
    logits[:, T - 5 :, 1:] = 0.0
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, 9), pair.y.reshape(-1), reduction="sum") / 3
    assert nll.item() == pytest.approx(5 * math.log(8), rel=1e-6)
