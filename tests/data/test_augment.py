from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from descend.data import RandomShift, TensorPair, expand_mnist, shift
from descend.errors import ConfigError, ShapeError
from reference import augment as ref


@given(dy=st.integers(-6, 6), dx=st.integers(-6, 6), rows=st.integers(1, 7), cols=st.integers(1, 7))
@settings(max_examples=60, deadline=None)
def test_shift_matches_pixel_loop(dy, dx, rows, cols):
    x = torch.arange(2 * 3 * rows * cols, dtype=torch.float32).reshape(2, 3, rows, cols) + 1
    expected = ref.shift(x.numpy(), dy, dx)
    np.testing.assert_array_equal(shift(x, dy, dx).numpy(), expected)


def test_expand_mnist_is_nielsens_construction_pixel_for_pixel():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(4, 1, 28, 28, generator=g)
    labels = torch.tensor([3, 1, 4, 1])
    big = expand_mnist(TensorPair(images, labels), shuffle=False)
    assert big.x.shape == (20, 1, 28, 28)
    expected = ref.nielsen_expand(images[:, 0].numpy())
    np.testing.assert_array_equal(big.x[:, 0].numpy(), expected)
    assert big.y.tolist() == [3] * 5 + [1] * 5 + [4] * 5 + [1] * 5


def test_expand_mnist_shuffle_is_a_seeded_permutation():
    images = torch.rand(6, 1, 28, 28)
    labels = torch.arange(6)
    plain = expand_mnist(TensorPair(images, labels), shuffle=False)
    a = expand_mnist(TensorPair(images, labels), seed=3)
    b = expand_mnist(TensorPair(images, labels), seed=3)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    # Same multiset of (image, label) pairs as the unshuffled set.
    key = lambda p: sorted(zip(p.x.flatten(1).sum(1).tolist(), p.y.tolist()))  # noqa: E731
    assert key(a) == key(plain)


def test_random_shift_moves_each_image_by_a_shift_in_range():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(40, 2, 9, 11, generator=g) + 0.1  # no zero pixels: every shift is identifiable
    out = RandomShift(2)(x, torch.Generator().manual_seed(7))
    seen = set()
    for i in range(len(x)):
        matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                   if np.array_equal(out[i].numpy(), ref.shift(x[i].numpy(), dy, dx))]
        assert len(matches) == 1, f"image {i} is not a shift of its input"
        seen.add(matches[0])
    assert len(seen) > 5  # shifts vary across the batch


def test_random_shift_is_reproducible_and_zero_shift_is_identity():
    x = torch.rand(8, 1, 28, 28)
    a = RandomShift(2)(x, torch.Generator().manual_seed(5))
    b = RandomShift(2)(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert torch.equal(RandomShift(0)(x), x)


def test_bad_augmentation_input_raises_clear_errors():
    with pytest.raises(ConfigError, match="max_shift"):
        RandomShift(-1)
    with pytest.raises(ShapeError, match="rows, cols"):
        RandomShift(2)(torch.rand(3, 28, 28))
