"""Explicit back-propagation through time, Deep Learning sec. 10.2.2, eqs. 10.17-10.21.

Oracles: autograd on an independently written unrolled graph (float64), and the literal
NumPy transcription with diag() Jacobians in tests/reference/rnn.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from descend.errors import ConfigError, ShapeError
from descend.nn import LSTM
from descend.nn.bptt import rnn_bptt, tanh_rnn_backward

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for the NumPy oracles
from reference import rnn as ref  # noqa: E402

D = torch.float64


def problem(N, T, F, H, K, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=D) * scale).requires_grad_()

    params = {"U": r(H, F, scale=0.7), "W": r(H, H, scale=0.5), "b": r(H, scale=0.3), "V": r(K, H, scale=0.7), "c": r(K, scale=0.3)}
    x = r(N, T, F)
    h0 = r(N, H, scale=0.5)
    y = torch.randint(0, K, (N, T), generator=g)
    return x, y, h0, params


def autograd_unrolled(x, y, h0, p, reduction="sum"):
    """The unfolded graph of fig. 10.3 built step by step, each h(t) and o(t) kept as a node."""
    hs, os = [], []
    h = h0
    for t in range(x.shape[1]):
        h = torch.tanh(p["b"] + h @ p["W"].T + x[:, t] @ p["U"].T)
        h.retain_grad()
        o = p["c"] + h @ p["V"].T
        o.retain_grad()
        hs.append(h)
        os.append(o)
    loss = sum(torch.nn.functional.cross_entropy(o, y[:, t], reduction="sum") for t, o in enumerate(os))
    if reduction == "mean":
        loss = loss / x.shape[0]
    loss.backward()
    return loss, hs, os


@settings(max_examples=20, deadline=None)
@given(
    N=st.integers(1, 4),
    T=st.integers(1, 7),
    F=st.integers(1, 4),
    H=st.integers(1, 5),
    K=st.integers(1, 4),
    reduction=st.sampled_from(["sum", "mean"]),
    seed=st.integers(0, 1000),
)
def test_every_bptt_gradient_equals_autograd(N, T, F, H, K, reduction, seed):
    x, y, h0, p = problem(N, T, F, H, K, seed)
    g = rnn_bptt(x, y, p["U"], p["W"], p["b"], p["V"], p["c"], h0, reduction=reduction)
    loss, hs, os = autograd_unrolled(x, y, h0, p, reduction)
    tol = {"rtol": 1e-10, "atol": 1e-12}
    torch.testing.assert_close(g.loss, loss.detach(), **tol)
    torch.testing.assert_close(g.h, torch.stack(hs, 1).detach(), **tol)
    torch.testing.assert_close(g.o, torch.stack([o.grad for o in os], 1), **tol)  # eq. 10.18
    torch.testing.assert_close(g.h_grad, torch.stack([h.grad for h in hs], 1), **tol)  # eqs. 10.19-10.21
    for name in ("U", "W", "b", "V", "c"):
        torch.testing.assert_close(getattr(g, name), p[name].grad, **tol)
    torch.testing.assert_close(g.h0, h0.grad, **tol)


def test_bptt_matches_the_literal_numpy_transcription():
    x, y, h0, p = problem(3, 6, 2, 4, 3, seed=11)
    g = rnn_bptt(x, y, p["U"], p["W"], p["b"], p["V"], p["c"], h0)
    P = [p[k].detach().numpy() for k in ("U", "W", "b", "V", "c")]
    total = {k: 0.0 for k in ("U", "W", "b", "V", "c")}
    loss = 0.0
    for n in range(3):
        ln, gn = ref.rnn_bptt(x[n].detach().numpy(), y[n].numpy(), *P, h0=h0[n].detach().numpy())
        loss += ln
        np.testing.assert_allclose(g.o[n].numpy(), gn["o"], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(g.h_grad[n].numpy(), gn["h"], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(g.h0[n].numpy(), gn["h0"], rtol=1e-10, atol=1e-12)
        for k in total:
            total[k] = total[k] + gn[k]
    np.testing.assert_allclose(g.loss.item(), loss, rtol=1e-12)
    for k, v in total.items():
        np.testing.assert_allclose(getattr(g, k).numpy(), v, rtol=1e-10, atol=1e-12)


def test_softmax_output_gradient_is_y_hat_minus_onehot():
    """Eq. 10.18 read directly off the returned tensors."""
    x, y, h0, p = problem(2, 3, 2, 3, 4, seed=5)
    g = rnn_bptt(x, y, p["U"], p["W"], p["b"], p["V"], p["c"], h0)
    onehot = torch.nn.functional.one_hot(y, 4).to(D)
    torch.testing.assert_close(g.o, g.y_hat - onehot)
    torch.testing.assert_close(g.o.sum(2), torch.zeros(2, 3, dtype=D), atol=1e-12, rtol=0)


def test_recursion_with_a_downstream_gradient_on_the_final_state():
    """tanh_rnn_backward with grad_hT: the gradient a later truncated-BPTT chunk or a
    sequence-to-one head sends into h(tau)."""
    g = torch.Generator().manual_seed(0)
    T, N, H = 5, 3, 4
    W = torch.randn(H, H, generator=g, dtype=D) * 0.6
    ax = torch.randn(T, N, H, generator=g, dtype=D)
    h0 = torch.randn(N, H, generator=g, dtype=D).requires_grad_()
    direct = torch.randn(T, N, H, generator=g, dtype=D)
    grad_hT = torch.randn(N, H, generator=g, dtype=D)
    hs, h = [], h0
    for t in range(T):
        h = torch.tanh(ax[t] + h @ W.T)
        h.retain_grad()
        hs.append(h)
    ((torch.stack(hs) * direct).sum() + (hs[-1] * grad_hT).sum()).backward()
    grad_a, grad_h0, grad_h = tanh_rnn_backward(direct, torch.stack(hs).detach(), W, grad_hT, return_h_grad=True)
    torch.testing.assert_close(grad_h, torch.stack([h.grad for h in hs]))
    torch.testing.assert_close(grad_h0, h0.grad)


def test_lstm_explicit_bptt_equals_autograd_through_the_cell():
    torch.manual_seed(0)
    a = LSTM(3, 4, dtype=D, explicit_bptt=True)
    b = LSTM(3, 4, dtype=D, explicit_bptt=False)
    b.load_state_dict(a.state_dict())
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 7, 3, generator=g, dtype=D)
    w = torch.randn(2, 7, 4, generator=g, dtype=D)
    grads = []
    for m in (a, b):
        xx = x.clone().requires_grad_()
        h0 = torch.zeros(2, 4, dtype=D, requires_grad=True)
        s0 = torch.zeros(2, 4, dtype=D, requires_grad=True)
        out, (hT, sT) = m(xx, (h0, s0))
        ((out * w).sum() + (sT**2).sum() + hT.sum()).backward()
        grads.append([xx.grad, h0.grad, s0.grad] + [p.grad for p in m.parameters()])
    for ga, gb in zip(*grads):
        torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-12)


def test_bptt_rejects_bad_shapes_and_options():
    x, y, h0, p = problem(2, 3, 2, 3, 4)
    args = (p["U"], p["W"], p["b"], p["V"], p["c"])
    with pytest.raises(ShapeError, match="to match x"):
        rnn_bptt(x, y[:, :2], *args)
    with pytest.raises(ShapeError, match=r"\(batch, time, features\)"):
        rnn_bptt(x[0], y, *args)
    with pytest.raises(ShapeError, match="parameter shapes"):
        rnn_bptt(x, y, p["U"].T, p["W"], p["b"], p["V"], p["c"])
    with pytest.raises(ConfigError, match="reduction"):
        rnn_bptt(x, y, *args, reduction="avg")
