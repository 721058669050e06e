from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from descend.errors import ConfigError
from descend.models import MODELS, NielsenNet


def test_default_is_the_final_chapter_6_network():
    net = NielsenNet(batch_norm=False)
    # conv 1->20 5x5 (+20 biases), conv 20->40 5x5 (+40), FC 640->1000, 1000->1000, 1000->10
    expected = (20 * 25 + 20) + (40 * 20 * 25 + 40) + (640 * 1000 + 1000) + (1000 * 1000 + 1000) + (1000 * 10 + 10)
    assert sum(p.numel() for p in net.parameters()) == expected
    assert net(torch.rand(3, 1, 28, 28)).shape == (3, 10)
    assert sum(isinstance(m, torch.nn.Dropout) for m in net.modules()) == 3  # inputs of FC, FC, softmax
    assert MODELS["nielsen"] is NielsenNet


@given(conv=st.lists(st.integers(1, 4), max_size=2), hidden=st.lists(st.integers(1, 8), max_size=2),
       bn=st.booleans(), act=st.sampled_from(["relu", "sigmoid", "tanh"]))
@settings(max_examples=25, deadline=None)
def test_any_ladder_step_builds_and_runs(conv, hidden, bn, act):
    net = NielsenNet(conv=conv, hidden=hidden, batch_norm=bn, activation=act, dropout=0.2)
    net.train()
    out = net(torch.rand(4, 1, 28, 28))
    assert out.shape == (4, 10) and torch.isfinite(out).all()


def test_pool_then_activation_equals_activation_then_pool():
    """Max-pooling commutes with increasing activations, which the layer order relies on."""
    x = torch.randn(2, 3, 8, 8)
    for f in (torch.relu, torch.sigmoid, torch.tanh):
        assert torch.equal(torch.nn.functional.max_pool2d(f(x), 2), f(torch.nn.functional.max_pool2d(x, 2)))


def test_same_padding_keeps_map_size_and_fits_three_conv_pool_layers():
    """Zero padding (Deep Learning sec. 9.5, fig. 9.13): "same" 3x3 layers take 28 -> 14 -> 7 -> 3."""
    net = NielsenNet(conv=(4, 6, 8), kernel_size=3, padding=1, hidden=(5,), batch_norm=False, dropout=0.0)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.padding for c in convs] == [(1, 1)] * 3
    assert net.classifier[1].in_features == 8 * 3 * 3
    x = torch.rand(2, 1, 28, 28)
    first = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1, 1, 1, 1)), convs[0].weight, convs[0].bias)
    assert torch.allclose(convs[0](x), first, atol=1e-6)  # padding = zero-padded "valid" convolution
    assert net(x).shape == (2, 10)
    assert "padding=1" in repr(net)
    with pytest.raises(ConfigError, match="too small"):
        NielsenNet(conv=(4, 4, 4, 4), kernel_size=3, padding=0)  # 28 -> 13 -> 5 -> 1, then 3x3 is too big
    assert NielsenNet(conv=(4, 4, 4, 4), kernel_size=3, padding=1)(x).shape == (2, 10)  # 28 -> 14 -> 7 -> 3 -> 1
    with pytest.raises(ConfigError, match="padding"):
        NielsenNet(kernel_size=3, padding=3)


def test_convs_per_pool_stacks_convolutions_before_each_pooling():
    """Each block is conv -> BN -> ReLU -> conv -> BN -> pool -> ReLU, written out with torch.nn.functional."""
    F = torch.nn.functional
    torch.manual_seed(0)
    net = NielsenNet(conv=(3, 5), kernel_size=3, padding=1, convs_per_pool=2, hidden=(7,), dropout=0.0).eval()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert [c.out_channels for c in convs] == [3, 3, 5, 5] and len(norms) == 4
    for m in norms:  # non-trivial statistics and affine parameters
        m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
        m.weight.data.uniform_(0.5, 1.5), m.bias.data.uniform_(-0.5, 0.5)

    def norm(h, m):
        return F.batch_norm(h, m.running_mean, m.running_var, m.weight, m.bias, training=False, eps=m.eps)

    x = torch.rand(2, 1, 28, 28)
    h = x
    for (c1, c2), (n1, n2) in zip(zip(convs[::2], convs[1::2]), zip(norms[::2], norms[1::2])):
        h = F.relu(norm(F.conv2d(h, c1.weight, padding=1), n1))
        h = F.relu(F.max_pool2d(norm(F.conv2d(h, c2.weight, padding=1), n2), 2))
    assert h.shape == (2, 5, 7, 7) and net.classifier[1].in_features == 5 * 7 * 7
    assert torch.allclose(net.features(x), h, atol=1e-5)
    assert "convs_per_pool=2" in repr(net)
    with pytest.raises(ConfigError, match="too small"):
        NielsenNet(conv=(4, 4), kernel_size=5, convs_per_pool=3)  # 28 -> 24 -> 20 -> 16 -> pool 8 -> 4 -> 0
    with pytest.raises(ConfigError, match="convs_per_pool"):
        NielsenNet(convs_per_pool=0)


def test_bad_options():
    with pytest.raises(ConfigError, match="too small"):
        NielsenNet(image_size=8, conv=(20, 40))
    with pytest.raises(ConfigError, match="activation"):
        NielsenNet(activation="swish")
    with pytest.raises(ConfigError, match="dropout"):
        NielsenNet(dropout=1.0)
