from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from descend import init
from descend.errors import ConfigError, DataError, ShapeError
from reference import init as ref

Z = 5.0  # tolerance in standard errors: a seeded test fails by chance with p < 1e-6


def assert_moments(w: torch.Tensor, family: str, param: float) -> None:
    """Sample mean and variance of the entries of ``w`` agree with the distribution, within
    Z standard errors computed from the sample size (the mean's is sqrt(var/N), the
    variance's sqrt((mu4 - var^2)/N))."""
    x = w.detach().double().flatten().numpy()
    n = x.size
    var, mu4 = ref.moments(family, param)
    assert abs(x.mean()) < Z * math.sqrt(var / n)
    assert abs(x.var() - var) < Z * math.sqrt((mu4 - var**2) / n)
    if family == "uniform":
        assert np.abs(x).max() <= param * (1 + 1e-6)
        assert np.abs(x).max() > param * (1 - 20.0 / n)  # the support is filled to its edge


@pytest.mark.parametrize("scheme", ["uniform", "normalized", "lecun", "lecun-uniform", "he", "he-uniform"])
@pytest.mark.parametrize("shape", [(300, 400), (64, 16, 5, 5)])
def test_dense_schemes_match_their_formula(scheme, shape):
    w = torch.empty(shape)
    gain = 1.7
    init._WEIGHT_SCHEMES[scheme](w, gain, torch.Generator().manual_seed(0))
    receptive = math.prod(shape[2:])
    m, n = shape[1] * receptive, shape[0] * receptive
    family, param = ref.distribution(scheme, m, n, gain)
    assert_moments(w, family, param)


def test_gains_are_torchs():
    for name in ("linear", "conv2d", "sigmoid", "tanh", "relu", "selu"):
        assert init.calculate_gain(name if name != "conv2d" else "conv") == pytest.approx(torch.nn.init.calculate_gain(name))
    assert init.calculate_gain("leaky_relu", 0.2) == pytest.approx(torch.nn.init.calculate_gain("leaky_relu", 0.2))


def test_he_keeps_the_second_moment_of_relu_layers():
    # The derivation behind the gain sqrt(2): Var(z_l) = (2/m) m E[relu(z_{l-1})^2] = Var(z_{l-1}).
    g = torch.Generator().manual_seed(1)
    h = torch.randn(4000, 500, generator=g)
    second_moments = []
    for _ in range(6):
        w = init.he_normal_(torch.empty(500, 500), generator=g)
        z = h @ w.T
        second_moments.append(float(z.pow(2).mean()))
        h = torch.relu(z)
    # E[z_1^2] = 2 E[x^2] = 2, and it stays there; a random 500-wide layer moves it by a
    # few percent (relative spread ~ sqrt(2/500) per layer).
    assert second_moments[0] == pytest.approx(2.0, rel=0.05)
    assert second_moments[-1] == pytest.approx(second_moments[0], rel=0.3)


@pytest.mark.parametrize("shape", [(50, 50), (80, 30), (30, 80), (32, 8, 3, 3), (8, 16, 3, 3)])
def test_orthogonal_is_orthogonal_with_gain(shape):
    gain = 1.3
    w = init.orthogonal_(torch.empty(shape, dtype=torch.float64), gain, torch.Generator().manual_seed(2))
    mat = w.reshape(shape[0], -1).numpy()
    rows, cols = mat.shape
    gram = mat.T @ mat if rows >= cols else mat @ mat.T
    np.testing.assert_allclose(gram, gain**2 * np.eye(min(rows, cols)), atol=1e-12)


def test_orthogonal_is_haar_distributed():
    # For a Haar-random orthogonal 3x3 matrix, E[Q_ij] = 0 and E[Q_ij^2] = 1/3. A QR
    # without the sign correction gives Q_00 < 0 most of the time (LAPACK's convention).
    g = torch.Generator().manual_seed(3)
    draws = 800
    q00 = np.array([init.orthogonal_(torch.empty(3, 3, dtype=torch.float64), 1.0, g)[0, 0].item()
                    for _ in range(draws)])
    assert abs(q00.mean()) < Z * math.sqrt((1 / 3) / draws)
    assert abs((q00**2).mean() - 1 / 3) < 0.05


