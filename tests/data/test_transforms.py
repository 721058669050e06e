from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from descend.data import shift
from descend.data.transforms import (
    AffineElastic,
    Compose,
    ElasticDistortion,
    PCAColorJitter,
    RandomAffine,
    RandomCrop,
    RandomFlip,
    affine,
    center_crop,
    displace,
    five_crop,
    gaussian_blur,
    ten_crop,
    tta_predict,
    tta_views,
)
from descend.errors import ConfigError, DataError, ShapeError
from reference import augment as ref


def distinct_images(n=6, c=2, rows=7, cols=9, seed=0):
    """Hand-made images whose pixels are all different and non-zero, so every move is identifiable."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n * c * rows * cols, generator=g).float().reshape(n, c, rows, cols) + 1


def test_random_crop_outputs_are_crops_of_the_padded_image_at_in_range_offsets():
    x = distinct_images()
    out = RandomCrop((5, 6), padding=2)(x, torch.Generator().manual_seed(1))
    assert out.shape == (6, 2, 5, 6)
    offsets = set()
    for i in range(len(x)):
        padded = ref.pad(x[i].numpy(), 2)
        matches = [(t, l) for t in range(11 - 5 + 1) for l in range(13 - 6 + 1)
                   if np.array_equal(out[i].numpy(), ref.crop(padded, t, l, 5, 6))]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert len(offsets) > 1


def test_random_crop_of_the_full_size_is_a_random_shift():
    x = distinct_images(n=30, rows=6, cols=6)
    out = RandomCrop(6, padding=1)(x, torch.Generator().manual_seed(2))
    for i in range(len(x)):
        assert any(torch.equal(out[i:i + 1], shift(x[i:i + 1], dy, dx)) for dy in (-1, 0, 1) for dx in (-1, 0, 1))


def test_random_flip_mirrors_some_images_and_keeps_the_others():
    x = distinct_images(n=40)
    out = RandomFlip(0.5)(x, torch.Generator().manual_seed(3))
    flipped = [np.array_equal(out[i].numpy(), ref.mirror(x[i].numpy())) for i in range(len(x))]
    kept = [torch.equal(out[i], x[i]) for i in range(len(x))]
    assert all(f != k for f, k in zip(flipped, kept))
    assert 5 < sum(flipped) < 35
    assert torch.equal(RandomFlip(0.0)(x, torch.Generator().manual_seed(3)), x)


def test_five_and_ten_crops_are_the_corners_centre_and_mirrors():
    x = distinct_images(n=2, rows=8, cols=8)
    crops = ten_crop(x, 5)
    a = x.numpy()
    expected = [(0, 0), (0, 3), (3, 0), (3, 3), (1, 1)]  # centre: (8 - 5) // 2 = 1
    for crop, (t, l) in zip(crops[:5], expected):
        np.testing.assert_array_equal(crop.numpy(), ref.crop(a, t, l, 5, 5))
    for crop, original in zip(crops[5:], crops[:5]):
        np.testing.assert_array_equal(crop.numpy(), ref.mirror(original.numpy()))
    assert len(five_crop(x, 5)) == 5 and torch.equal(center_crop(x, 8), x)


def test_a_quarter_turn_and_whole_pixel_moves_are_pixel_exact():
    x = distinct_images(n=1, rows=6, cols=6)
    quarter = torch.tensor([[[0.0, -1.0], [1.0, 0.0]]])
    assert torch.equal(affine(x, quarter, torch.zeros(1, 2), mode="nearest"), torch.rot90(x, 1, (2, 3)))
    # Bilinear weights at pixel centres are 1 and 0 up to rounding of the normalized grid.
    torch.testing.assert_close(affine(x, quarter, torch.zeros(1, 2)), torch.rot90(x, 1, (2, 3)), atol=1e-4, rtol=0)
    # Sampling at p - (2, -1): the content moves 2 right and 1 up.
    moved = affine(x, torch.eye(2)[None], torch.tensor([[-2.0, 1.0]]), mode="nearest")
    assert torch.equal(moved, shift(x, -1, 2))
    field = torch.zeros(1, 2, 6, 6)
    field[:, 0], field[:, 1] = -1.0, 2.0  # sample 1 left and 2 below: content moves right 1, up 2
    assert torch.equal(displace(x, field, mode="nearest"), shift(x, -2, 1))
    torch.testing.assert_close(displace(x, field), shift(x, -2, 1), atol=1e-4, rtol=0)


@given(seed=st.integers(0, 1000), rows=st.integers(3, 8), cols=st.integers(3, 8))
@settings(max_examples=20, deadline=None)
def test_affine_resampling_matches_the_pixel_loop(seed, rows, cols):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3, 2, rows, cols, generator=g, dtype=torch.float64)
    matrix, offset = RandomAffine(degrees=30, scale=0.2, shear=10, translate=1.5).parameters(3, g)
    out = affine(x, matrix.double(), offset.double())
    for i in range(3):
        expected = ref.affine(x[i].numpy(), matrix[i].double().numpy(), offset[i].double().numpy())
        np.testing.assert_allclose(out[i].numpy(), expected, atol=1e-9)


@given(seed=st.integers(0, 1000))
@settings(max_examples=10, deadline=None)
def test_displacement_matches_the_pixel_loop(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 1, 6, 7, generator=g, dtype=torch.float64)
    field = (torch.rand(2, 2, 6, 7, generator=g, dtype=torch.float64) - 0.5) * 4
    out = displace(x, field)
    for i in range(2):
        np.testing.assert_allclose(out[i].numpy(), ref.displace(x[i].numpy(), field[i].numpy()), atol=1e-9)


@given(seed=st.integers(0, 1000))
@settings(max_examples=10, deadline=None)
def test_affine_elastic_samples_at_the_affine_map_plus_the_field_in_one_pass(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 1, 7, 6, generator=g, dtype=torch.float64)
    transform = AffineElastic(RandomAffine(degrees=20, scale=0.2, shear=10, translate=1.0),
                              ElasticDistortion(alpha=8.0, sigma=1.5))
    out = transform(x, torch.Generator().manual_seed(seed))
    # The same draws, in the same order: the affine parameters, then the field.
    g = torch.Generator().manual_seed(seed)
    matrix, offset = transform.affine.parameters(2, g)
    field = transform.elastic.field(2, 7, 6, g)
    for i in range(2):
        expected = ref.affine(x[i].numpy(), matrix[i].double().numpy(), offset[i].double().numpy(),
                              field[i].double().numpy())
        np.testing.assert_allclose(out[i].numpy(), expected, atol=1e-6)


def test_affine_elastic_reduces_to_each_part_when_the_other_is_off():
    x = distinct_images(n=3, rows=12, cols=10)
    rand_affine = RandomAffine(degrees=15, scale=0.1, shear=5, translate=2.0)
    no_field = AffineElastic(rand_affine, ElasticDistortion(alpha=0.0))(x, torch.Generator().manual_seed(1))
    torch.testing.assert_close(no_field, rand_affine(x, torch.Generator().manual_seed(1)))
    identity = RandomAffine(degrees=0, scale=0, shear=0, translate=0)
    elastic = ElasticDistortion(alpha=10.0, sigma=2.0)
    g = torch.Generator().manual_seed(2)
    identity.parameters(3, g)  # consume the affine draws, as AffineElastic does
    torch.testing.assert_close(AffineElastic(identity, elastic)(x, torch.Generator().manual_seed(2)),
                               elastic(x, g), rtol=0, atol=1e-4 * float(x.max()))
    with pytest.raises(ConfigError, match="one interpolation mode"):
        AffineElastic(RandomAffine(mode="nearest"), elastic)
    with pytest.raises(ShapeError, match="field of shape"):
        affine(x, *rand_affine.parameters(3), field=torch.zeros(3, 2, 5, 5))


def test_gaussian_smoothing_of_the_elastic_field_is_scipys():
    field = torch.rand(2, 2, 20, 17, dtype=torch.float64) * 2 - 1
    smoothed = gaussian_blur(field, 3.0)
    for k in range(2):
        for c in range(2):
            expected = ndimage.gaussian_filter(field[k, c].numpy(), 3.0, mode="constant", cval=0.0, truncate=4.0)
            np.testing.assert_allclose(smoothed[k, c].numpy(), expected, atol=1e-12)


def test_elastic_distortion_is_reproducible_identity_at_alpha_zero_and_smooth():
    x = distinct_images(n=4, rows=28, cols=28)
    # float32 grid coordinates are off by ~1e-6 pixel: errors of 1e-6 times a neighbour difference.
    same = ElasticDistortion(alpha=0.0)(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(same, x, rtol=0, atol=1e-5 * float(x.max()))
    a = ElasticDistortion()(x, torch.Generator().manual_seed(4))
    b = ElasticDistortion()(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, x)
    field = ElasticDistortion(alpha=34, sigma=4).field(200, 28, 28, torch.Generator().manual_seed(5))
    # Smoothing U(-1, 1) noise (variance 1/3) by a 2D Gaussian of std s keeps variance
    # 1/3 * sum(k^2) = 1/3 / (4 pi s^2) in the interior: displacements of about 1.4 pixels.
    interior = field[:, :, 12:16, 12:16]
    expected_std = 34 * math.sqrt(1 / 3 / (4 * math.pi * 16))
    assert float(interior.std()) == pytest.approx(expected_std, rel=0.1)


def test_random_affine_with_no_distortion_is_the_identity():
    x = distinct_images()
    assert torch.equal(RandomAffine(degrees=0, scale=0, shear=0, translate=0, mode="nearest")(x, torch.Generator()), x)
    same = RandomAffine(degrees=0, scale=0, shear=0, translate=0)(x, torch.Generator())
    torch.testing.assert_close(same, x, rtol=0, atol=1e-5 * float(x.max()))


def test_pca_colour_jitter_adds_one_colour_per_image_with_alexnets_covariance():
    g = torch.Generator().manual_seed(6)
    mix = torch.tensor([[1.0, 0.3, 0.1], [0.3, 0.8, 0.2], [0.1, 0.2, 0.5]])
    x = (torch.randn(64, 3, 8, 8, generator=g).permute(0, 2, 3, 1) @ mix).permute(0, 3, 1, 2)
    jitter = PCAColorJitter(std=0.1).fit(x)
    cov = np.cov(x.transpose(0, 1).reshape(3, -1).double().numpy())
    lam, U = np.linalg.eigh(cov)
    np.testing.assert_allclose(jitter.eigenvalues.numpy(), lam, rtol=1e-5)
    big = torch.zeros(20000, 3, 2, 2)
    delta = jitter(big, torch.Generator().manual_seed(7))
    # One constant shift per (image, channel) ...
    assert torch.equal(delta, delta[:, :, :1, :1].expand_as(delta))
    # ... whose covariance over images is std^2 U diag(lambda^2) U^T (AlexNet's formula).
    shifts = delta[:, :, 0, 0].double().numpy()
    expected = 0.01 * U @ np.diag(lam**2) @ U.T
    np.testing.assert_allclose(np.cov(shifts, rowvar=False), expected, atol=0.05 * np.abs(expected).max())


def test_compose_and_tta():
    x = distinct_images(n=3, c=1, rows=6, cols=6)
    both = Compose(RandomFlip(1.0), RandomCrop(6, padding=0))
    assert torch.equal(both(x, torch.Generator()), x.flip(-1))
    views = tta_views(x, "ten-crop", padding=1)
    assert len(views) == 10 and torch.equal(views[4], x) and torch.equal(views[9], x.flip(-1))
    padded = ref.pad(x.numpy(), 1)
    np.testing.assert_array_equal(views[0].numpy(), ref.crop(padded, 0, 0, 6, 6))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 4))
    probs = tta_predict(model, x, "ten-crop", padding=1)
    with torch.no_grad():
        expected = torch.stack([model(v).softmax(1) for v in views]).mean(0)
    torch.testing.assert_close(probs, expected)
    torch.testing.assert_close(probs.sum(1), torch.ones(3))


def test_transforms_bad_input():
    with pytest.raises(ConfigError, match="padding"):
        RandomCrop(5, padding=-1)
    with pytest.raises(ShapeError, match="does not fit"):
        RandomCrop(10)(torch.rand(2, 1, 6, 6))
    with pytest.raises(ConfigError, match="probability"):
        RandomFlip(1.5)
    with pytest.raises(ConfigError, match="scale"):
        RandomAffine(scale=1.5)
    with pytest.raises(ConfigError, match="sigma"):
        ElasticDistortion(sigma=0)
    with pytest.raises(DataError, match="fit"):
        PCAColorJitter()(torch.rand(2, 3, 4, 4))
    with pytest.raises(ShapeError, match="RGB"):
        PCAColorJitter().fit(torch.rand(2, 1, 4, 4))
    with pytest.raises(ConfigError, match="unknown test-time augmentation"):
        tta_views(torch.rand(2, 1, 4, 4), "twenty-crop")
    with pytest.raises(ShapeError, match="rows, cols"):
        ElasticDistortion()(torch.rand(3, 28, 28))
