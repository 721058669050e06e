from __future__ import annotations

import numpy as np
import pytest
import torch

from descend.errors import ConfigError
from descend.network3 import (ConvPoolLayer, FullyConnectedLayer, Network, ReLU, SoftmaxLayer, expand_mnist,
                              load_data_shared)
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