def test_delta_orthogonal_kernel_is_orthogonal_at_its_centre_and_preserves_norms():
    w = init.delta_orthogonal_(torch.empty(16, 8, 3, 3, dtype=torch.float64), 1.0, torch.Generator().manual_seed(4))
    centre = w[:, :, 1, 1].numpy()
    np.testing.assert_allclose(centre.T @ centre, np.eye(8), atol=1e-12)
    off = w.clone()
    off[:, :, 1, 1] = 0
    assert torch.count_nonzero(off) == 0
    x = torch.randn(2, 8, 10, 10, dtype=torch.float64)
    y = torch.nn.functional.conv2d(x, w, padding=1)
    np.testing.assert_allclose(y.pow(2).sum().item(), x.pow(2).sum().item(), rtol=1e-10)
    with pytest.raises(ShapeError, match="odd"):
        init.delta_orthogonal_(torch.empty(4, 4, 2, 2))


@given(rows=st.integers(1, 40), cols=st.integers(1, 60), data=st.data())
@settings(max_examples=40, deadline=None)
def test_sparse_has_exactly_k_nonzero_incoming_weights(rows, cols, data):
    k = data.draw(st.integers(1, cols))
    w = init.sparse_(torch.empty(rows, cols), k, generator=torch.Generator().manual_seed(5))
    assert (torch.count_nonzero(w, dim=1) == k).all()


def test_sparse_values_are_gaussian_with_gain_and_conv_units_count_their_kernel():
    w = init.sparse_(torch.empty(64, 10, 5, 5), k=15, gain=2.0, generator=torch.Generator().manual_seed(6))
    per_unit = torch.count_nonzero(w.reshape(64, -1), dim=1)
    assert (per_unit == 15).all()
    assert_moments(w[w != 0], "normal", 2.0)
    # The chosen positions are spread over the whole fan-in, not stuck at the front.
    used = torch.count_nonzero(w.reshape(64, -1), dim=0)
    assert (used > 0).sum() > 200


def test_sparse_rejects_k_above_fan_in():
    with pytest.raises(ConfigError, match="fan-in = 20"):
        init.sparse_(torch.empty(5, 20), k=21)
    with pytest.raises(ConfigError, match="k"):
        init.sparse_(torch.empty(5, 20), k=0)


def test_lsuv_reaches_unit_variance_per_layer_and_matches_the_algorithm():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 50), nn.Tanh(), nn.Linear(50, 40), nn.Tanh(), nn.Linear(40, 10)).double()
    x = torch.randn(256, 20, dtype=torch.float64) * 3 + 1
    init.constant_bias_(model, 0.0)
    # The oracle starts from the same orthonormal weights, so pre-initialize, then run
    # LSUV without its own pre-initialization.
    for layer in init.weight_layers(model):
        init.orthogonal_(layer.weight, 1.0, torch.Generator().manual_seed(7))
    start = [layer.weight.detach().numpy().copy() for layer in init.weight_layers(model)]
    init.lsuv_(model, x, tol=0.01, pre_init="none")
    expected = ref.lsuv_mlp(start, [np.zeros(50), np.zeros(40), np.zeros(10)], x.numpy(), np.tanh, tol=0.01)
    for layer, w in zip(init.weight_layers(model), expected):
        np.testing.assert_allclose(layer.weight.detach().numpy(), w, rtol=1e-10)
    # Independently: each layer's output variance on the batch is within tol of 1.
    outputs = []
    hooks = [m.register_forward_hook(lambda m, i, o: outputs.append(o)) for m in init.weight_layers(model)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    assert all(abs(float(o.var()) - 1) < 0.01 for o in outputs)


def test_lsuv_on_a_conv_net_with_batch_norm_and_dropout():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(),
                          nn.Flatten(), nn.Dropout(0.5), nn.Linear(8 * 8 * 8, 10))
    x = torch.rand(64, 1, 12, 12)
    variances = init.lsuv_(model, x, tol=0.05)
    assert len(variances) == 3 and all(abs(v - 1) < 0.05 for v in variances)
    assert model.training  # the mode is restored


def test_lsuv_bad_input():
    with pytest.raises(ShapeError, match="at least 2"):
        init.lsuv_(nn.Linear(3, 3), torch.randn(1, 3))
    with pytest.raises(DataError, match="variance"):
        init.lsuv_(nn.Linear(3, 3, bias=False), torch.zeros(8, 3))


