r"""Plain SGD steps taken inside back-propagation: for the weight matrices of ``x @ W``, and
for every parameter of a backward pass written by hand.

At the small minibatches of NNDL chapter 6 (m = 10) a step of SGD (Deep Learning
Algorithm 8.1) with L2 weight decay (sec. 7.1.1) on a 1000 x 1000 weight
matrix is mostly memory traffic: back-propagation writes the gradient, weight decay
reads it and the weights and writes their sum, the step reads that and the weights and
writes the weights. But the gradient of a product ``z = x W`` with respect to ``W`` is the
sum over the minibatch of outer products of the layer's input and its error (NNDL
eq. BP4, ``dC/dw_jk = a_k delta_j``): ``dC/dW = x^T delta``. So the whole update

.. math::

    W \leftarrow W - \epsilon (x^\top \delta + \lambda W)
      = (1 - \epsilon \lambda) W - \epsilon\, x^\top \delta

(NNDL ch. 3's regularized rule ``w -> (1 - eta lambda / n) w - (eta / m) sum_x dC_x/dw``, the factors
absorbed in ``lambda`` and ``delta``) is one BLAS call, ``W.addmm_(x^T, delta, beta=1 -
eps lambda, alpha=-eps)``, taken in the backward pass right after ``W`` has carried
``delta`` to the layer below (``delta W^T``). The gradient is never stored, and the
weights are read and written once.

The updates are those of ``torch.optim.SGD(momentum=0)`` (or :class:`descend.optim.SGD`)
with the group's ``lr`` and ``weight_decay`` (coupled and decoupled decay coincide for plain
SGD), to float rounding. Usage (the Trainer does this with ``sgd_in_backward=True``)::

    with in_backward.steps(optimizer):
        loss = loss_fn(model(x), y)    # layers compute x @ W with in_backward.matmul(x, W)
    loss.backward()                    # ... which updates those W here; they get no .grad
    optimizer.step()                   # the other parameters (biases, convolutions)

A backward pass written by hand (network3's :class:`~descend.network3.Network` writes out
its whole back-propagation) asks :func:`claim` for its parameters' groups and takes their
steps with :func:`sgd_step` and :func:`matmul_sgd_step`.

A weight taken through :func:`matmul` outside a :func:`steps` scope, without gradients,
under autocast, or not in the optimizer, is an ordinary product: its gradient lands in
``.grad`` and ``optimizer.step`` updates it, so nothing is ever updated twice or missed.
What cannot see the fused weights' gradients (gradient clipping, the non-finite guard,
data-parallel averaging, a gradient scaler, callbacks that read ``.grad``) must not be
combined with it; the Trainer refuses those combinations.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import Tensor
from torch.utils.weak import WeakIdKeyDictionary

from descend.errors import ConfigError
from descend.optim.sgd import SGD

# Weight -> its param group (read at backward time, so a schedule's lr applies), while a
# `steps` scope is open; and the weights already used in the scope's forward pass.
_ACTIVE: WeakIdKeyDictionary = WeakIdKeyDictionary()
_USED: WeakIdKeyDictionary = WeakIdKeyDictionary()


def check_plain_sgd(optimizer: torch.optim.Optimizer) -> None:
    """Raise unless every param group of ``optimizer`` is plain SGD (Algorithm 8.1)."""
    if type(optimizer) not in (torch.optim.SGD, SGD):
        raise ConfigError(
            f"updates in back-propagation are plain SGD steps; {type(optimizer).__name__} is not plain SGD. "
            "Use torch.optim.SGD or descend.optim.SGD without momentum, or train without sgd_in_backward"
        )
    for i, group in enumerate(optimizer.param_groups):
        if group.get("momentum", 0) or group.get("nesterov", False) or group.get("maximize", False):
            raise ConfigError(
                f"param group {i} uses momentum, Nesterov or maximize; updates in back-propagation are plain "
                "SGD steps (Algorithm 8.1). Set momentum = 0 or train without sgd_in_backward"
            )


@contextlib.contextmanager
def steps(optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """While open, :func:`matmul` of a weight in ``optimizer`` builds a product whose
    backward pass takes that weight's SGD step. Open it around the forward pass only."""
    check_plain_sgd(optimizer)
    for group in optimizer.param_groups:
        for p in group["params"]:
            _ACTIVE[p] = group
    try:
        yield
    finally:
        _ACTIVE.clear()
        _USED.clear()


def _steppable(p: Tensor, x: Tensor) -> bool:
    """Whether ``p``, used on the input ``x``, is to take its step in this backward pass."""
    return (p in _ACTIVE and torch.is_grad_enabled() and p.requires_grad
            and not torch.is_autocast_enabled(x.device.type) and x.dtype == p.dtype)


def _claim(p: Tensor) -> dict:
    if p in _USED:
        raise ConfigError(
            f"a parameter of shape {tuple(p.shape)} enters the loss twice in one step (shared weights); its update "
            "cannot be taken in back-propagation. Train without sgd_in_backward"
        )
    _USED[p] = True
    return _ACTIVE[p]


def matmul(x: Tensor, w: Tensor) -> Tensor:
    """``x @ w``; inside a :func:`steps` scope, with ``w``'s SGD step taken in its backward pass."""
    if w.ndim != 2 or not _steppable(w, x):
        return x @ w
    return _MatmulSGDStep.apply(x, w, _claim(w))


def claim(params: list[Tensor], x: Tensor) -> list[dict] | None:
    """For a backward pass written by hand that steps ``params`` itself: their param groups
    (read ``lr`` and ``weight_decay`` from them at backward time), or None unless an open
    :func:`steps` scope holds every one of them and their steps can be taken on the input ``x``
    (gradients on, no autocast, the same dtype). Like :func:`matmul`, a parameter claimed
    twice in one step is refused."""
    if not all(_steppable(p, x) for p in params):
        return None
    return [_claim(p) for p in params]


def sgd_step(p: Tensor, gradient: Tensor, group: dict) -> None:
    """``p <- (1 - lr lambda) p - lr gradient`` in place: the step of Algorithm 8.1 with L2 decay
    (sec. 7.1.1), from a gradient just computed in a backward pass written by hand."""
    lr, decay = float(group["lr"]), float(group["weight_decay"])
    if decay:
        p.mul_(1.0 - lr * decay)
    p.sub_(gradient, alpha=lr)


def matmul_sgd_step(w: Tensor, x: Tensor, delta: Tensor, group: dict) -> None:
    """``w <- (1 - lr lambda) w - lr x^T delta`` in place, one BLAS call: the step of ``w`` in
    ``x @ w`` from its error ``delta`` (NNDL eq. BP4)."""
    lr, decay = float(group["lr"]), float(group["weight_decay"])
    w.addmm_(x.t(), delta.to(w.dtype), beta=1.0 - lr * decay, alpha=-lr)


class _MatmulSGDStep(torch.autograd.Function):
    """``x @ w`` forward; backward returns ``delta w^T`` for ``x`` and updates ``w`` in place."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, group: dict) -> Tensor:
        ctx.save_for_backward(x, w)
        ctx.group = group
        return x @ w

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, delta: Tensor) -> tuple[Tensor | None, None, None]:
        x, w = ctx.saved_tensors
        grad_x = delta @ w.t() if ctx.needs_input_grad[0] else None  # before w changes
        matmul_sgd_step(w, x.reshape(-1, x.shape[-1]), delta.reshape(-1, delta.shape[-1]), ctx.group)
        return grad_x, None, None
