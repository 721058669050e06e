"""Lockstep ensembles: after k steps each member equals the same network trained alone."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from descend.errors import ConfigError, ShapeError
from descend.models import NielsenNet
from descend.models.lockstep import Lockstep, lockstep_cross_entropy
from descend.network3 import ConvPoolLayer, FullyConnectedLayer, Network, ReLU, SoftmaxLayer


def network3_net(mbs=10):
    return Network([
        ConvPoolLayer(image_shape=(mbs, 1, 28, 28), filter_shape=(4, 1, 5, 5), poolsize=(2, 2), activation_fn=ReLU),
        ConvPoolLayer(image_shape=(mbs, 4, 12, 12), filter_shape=(6, 4, 5, 5), poolsize=(2, 2), activation_fn=ReLU),
        FullyConnectedLayer(n_in=6 * 4 * 4, n_out=20, activation_fn=ReLU),
        SoftmaxLayer(n_in=20, n_out=10)], mbs)


def batch_norm_net():
    return NielsenNet(conv=(4, 6), kernel_size=3, padding=1, hidden=(16,), dropout=0.0, batch_norm=True)


def train_alone(net, batches, make_optimizer):
    opt = make_optimizer(net.parameters())
    for x, y in batches:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return net


@pytest.mark.parametrize("make_net, flat", [(network3_net, True), (batch_norm_net, False)])
@pytest.mark.parametrize("make_optimizer", [
    lambda p: torch.optim.SGD(p, lr=0.05, weight_decay=1e-3),
    lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
    lambda p: torch.optim.Adam(p, lr=1e-3),
], ids=["sgd+decay", "nesterov", "adam"])
def test_each_member_after_k_steps_equals_it_trained_alone(make_net, flat, make_optimizer):
    g = torch.Generator().manual_seed(1)
    shape = (784,) if flat else (1, 28, 28)
    batches = [(torch.rand(10, *shape, generator=g), torch.randint(0, 10, (10,), generator=g)) for _ in range(5)]
    members = []
    for seed in range(3):
        torch.manual_seed(seed)
        net = make_net()
        if not flat:  # batch norm starts at weight 1, bias 0: make the members differ there too
            with torch.no_grad():
                for p in net.parameters():
                    p.add_(0.1 * torch.randn_like(p))
        members.append(net)
    lockstep = Lockstep([copy.deepcopy(m) for m in members])
    opt = make_optimizer(lockstep.parameters())
    for x, y in batches:
        opt.zero_grad(set_to_none=True)
        lockstep_cross_entropy(lockstep(x), y).backward()
        opt.step()
    for k, net in enumerate(members):
        alone = train_alone(net, batches, make_optimizer)
        got = lockstep.member(k, make_net()).state_dict()
        for name, value in alone.state_dict().items():
            torch.testing.assert_close(got[name], value, rtol=1e-4, atol=1e-5, msg=f"member {k}: {name}")


def test_loss_is_the_sum_of_the_members_mean_losses():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 7, 10, generator=g)
    y = torch.randint(0, 10, (7,), generator=g)
    expected = sum(F.cross_entropy(logits[k], y) for k in range(4))
    torch.testing.assert_close(lockstep_cross_entropy(logits, y), expected)


def test_evaluation_output_is_the_log_of_the_averaged_softmax():
    torch.manual_seed(0)
    members = [batch_norm_net().eval() for _ in range(3)]
    lockstep = Lockstep(members).eval()
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        expected = torch.stack([m(x).softmax(1) for m in members]).mean(0)
        torch.testing.assert_close(lockstep(x).exp(), expected)
        torch.testing.assert_close(lockstep.member_logits(x)[1], members[1](x))


def test_members_of_different_architectures_are_refused():
    with pytest.raises(ConfigError, match="one architecture"):
        Lockstep([batch_norm_net(), NielsenNet(conv=(4, 8), kernel_size=3, padding=1, hidden=(16,))])
    with pytest.raises(ConfigError, match="at least one"):
        Lockstep([])


def test_wrong_output_shape_is_refused():
    with pytest.raises(ShapeError, match="members, batch, classes"):
        lockstep_cross_entropy(torch.zeros(2, 3, 4, 5), torch.zeros(3, dtype=torch.long))