def test_output_bias_solves_softmax_b_equals_c():
    labels = torch.tensor([0] * 70 + [1] * 20 + [2] * 10)
    c = init.class_marginals(labels)
    np.testing.assert_allclose(c.numpy(), [0.7, 0.2, 0.1])
    layer = nn.Linear(5, 3)
    init.output_bias_from_marginals_(layer.bias, c)
    np.testing.assert_allclose(ref.softmax(layer.bias.detach().double().numpy()), [0.7, 0.2, 0.1], rtol=1e-6)
    # With zero weights the network's predicted distribution is exactly c.
    nn.init.zeros_(layer.weight)
    np.testing.assert_allclose(layer(torch.randn(4, 5)).softmax(1).detach().numpy(), np.tile([0.7, 0.2, 0.1], (4, 1)),
                               rtol=1e-6)
    b = torch.empty(3)
    init.output_bias_from_marginals_(b, torch.tensor([0.5, 0.1, 0.9]), activation="sigmoid")
    np.testing.assert_allclose(ref.sigmoid(b.double().numpy()), [0.5, 0.1, 0.9], rtol=1e-6)


def test_output_bias_rejects_empty_classes_and_suggests_smoothing():
    c = init.class_marginals(torch.tensor([0, 0, 2]), num_classes=3)
    with pytest.raises(DataError, match="smoothing"):
        init.output_bias_from_marginals_(torch.empty(3), c)
    smoothed = init.class_marginals(torch.tensor([0, 0, 2]), num_classes=3, smoothing=1)
    np.testing.assert_allclose(smoothed.numpy(), [3 / 6, 1 / 6, 2 / 6])


def test_forget_gate_bias_for_torch_and_descend_lstms():
    from descend.nn import LSTM

    model = nn.ModuleDict({"a": nn.LSTM(4, 6), "b": nn.LSTMCell(4, 6), "c": LSTM(4, 6, forget_bias=0.0)})
    assert init.forget_gate_bias_(model, 1.0) == 3
    for m in (model["a"], model["b"]):
        total = (m.bias_ih_l0 + m.bias_hh_l0) if isinstance(m, nn.LSTM) else (m.bias_ih + m.bias_hh)
        np.testing.assert_array_equal(total.detach().numpy(), [0] * 6 + [1] * 6 + [0] * 12)
    np.testing.assert_array_equal(model["c"].cell.b.detach().numpy(), [0] * 6 + [1] * 6 + [0] * 12)


def test_apply_init_sets_every_layer_and_the_biases():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 30), nn.ReLU(),
                          nn.Linear(30, 3))
    c = torch.tensor([0.5, 0.3, 0.2])
    init.apply_init(model, "orthogonal", nonlinearity="relu", hidden_bias=0.1, output_bias=c,
                    generator=torch.Generator().manual_seed(0))
    for layer in (model[0], model[3], model[5]):
        mat = layer.weight.detach().double().reshape(layer.weight.shape[0], -1)
        gram = mat @ mat.T if mat.shape[0] <= mat.shape[1] else mat.T @ mat
        torch.testing.assert_close(gram, 2.0 * torch.eye(min(mat.shape), dtype=torch.float64), atol=1e-5, rtol=0)
    assert torch.all(model[0].bias == 0.1) and torch.all(model[3].bias == 0.1)
    np.testing.assert_allclose(model[5].bias.softmax(0).detach().numpy(), c.numpy(), rtol=1e-6)

    init.apply_init(model, "sparse", sparse_k=5, generator=torch.Generator().manual_seed(0))
    assert (torch.count_nonzero(model[3].weight, dim=1) == 5).all()
    assert torch.all(model[0].bias == 0)

    x = torch.rand(64, 1, 8, 8)
    init.apply_init(model, "lsuv", data=x)
    # default gain for "linear" is 1: the first layer's output has unit variance
    assert float(model[0](x).detach().var()) == pytest.approx(1.0, abs=0.1)


def test_apply_init_is_reproducible_with_a_generator():
    a, b = nn.Linear(10, 10), nn.Linear(10, 10)
    init.apply_init(a, "he", generator=torch.Generator().manual_seed(9))
    init.apply_init(b, "he", generator=torch.Generator().manual_seed(9))
    assert torch.equal(a.weight, b.weight)


def test_apply_init_bad_input():
    with pytest.raises(ConfigError, match="unknown initialization scheme 'xavier'"):
        init.apply_init(nn.Linear(2, 2), "xavier")
    with pytest.raises(ConfigError, match="nonlinearity"):
        init.apply_init(nn.Linear(2, 2), "he", nonlinearity="swish")
    with pytest.raises(ConfigError, match="needs a batch"):
        init.apply_init(nn.Linear(2, 2), "lsuv")
    with pytest.raises(ConfigError, match="gain"):
        init.uniform_(torch.empty(3, 3), gain=-1.0)
    with pytest.raises(ShapeError, match="biases"):
        init.normalized_(torch.empty(3))
