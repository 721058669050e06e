from __future__ import annotations

import numpy as np
import pytest
import torch

from descend.data.tensors import Splits, TensorPair
from descend.errors import ConfigError
from descend.network3 import (ConvPoolLayer, FullyConnectedLayer, Network, ReLU, SoftmaxLayer, expand_mnist, linear,
                              load_data_shared, sigmoid, tanh)
from descend.train.trainer import Trainer
from reference import network3 as ref


def tiny_data(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 784, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return x, y


def test_forward_at_test_time_matches_the_numpy_transcription():
    torch.manual_seed(0)
    mbs = 4
    net = Network([
        ConvPoolLayer(image_shape=(mbs, 1, 28, 28), filter_shape=(3, 1, 5, 5), poolsize=(2, 2), activation_fn=ReLU),
        FullyConnectedLayer(n_in=3 * 12 * 12, n_out=7, activation_fn=ReLU, p_dropout=0.5),
        SoftmaxLayer(n_in=7, n_out=10, p_dropout=0.5)], mbs).double()
    with torch.no_grad():
        net.layers[2].w.normal_()  # network3 starts the softmax layer at zero; make the test see it
        net.layers[2].b.normal_()
    x = torch.rand(mbs, 784, dtype=torch.float64)
    c, f, s = net.layers
    expected = ref.forward(x.numpy().reshape(mbs, 1, 28, 28), c.w.detach().numpy(), c.b.detach().numpy(),
                           f.w.detach().numpy(), f.b.detach().numpy(), s.w.detach().numpy(), s.b.detach().numpy(), 0.5)
    net.eval()
    got = net(x).softmax(1).detach().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


def test_training_dropout_keeps_inputs_unscaled():
    layer = FullyConnectedLayer(n_in=1000, n_out=1, activation_fn=lambda z: z, p_dropout=0.5)
    with torch.no_grad():
        layer.w.fill_(1.0)
        layer.b.zero_()
    layer.train()
    out = layer(torch.ones(200, 1000)).detach().flatten()
    # each output counts the kept inputs: Binomial(1000, 0.5), not rescaled by 2
    assert abs(float(out.mean()) - 500) < 10 and set(out.tolist()) <= set(float(k) for k in range(1001))


def test_one_sgd_step_equals_network3s_update_with_its_l2_term():
    torch.manual_seed(0)
    x, y = tiny_data(20)
    val = tiny_data(10, seed=1)
    layer = SoftmaxLayer(n_in=784, n_out=10)
    with torch.no_grad():
        layer.w.normal_(0, 0.01)
        layer.b.normal_(0, 0.01)
    w0, b0 = layer.w.detach().double().numpy().copy(), layer.b.detach().double().numpy().copy()
    net = Network([layer], 20)
    net.SGD((x, y), 1, 20, 0.5, val, None, lmbda=3.0, quiet=True)
    w1, b1 = ref.softmax_layer_sgd_step(x.double().numpy(), y.numpy(), w0, b0, 0.5, 3.0, num_training_batches=1)
    np.testing.assert_allclose(layer.w.detach().numpy(), w1, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(layer.b.detach().numpy(), b1, rtol=1e-4, atol=1e-6)


def test_chapter_calls_train_on_a_small_subset(mnist_dir, capsys):
    torch.manual_seed(0)
    training_data, validation_data, test_data = load_data_shared(mnist_dir / "mnist" / "mnist.pkl.gz")
    assert training_data[0].shape == (50_000, 784) and training_data[1].dtype == torch.int64
    small = lambda d, n: (d[0][:n], d[1][:n])  # noqa: E731
    mini_batch_size = 10
    net = Network([
        ConvPoolLayer(image_shape=(mini_batch_size, 1, 28, 28), filter_shape=(20, 1, 5, 5), poolsize=(2, 2),
                      activation_fn=ReLU),
        FullyConnectedLayer(n_in=20 * 12 * 12, n_out=100, activation_fn=ReLU),
        SoftmaxLayer(n_in=100, n_out=10)], mini_batch_size)
    result = net.SGD(small(training_data, 1000), 1, mini_batch_size, 0.03, small(validation_data, 500),
                     small(test_data, 500), lmbda=0.1)
    out = capsys.readouterr().out
    assert "Epoch 0: validation accuracy" in out and "Best validation accuracy of" in out
    assert "Training mini-batch number 0" in out and "Corresponding test accuracy of" in out
    assert result["best_validation_accuracy"] > 0.5 and result["test_accuracy"] > 0.5  # chance is 0.1


def test_expand_mnist_gives_five_times_the_data():
    x, y = tiny_data(6)
    big_x, big_y = expand_mnist((x, y))
    assert big_x.shape == (30, 784) and torch.equal(torch.bincount(big_y, minlength=10), 5 * torch.bincount(y, minlength=10))


def test_mismatched_layers_are_reported():
    with pytest.raises(ConfigError, match="input maps"):
        ConvPoolLayer(image_shape=(10, 3, 28, 28), filter_shape=(20, 1, 5, 5))
    with pytest.raises(ConfigError, match="p_dropout"):
        FullyConnectedLayer(n_in=3, n_out=2, p_dropout=1.5)
    net = Network([SoftmaxLayer(n_in=784, n_out=10)], 10)
    with pytest.raises(ConfigError, match="fewer than one mini-batch"):
        net.SGD(tiny_data(5), 1, 10, 0.1, tiny_data(5), quiet=True)


# ---------------------------------------------------------------- back-propagation by hand
def _trainer(net, x, y, fused, decay=0.0, lr=0.5, dtype=torch.float32, scheduled=False):
    weights = [p for name, p in net.named_parameters() if name.endswith(".w")]
    biases = [p for name, p in net.named_parameters() if not name.endswith(".w")]
    opt = torch.optim.SGD([{"params": weights, "weight_decay": decay}, {"params": biases, "weight_decay": 0.0}], lr=lr)
    schedule = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5) if scheduled else None
    return Trainer(net, opt, Splits(TensorPair(x.to(dtype), y)), epochs=1, batch_size=10, scheduler=schedule,
                   shuffle=False, quiet=True, checkpoint=False, seed=3, sgd_in_backward=fused)


def test_a_conv_pool_step_by_hand_equals_the_numpy_transcription():
    torch.manual_seed(0)
    conv = ConvPoolLayer(image_shape=(10, 1, 28, 28), filter_shape=(3, 1, 5, 5), activation_fn=sigmoid)
    sm = SoftmaxLayer(n_in=3 * 12 * 12, n_out=10)
    net = Network([conv, sm], 10).double()
    with torch.no_grad():
        sm.w.normal_(0, 0.3)  # network3 starts it at zero, which would hide the conv layer's error
    old = [t.detach().numpy().copy() for t in (conv.w, conv.b, sm.w, sm.b)]
    x, y = tiny_data(10)
    _trainer(net, x, y, fused=True, decay=0.25, dtype=torch.float64).fit()
    expected = ref.conv_pool_sgd_step(x.double().numpy().reshape(10, 1, 28, 28), y.numpy(), *old, eta=0.5,
                                      lmbda=0.25, num_training_batches=1)
    for got, want in zip((conv.w, conv.b, sm.w, sm.b), expected):
        np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-9, atol=1e-12)
    assert all(p.grad is None for p in net.parameters())  # taken by hand: no gradient stored


