"""Per-layer learning rates and weight decay with or without biases."""

import pytest
import torch

from descend.errors import ConfigError
from descend.optim import Momentum, param_groups
from descend.optim.param_groups import is_bias


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))


def test_learning_rates_by_pattern_and_decay_without_biases():
    net = _net()
    groups = param_groups(net, {"0.*": 0.1}, weight_decay=1e-3)
    by_name = {n: g for g in groups for n in g["param_names"]}
    assert by_name["0.weight"]["lr"] == 0.1 and by_name["0.weight"]["weight_decay"] == 1e-3
    assert by_name["0.bias"]["lr"] == 0.1 and by_name["0.bias"]["weight_decay"] == 0.0
    assert "lr" not in by_name["2.weight"] and by_name["2.weight"]["weight_decay"] == 1e-3
    assert by_name["2.bias"]["weight_decay"] == 0.0
    assert sorted(by_name) == sorted(n for n, _ in net.named_parameters())


def test_biases_decay_too_when_asked():
    groups = param_groups(_net(), weight_decay=1e-3, no_decay_on_bias=False)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 1e-3 and len(groups[0]["params"]) == 4


def test_groups_drive_an_optimizer_per_layer():
    """A layer with lr 0 does not move; the bias without decay moves like plain momentum."""
    net = _net()
    frozen_before = net[0].weight.detach().clone()
    opt = Momentum(param_groups(net, {"0.weight": 0.0}, weight_decay=0.5), lr=0.1, momentum=0.0)
    x = torch.randn(6, 4)
    opt.zero_grad()
    net(x).sum().backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters()}
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    opt.step()
    assert torch.equal(net[0].weight, frozen_before)
    torch.testing.assert_close(net[2].bias.detach(), before["2.bias"] - 0.1 * grads["2.bias"])
    torch.testing.assert_close(net[2].weight.detach(), before["2.weight"] - 0.1 * (grads["2.weight"] + 0.5 * before["2.weight"]))


def test_frozen_parameters_are_left_out_and_names_are_kept_by_torch():
    net = _net()
    net[0].weight.requires_grad_(False)
    groups = param_groups(net)
    names = [n for g in groups for n in g["param_names"]]
    assert "0.weight" not in names
    opt = torch.optim.SGD(groups, lr=0.1)
    assert opt.param_groups[0]["param_names"]


def test_a_pattern_that_matches_nothing_is_a_config_error():
    with pytest.raises(ConfigError, match=r"match no trainable parameter.*0\.weight"):
        param_groups(_net(), {"encoder.*": 0.1})


def test_invalid_values():
    with pytest.raises(ConfigError, match="lr must be >= 0"):
        param_groups(_net(), {"0.*": -0.1})
    with pytest.raises(ConfigError, match="weight_decay must be >= 0"):
        param_groups(_net(), weight_decay=-1)


def test_is_bias():
    assert is_bias("fc.bias") and is_bias("rnn.bias_ih_l0") and is_bias("bias")
    assert not is_bias("fc.weight") and not is_bias("bias_net.weight")
