"""Back-propagation through time, written out (Deep Learning sec. 10.2.2, eqs. 10.17-10.21).

BPTT is nothing but back-propagation applied to the unfolded graph of fig. 10.3
(sec. 10.2.2: "no specialized algorithms are necessary"). This file spells the
recursion out anyway, for two reasons:

* ``rnn_bptt`` is the text's derivation as code: for the RNN of eqs. 10.8-10.11 with
  the negative log-likelihood loss of eqs. 10.12-10.14 it returns every gradient the
  equations define (``dL/do(t)``, ``dL/dh(t)``, and the parameter gradients), and the
  tests check each one against autograd in float64.
* ``tanh_rnn_backward`` and ``lstm_backward`` are the same recursions for an arbitrary
  upstream gradient on the hidden states. ``descend.nn.RNN`` and ``descend.nn.LSTM``
  with ``bptt="explicit"`` use them as their backward pass: one short loop over time
  with two to four tensor operations per step, instead of autograd's replay of every per-step node
  (benchmarks/rnn.py compares them with torch's fused kernels).

Tensors here are *time-major*, ``(T, N, ...)``, so that ``h[t]`` is a contiguous
``(N, H)`` block; the modules in ``recurrent.py`` take and return batch-first
``(N, T, F)`` sequences and transpose at the boundary. A loop over the T time steps is
inherent to BPTT (eq. 10.21 needs ``dL/dh(t+1)`` before ``dL/dh(t)``); nothing loops
over the batch or over units.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from descend.errors import ConfigError, ShapeError


@dataclass
class BPTTGradients:
    r"""Every gradient of eqs. 10.17-10.21 (and the parameter gradients that follow them).

    Batched over N independent sequences. With ``reduction="sum"`` the loss is
    :math:`L = \sum_n \sum_t L_n^{(t)}` so eq. 10.17 (:math:`\partial L / \partial L^{(t)} = 1`)
    holds literally; with ``"mean"`` every gradient is divided by N.

    Shapes are batch-first, as the modules use them.

    Attributes:
        loss: the scalar loss, eqs. 10.12-10.14.
        y_hat: softmax outputs :math:`\hat{y}^{(t)}` of eq. 10.11, ``(N, T, K)``.
        h: hidden states :math:`h^{(t)}` of eq. 10.9, ``(N, T, H)``.
        o: :math:`\nabla_{o^{(t)}} L`, eq. 10.18, ``(N, T, K)``.
        h_grad: :math:`\nabla_{h^{(t)}} L`, eqs. 10.19-10.21, ``(N, T, H)`` (the total
            gradient, through both :math:`o^{(t)}` and :math:`h^{(t+1)}`).
        a: :math:`\nabla_{a^{(t)}} L = \operatorname{diag}\bigl(1 - (h^{(t)})^2\bigr) \nabla_{h^{(t)}} L`,
            ``(N, T, H)``.
        c, b, V, W, U: parameter gradients (the book's eqs. 10.22-10.28, just past the
            end of the excerpt; they are the chain rule summed over t, because the
            parameters are shared across time steps, sec. 10.1).
        h0: :math:`\nabla_{h^{(0)}} L`, the gradient that truncated BPTT would pass to an
            earlier chunk.
    """

    loss: Tensor
    y_hat: Tensor
    h: Tensor
    o: Tensor
    h_grad: Tensor
    a: Tensor
    c: Tensor
    b: Tensor
    V: Tensor
    W: Tensor
    U: Tensor
    h0: Tensor


@torch.no_grad()
def rnn_bptt(
    x: Tensor,
    y: Tensor,
    U: Tensor,
    W: Tensor,
    b: Tensor,
    V: Tensor,
    c: Tensor,
    h0: Tensor | None = None,
    reduction: str = "sum",
) -> BPTTGradients:
    r"""Forward eqs. 10.8-10.14, then back-propagation through time, eqs. 10.17-10.21.

    Args:
        x: inputs ``x(1..tau)``, ``(N, T, F)``.
        y: integer targets ``y(1..tau)``, ``(N, T)``.
        U: input-to-hidden weights ``(H, F)``; W: hidden-to-hidden ``(H, H)``;
        b: hidden bias ``(H,)``; V: hidden-to-output ``(K, H)``; c: output bias ``(K,)``.
        h0: initial state ``h(0)``, ``(N, H)``; zeros if None.
        reduction: ``"sum"`` (the text's total loss over every sequence) or ``"mean"``
            (divided by the number of sequences N, the convention of
            ``descend.nn.sequence_nll`` and of mini-batch training).

    Forward (eqs. 10.8-10.14), for :math:`t = 1, \dots, \tau`:

    .. math::

        \begin{aligned}
        a^{(t)} &= b + W h^{(t-1)} + U x^{(t)} && \text{(10.8)} \\
        h^{(t)} &= \tanh(a^{(t)}) && \text{(10.9)} \\
        o^{(t)} &= c + V h^{(t)} && \text{(10.10)} \\
        \hat{y}^{(t)} &= \operatorname{softmax}(o^{(t)}) && \text{(10.11)} \\
        L &= -\sum_t \log \hat{y}^{(t)}_{y^{(t)}} && \text{(10.12-10.14)}
        \end{aligned}

    Backward:

    .. math::

        \begin{aligned}
        \frac{\partial L}{\partial L^{(t)}} &= 1 && \text{(10.17)} \\
        (\nabla_{o^{(t)}} L)_i &= \hat{y}^{(t)}_i - \mathbf{1}_{i, y^{(t)}} && \text{(10.18)} \\
        \nabla_{h^{(\tau)}} L &= V^\top \nabla_{o^{(\tau)}} L && \text{(10.19)} \\
        \nabla_{h^{(t)}} L &= \Bigl(\frac{\partial h^{(t+1)}}{\partial h^{(t)}}\Bigr)^{\!\top} (\nabla_{h^{(t+1)}} L)
            + \Bigl(\frac{\partial o^{(t)}}{\partial h^{(t)}}\Bigr)^{\!\top} (\nabla_{o^{(t)}} L) && \text{(10.20)} \\
        &= W^\top \operatorname{diag}\bigl(1 - (h^{(t+1)})^2\bigr) (\nabla_{h^{(t+1)}} L)
            + V^\top (\nabla_{o^{(t)}} L) && \text{(10.21)}
        \end{aligned}

    The excerpt prints eq. 10.21 as
    :math:`W^\top (\nabla_{h^{(t+1)}} L) \operatorname{diag}(1 - (h^{(t+1)})^2)`; the diagonal
    Jacobian of tanh acts on the gradient vector before :math:`W^\top`, as written above.
    In row-vector (batched) form :math:`W^\top v` is ``v @ W``. Parameter gradients, with
    :math:`\nabla_{a^{(t)}} L = \operatorname{diag}\bigl(1 - (h^{(t)})^2\bigr) \nabla_{h^{(t)}} L`:

    .. math::

        \begin{aligned}
        \nabla_c L &= \sum_t \nabla_{o^{(t)}} L
        & \nabla_V L &= \sum_t (\nabla_{o^{(t)}} L)\, h^{(t)\top} \\
        \nabla_b L &= \sum_t \nabla_{a^{(t)}} L
        & \nabla_W L &= \sum_t (\nabla_{a^{(t)}} L)\, h^{(t-1)\top} \\
        \nabla_U L &= \sum_t (\nabla_{a^{(t)}} L)\, x^{(t)\top}
        \end{aligned}
    """
    if reduction not in ("sum", "mean"):
        raise ConfigError(f"Invalid reduction: {reduction!r}; use 'sum' or 'mean'")
    if x.dim() != 3:
        raise ShapeError(f"x must be (batch, time, features); got shape {tuple(x.shape)}")
    N, T, F = x.shape
    H, K = W.shape[0], V.shape[0]
    if y.shape != (N, T):
        raise ShapeError(f"y must be (batch, time) = {(N, T)} to match x; got {tuple(y.shape)}")
    if U.shape != (H, F) or W.shape != (H, H) or b.shape != (H,) or V.shape != (K, H) or c.shape != (K,):
        raise ShapeError(
            f"parameter shapes do not fit F={F}: need U (H, F), W (H, H), b (H,), V (K, H), c (K,); "
            f"got U {tuple(U.shape)}, W {tuple(W.shape)}, b {tuple(b.shape)}, V {tuple(V.shape)}, c {tuple(c.shape)}"
        )
    h0 = x.new_zeros(N, H) if h0 is None else h0
    xt = x.transpose(0, 1)  # (T, N, F): time-major, so xt[t] is one step of the whole batch

    # Forward, eqs. 10.8-10.11. U x(t) + b for every t is one matrix product outside the loop.
    ax = torch.einsum("tnf,hf->tnh", xt, U) + b
    h = torch.empty(T, N, H, dtype=x.dtype, device=x.device)
    prev = h0
    for t in range(T):
        h[t] = torch.tanh(ax[t] + prev @ W.T)  # eqs. 10.8-10.9
        prev = h[t]
    o = h @ V.T + c  # eq. 10.10
    y_hat = torch.softmax(o, dim=2)  # eq. 10.11
    yt = y.transpose(0, 1)
    onehot = torch.nn.functional.one_hot(yt, K).to(x.dtype)
    scale = 1.0 if reduction == "sum" else 1.0 / N
    loss = -(torch.log_softmax(o, dim=2) * onehot).sum() * scale  # eqs. 10.12-10.14

    # Backward. Eqs. 10.17-10.18: every L(t) enters L with weight 1 (times 1/N for "mean").
    grad_o = (y_hat - onehot) * scale
    direct = grad_o @ V  # V^T dL/do(t): the part of dL/dh(t) that flows through o(t)
    grad_a, grad_h0, grad_h = tanh_rnn_backward(direct, h, W, return_h_grad=True)

    h_prev = torch.cat([h0.unsqueeze(0), h[:-1]])  # h(t-1) for t = 1..tau
    return BPTTGradients(
        loss=loss,
        y_hat=y_hat.transpose(0, 1),
        h=h.transpose(0, 1),
        o=grad_o.transpose(0, 1),
        h_grad=grad_h.transpose(0, 1),
        a=grad_a.transpose(0, 1),
        c=grad_o.sum((0, 1)),
        b=grad_a.sum((0, 1)),
        V=torch.einsum("tnk,tnh->kh", grad_o, h),
        W=torch.einsum("tni,tnj->ij", grad_a, h_prev),
        U=torch.einsum("tnh,tnf->hf", grad_a, xt),
        h0=grad_h0,
    )


def tanh_rnn_backward(
    direct: Tensor,
    h: Tensor,
    W: Tensor,
    grad_hT: Tensor | None = None,
    return_h_grad: bool = False,
):
    r"""The recursion of eqs. 10.19-10.21 for any gradient arriving directly at each h(t).

    Args:
        direct: ``(T, N, H)``, the gradient on ``h(t)`` from everything except ``h(t+1)``
            (for the network of fig. 10.3 that is ``V^T dL/do(t)``).
        h: ``(T, N, H)``, the hidden states ``h(1..tau)`` of the forward pass.
        W: ``(H, H)``, the hidden-to-hidden weights.
        grad_hT: ``(N, H)`` or None, a gradient on the final state ``h(tau)`` from
            downstream (a later truncated-BPTT chunk or a sequence-to-one head).
        return_h_grad: also return the total ``dL/dh(t)`` for every t.

    Returns:
        ``(grad_a, grad_h0)`` (plus ``grad_h`` if asked): ``grad_a[t] = dL/da(t)``, from
        which every parameter gradient is one batched product, and ``dL/dh(0)``.

    Two tensor operations per time step (:math:`d^{(t)}` = ``direct[t]``):

    .. math::

        \begin{aligned}
        \nabla_{a^{(t)}} L &= \nabla_{h^{(t)}} L \odot \bigl(1 - (h^{(t)})^2\bigr) \\
        \nabla_{h^{(t-1)}} L &= d^{(t-1)} + W^\top \nabla_{a^{(t)}} L && \text{one fused addmm}
        \end{aligned}
    """
    T = h.shape[0]
    dtanh = 1.0 - h * h  # diag(1 - h(t)^2) for every t at once
    grad_a = torch.empty_like(h)
    grad_h = torch.empty_like(h) if return_h_grad else None
    gh = direct[T - 1] if grad_hT is None else direct[T - 1] + grad_hT  # eq. 10.19
    for t in range(T - 1, -1, -1):
        if grad_h is not None:
            grad_h[t] = gh
        torch.mul(gh, dtanh[t], out=grad_a[t])
        if t > 0:
            gh = torch.addmm(direct[t - 1], grad_a[t], W)  # eqs. 10.20-10.21
    grad_h0 = grad_a[0] @ W
    if return_h_grad:
        return grad_a, grad_h0, grad_h
    return grad_a, grad_h0


def lstm_backward(
    direct: Tensor,
    acts: Tensor,
    s: Tensor,
    tanh_s: Tensor,
    W: Tensor,
    grad_hT: Tensor | None = None,
    grad_sT: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Back-propagation through time for the LSTM of sec. 10.10 (see ``descend.nn.LSTM``).

    Args:
        direct: ``(T, N, H)``, gradient arriving at each output ``h(t)`` from outside
            the recurrence.
        acts: ``(T, N, 4H)``, the gate activations of the forward pass in the block
            order ``[q, g, f, z]``: output gate, input gate, forget gate, cell input
            (tanh). (``descend.nn.LSTM`` keeps this order internally; it stores its
            parameters in torch's order [g, f, z, q].)
        s: ``(T+1, N, H)``, the cell states ``s(0..tau)``.
        tanh_s: ``(T, N, H)``, ``tanh(s(1..tau))``.
        W: ``(4H, H)``, recurrent weights, rows in the order of ``acts``.
        grad_hT, grad_sT: gradients on the final ``h(tau)``, ``s(tau)`` from downstream.

    Returns:
        ``(grad_pre, grad_h0, grad_s0)``: ``grad_pre[t]`` is dL/d(pre-activation of every
        gate) ``(N, 4H)`` in the order of ``acts`` (a strided view), from which the weight
        gradients are batched products.

    With :math:`h^{(t)} = q \odot \tanh(s^{(t)})` and
    :math:`s^{(t)} = f \odot s^{(t-1)} + g \odot z` (all products element-wise, :math:`p_x`
    the pre-activation of gate :math:`x`, :math:`d^{(t)}` = ``direct[t]``):

    .. math::

        \begin{aligned}
        \nabla_{s^{(t)}} L &\mathrel{+}= \nabla_{h^{(t)}} L \odot q \odot \bigl(1 - \tanh^2(s^{(t)})\bigr) \\
        \nabla_{p_g} L &= \nabla_{s^{(t)}} L \odot z \odot g (1 - g)
        & \nabla_{p_f} L &= \nabla_{s^{(t)}} L \odot s^{(t-1)} \odot f (1 - f) \\
        \nabla_{p_z} L &= \nabla_{s^{(t)}} L \odot g \odot (1 - z^2)
        & \nabla_{p_q} L &= \nabla_{h^{(t)}} L \odot \tanh(s^{(t)}) \odot q (1 - q) \\
        \nabla_{s^{(t-1)}} L &= \nabla_{s^{(t)}} L \odot f
        & \nabla_{h^{(t-1)}} L &= d^{(t-1)} + W^\top \nabla_{p^{(t)}} L
        \end{aligned}

    Every factor that does not depend on the gradient is computed for all t at once
    before the loop, into a buffer ``[q, g, f, z, f]`` per step: the coefficients of
    dL/dh(t) (block q) and of dL/ds(t) (the other four, the last being f itself, so the
    same in-place product also gives dL/ds(t-1)). What is left per step is four tensor
    operations (dL/ds(t), two in-place scalings, one fused ``addmm`` accumulating into
    the buffer of dL/dh), each on a view made once before the loop: Python overhead,
    not arithmetic, is the cost at small sizes.
    """
    T, N, H4 = acts.shape
    H = H4 // 4
    q, g, f, z = acts.chunk(4, dim=2)
    # The coefficients, written with fused ops (a - a*b as addcmul(a, a, b, value=-1)):
    # these are the only passes over whole (T, N, H) arrays, and memory traffic is their cost.
    coef = torch.empty(T, N, 5 * H, dtype=acts.dtype, device=acts.device)
    pre_q, pre_g, pre_f, pre_z, ds_f = coef.chunk(5, dim=2)
    torch.addcmul(q, q, q, value=-1, out=pre_q).mul_(tanh_s)  # tanh(s) q (1 - q)
    torch.addcmul(g, g, g, value=-1, out=pre_g).mul_(z)  # z g (1 - g)
    torch.addcmul(f, f, f, value=-1, out=pre_f).mul_(s[:-1])  # s(t-1) f (1 - f)
    torch.addcmul(g, g, z * z, value=-1, out=pre_z)  # g (1 - z^2)
    ds_f.copy_(f)  # f: dL/ds(t) * f is the part of dL/ds(t-1) that flows through s
    dh_to_ds = torch.addcmul(q, q, tanh_s * tanh_s, value=-1)  # dL/dh(t) -> dL/ds(t): q (1 - tanh(s)^2)
    # dL/dh(t) for every t: ``direct`` plus, filled in by the loop, W^T dL/dpre(t+1).
    dh = direct.clone(memory_format=torch.contiguous_format)
    if grad_hT is not None:
        dh[T - 1] += grad_hT
    ds = torch.empty_like(dh[0])  # dL/ds(t)
    ds_4 = ds.unsqueeze(1)  # broadcast over the four blocks g, f, z, f
    last = torch.zeros_like(ds) if grad_sT is None else grad_sT  # dL/ds(tau) from downstream
    # Per-step views, made once (in the loop, indexing is a Python list lookup).
    dh_t, to_ds_t, pre_t = dh.unbind(0), dh_to_ds.unbind(0), coef[:, :, : 4 * H].unbind(0)
    by_ds_t = coef.view(T, N, 5, H)[:, :, 1:].unbind(0)
    q_t, ds_f_t = pre_q.unbind(0), [*ds_f[1:].unbind(0), last]  # ds_f_t[t]: dL/ds(t+1) f(t+1)
    for t in range(T - 1, -1, -1):
        torch.addcmul(ds_f_t[t], dh_t[t], to_ds_t[t], out=ds)  # dL/ds(t)
        by_ds_t[t].mul_(ds_4)  # dL/dpre of g, f, z, and dL/ds(t) f(t)
        q_t[t].mul_(dh_t[t])  # dL/dpre_q
        if t > 0:
            dh_t[t - 1].addmm_(pre_t[t], W)  # eqs. 10.20-10.21 for the LSTM: += W^T dL/dpre(t)
    grad_pre = coef[:, :, : 4 * H]
    grad_h0 = grad_pre[0] @ W
    return grad_pre, grad_h0, ds_f[0].clone()
