"""SGD steps taken in back-propagation (descend.optim.in_backward) against network3's update
in NumPy and against torch.optim.SGD stepping stored gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from descend.data.tensors import Splits, TensorPair
from descend.errors import ConfigError
from descend.network3 import ConvPoolLayer, FullyConnectedLayer, Network, ReLU, SoftmaxLayer
from descend.optim import SGD, Adam, in_backward
from descend.train.trainer import Trainer
from reference import network3 as ref


def _data(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorPair(torch.rand(n, 784, generator=g), torch.randint(0, 10, (n,), generator=g))


def _conv_net(p_dropout=0.5):
    return Network([
        ConvPoolLayer(image_shape=(10, 1, 28, 28), filter_shape=(4, 1, 5, 5), activation_fn=ReLU),
        FullyConnectedLayer(n_in=4 * 12 * 12, n_out=30, activation_fn=ReLU, p_dropout=p_dropout),
        FullyConnectedLayer(n_in=30, n_out=20, activation_fn=ReLU, p_dropout=p_dropout),
        SoftmaxLayer(n_in=20, n_out=10, p_dropout=p_dropout)], 10)


def _groups(net, decay):
    weights = [p for name, p in net.named_parameters() if name.endswith(".w")]
    biases = [p for name, p in net.named_parameters() if not name.endswith(".w")]
    return [{"params": weights, "weight_decay": decay}, {"params": biases, "weight_decay": 0.0}]


def test_a_two_layer_step_equals_backpropagation_at_the_old_weights():
    torch.manual_seed(0)
    fc, sm = FullyConnectedLayer(n_in=784, n_out=16, activation_fn=ReLU), SoftmaxLayer(n_in=16, n_out=10)
    net = Network([fc, sm], 20).double()
    with torch.no_grad():
        sm.w.normal_(0, 0.3)  # network3 starts it at zero, which would hide delta2 @ w2.T
    old = [t.detach().numpy().copy() for t in (fc.w, fc.b, sm.w, sm.b)]
    data = _data(20)
    x, y = data.x.double(), data.y
    opt = torch.optim.SGD(_groups(net, 0.25), lr=0.5)
    trainer = Trainer(net, opt, Splits(TensorPair(x, y)), epochs=1, batch_size=20, shuffle=False, quiet=True,
                      checkpoint=False, sgd_in_backward=True)
    trainer.fit()
    expected = ref.two_layer_sgd_step(x.numpy(), y.numpy(), *old, eta=0.5, lmbda=0.25, num_training_batches=1)
    for got, want in zip((fc.w, fc.b, sm.w, sm.b), expected):
        np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-10, atol=1e-12)
    assert fc.w.grad is None and sm.w.grad is None  # never stored


@pytest.mark.parametrize("optimizer", ["torch", "descend"])
def test_training_matches_sgd_on_stored_gradients(optimizer):
    """Conv net with dropout, a learning-rate schedule and L2 on the weights: 30 steps with
    the weights' steps in back-propagation against the optimizer stepping every gradient."""
    torch.manual_seed(0)
    init = _conv_net().state_dict()
    nets = []
    for fused in (False, True):
        torch.manual_seed(0)
        net = _conv_net()
        make = torch.optim.SGD if optimizer == "torch" else SGD
        opt = make(_groups(net, 1e-3), lr=0.05)
        schedule = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5)
        trainer = Trainer(net, opt, Splits(_data(300)), epochs=1, batch_size=10, scheduler=schedule, quiet=True,
                          checkpoint=False, seed=3, sgd_in_backward=fused)
        trainer.fit()
        nets.append(net)
    for (name, a), b in zip(nets[0].state_dict().items(), nets[1].state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)
        assert not torch.equal(b, init[name])  # every parameter moved


def test_outside_a_scope_the_product_is_ordinary():
    w = torch.randn(5, 3, requires_grad=True)
    x = torch.randn(4, 5)
    opt = torch.optim.SGD([w], lr=0.1)
    in_backward.matmul(x, w).sum().backward()  # no scope: w gets its gradient
    torch.testing.assert_close(w.grad, x.t() @ torch.ones(4, 3))
    w.grad = None
    before = w.detach().clone()
    with in_backward.steps(opt), torch.no_grad():
        out = in_backward.matmul(x, w)  # no graph: an ordinary product, nothing updated
    assert not out.requires_grad and torch.equal(w, before)
    with in_backward.steps(opt):
        loss = in_backward.matmul(x, w).sum()
    loss.backward()  # the step happens here, after the scope closed
    torch.testing.assert_close(w.detach(), before - 0.1 * x.t() @ torch.ones(4, 3))
    assert w.grad is None
    other = torch.randn(5, 3, requires_grad=True)  # not in the optimizer
    with in_backward.steps(opt):
        in_backward.matmul(x, other).sum().backward()
    assert other.grad is not None


def test_the_gradient_to_the_layer_below_uses_the_old_weights():
    torch.manual_seed(0)
    w = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    w0 = w.detach().clone()
    opt = torch.optim.SGD([w], lr=10.0)  # a big step: using the new weights would show
    with in_backward.steps(opt):
        (in_backward.matmul(x, w) ** 2).sum().backward()
    xx = x.detach().clone().requires_grad_()
    (xx @ w0).pow(2).sum().backward()
    torch.testing.assert_close(x.grad, xx.grad)


def test_only_plain_sgd_is_accepted():
    w = torch.nn.Parameter(torch.randn(3, 3))
    for opt in (torch.optim.SGD([w], lr=0.1, momentum=0.9), Adam([w], lr=0.1)):
        with pytest.raises(ConfigError, match="plain SGD"):
            with in_backward.steps(opt):
                pass
    data = Splits(_data(20))
    net = _conv_net()
    for options in ({"clip_norm": 1.0}, {"nonfinite": "skip"}, {"amp": "fp16"}):
        with pytest.raises(ConfigError, match="sgd_in_backward cannot be combined with"):
            Trainer(net, torch.optim.SGD(net.parameters(), lr=0.1), data, quiet=True, checkpoint=False,
                    sgd_in_backward=True, **options)


def test_a_weight_used_twice_in_one_step_is_refused():
    w = torch.nn.Parameter(torch.randn(4, 4))
    opt = torch.optim.SGD([w], lr=0.1)
    with pytest.raises(ConfigError, match="enters the loss twice"):
        with in_backward.steps(opt):
            in_backward.matmul(in_backward.matmul(torch.randn(2, 4), w), w)
    with in_backward.steps(opt):  # the scope closed cleanly: a new step may use it once again
        in_backward.matmul(torch.randn(2, 4), w).sum().backward()


def test_network3_training_takes_its_steps_in_backward():
    torch.manual_seed(0)
    net = _conv_net(0.0)
    net.SGD(_data(40), 1, 10, 0.1, _data(10, 1), None, lmbda=0.1, quiet=True)
    assert all(p.grad is None for p in net.parameters())  # every step taken in back-propagation
