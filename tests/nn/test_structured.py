"""Recurrent convolutional network for pixel labelling, Deep Learning sec. 9.6, fig. 9.17."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from descend import nn as dnn
from descend.errors import ConfigError, ShapeError


def test_recurrence_matches_fig_9_17_written_out():
    torch.manual_seed(0)
    net = dnn.RecurrentConvNet(3, 4, hidden_channels=5, kernel_size=3, iterations=3).double()
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64)
    U, V, W = net.U[0], net.V, net.W
    ux = F.conv2d(x, U.weight, U.bias, padding=1)
    expected, y_hat = [], None
    for t in range(3):
        h = torch.relu(ux if t == 0 else ux + F.conv2d(y_hat, W.weight, None, padding=1))
        scores = F.conv2d(h, V.weight, V.bias, padding=1)
        expected.append(scores)
        y_hat = torch.softmax(scores, dim=1)
    out = net(x)
    assert len(out) == 3
    for a, b in zip(out, expected):
        torch.testing.assert_close(a, b)
        assert a.shape == (2, 4, 7, 6)                         # same-size structured output


def test_parameters_are_shared_across_iterations_and_gradcheck():
    net = dnn.RecurrentConvNet(1, 3, hidden_channels=2, kernel_size=3, iterations=2, image_layers=2).double()
    n_params = sum(p.numel() for p in net.parameters())
    assert len(net(torch.randn(1, 1, 5, 5, dtype=torch.float64), iterations=6)) == 6
    assert sum(p.numel() for p in net.parameters()) == n_params
    x = torch.randn(1, 1, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: net(t)[-1], (x,))


def test_errors():
    with pytest.raises(ConfigError):
        dnn.RecurrentConvNet(1, 3, iterations=0)
    with pytest.raises(ShapeError):
        dnn.RecurrentConvNet(1, 3)(torch.randn(1, 5, 5))