@pytest.mark.parametrize("activation", [sigmoid, tanh, ReLU, linear])
def test_steps_by_hand_equal_autograd_and_sgd(activation):
    """Two conv-pool layers, dropout, L2 on the weights and a schedule: 20 steps with
    back-propagation by hand against autograd and torch.optim.SGD (the same dropout draws)."""
    def make():
        torch.manual_seed(0)
        return Network([
            ConvPoolLayer(image_shape=(10, 1, 28, 28), filter_shape=(4, 1, 5, 5), activation_fn=activation),
            ConvPoolLayer(image_shape=(10, 4, 12, 12), filter_shape=(6, 4, 5, 5), activation_fn=activation),
            FullyConnectedLayer(n_in=6 * 4 * 4, n_out=30, activation_fn=activation, p_dropout=0.5),
            SoftmaxLayer(n_in=30, n_out=10, p_dropout=0.5)], 10)
    x, y = tiny_data(200)
    nets = []
    for fused in (False, True):
        net = make()
        _trainer(net, x, y, fused, decay=1e-3, lr=0.05, scheduled=True).fit()
        nets.append(net)
    assert all(p.grad is not None for p in nets[0].parameters())
    assert all(p.grad is None for p in nets[1].parameters())
    start = make().state_dict()
    for (name, a), b in zip(nets[0].state_dict().items(), nets[1].state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)
        assert not torch.equal(b, start[name])


def test_an_activation_of_the_users_own_is_back_propagated_by_autograd():
    torch.manual_seed(0)
    net = Network([ConvPoolLayer(image_shape=(10, 1, 28, 28), filter_shape=(4, 1, 5, 5),
                                 activation_fn=torch.nn.functional.softplus),
                   SoftmaxLayer(n_in=4 * 12 * 12, n_out=10)], 10)
    x, y = tiny_data(20)
    _trainer(net, x, y, fused=True).fit()
    assert net.layers[0].w.grad is not None  # autograd, layer by layer; the step then taken by SGD


def test_a_layer_used_twice_cannot_take_its_steps_in_backpropagation():
    fc = FullyConnectedLayer(n_in=784, n_out=784, activation_fn=ReLU)
    net = Network([fc, fc, SoftmaxLayer(n_in=784, n_out=10)], 10)
    x, y = tiny_data(20)
    with pytest.raises(ConfigError, match="enters the loss twice"):
        _trainer(net, x, y, fused=True).fit()


def test_dropout_draws_are_torchs_bernoulli_draws():
    layer = FullyConnectedLayer(n_in=50, n_out=50, activation_fn=linear, p_dropout=0.3)
    with torch.no_grad():
        layer.w.copy_(torch.eye(50))
        layer.b.zero_()
    torch.manual_seed(5)
    kept = layer(torch.ones(40, 50)).detach()
    torch.manual_seed(5)
    torch.testing.assert_close(kept, torch.bernoulli(torch.full((40, 50), 0.7)))
