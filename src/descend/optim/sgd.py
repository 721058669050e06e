"""Stochastic gradient descent, Deep Learning Algorithm 8.1 (sec. 8.3.1)."""

from __future__ import annotations

import torch
from torch import Tensor

from descend.optim._common import (
    apply_weight_decay,
    check_foreach,
    check_lr,
    check_nonnegative,
    evaluate_closure,
    gather,
    grouped,
    use_foreach,
)


class SGD(torch.optim.Optimizer):
    r"""Stochastic gradient descent, Algorithm 8.1.

    .. code-block:: text

        Require: learning rate eps_k, initial parameter theta
        while stopping criterion not met:
            g <- (1/m) grad_theta sum_i L(f(x_i; theta), y_i)   # minibatch gradient
            theta <- theta - eps_k g

    The learning rate ``eps_k`` is the param group's ``lr``; decay it with a scheduler, e.g.
    :class:`descend.optim.LinearDecay` (eq. 8.14), which the text recommends because the
    minibatch gradient's noise does not vanish at a minimum (conditions 8.12-8.13).

    Same numbers as ``torch.optim.SGD(momentum=0)``. The momentum variants of torch's
    class are :class:`Momentum` (Alg. 8.2) and :class:`NesterovMomentum` (Alg. 8.3) here.

    Args:
        params: parameters or param-group dicts (e.g. from :func:`descend.optim.param_groups`).
        lr: learning rate eps (>= 0).
        weight_decay: L2 coefficient; adds ``weight_decay * theta`` to g (CS189's
            ``lambda ||w||^2`` penalty has ``weight_decay = 2 lambda``).
        decoupled_weight_decay: shrink theta by ``1 - lr * weight_decay`` instead (same
            result for plain SGD up to rounding; matters for the adaptive methods).
        foreach: ``torch._foreach_*`` multi-tensor path (default) or a per-tensor loop;
            both give identical numbers.

    Data-parallel: DDP-safe. The update is element-wise in the gradient, which DDP has
    averaged over ranks before ``step``, so every rank keeps the same parameters and state
    (the Trainer under torchrun; see ``descend.train.distributed``).
    """

    def __init__(
        self,
        params,
        lr: float = 0.01,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
    ) -> None:
        defaults = dict(
            lr=check_lr(lr),
            weight_decay=check_nonnegative("weight_decay", weight_decay),
            decoupled_weight_decay=bool(decoupled_weight_decay),
            foreach=check_foreach(foreach),
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = evaluate_closure(closure)
        for group in self.param_groups:
            params, grads = gather(self, group)
            sgd(
                params,
                grads,
                lr=group["lr"],
                weight_decay=group["weight_decay"],
                decoupled_weight_decay=group["decoupled_weight_decay"],
                foreach=use_foreach(group["foreach"], params),
            )
        return loss


def sgd(
    params: list[Tensor],
    grads: list[Tensor],
    *,
    lr: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    foreach: bool,
) -> None:
    """Functional form of Algorithm 8.1: ``theta <- theta - lr * g`` for every tensor."""
    if not params:
        return
    if not foreach:
        for p, g in zip(params, grads):
            (g,) = apply_weight_decay(
                [p], [g], lr=lr, weight_decay=weight_decay, decoupled=decoupled_weight_decay, foreach=False
            )
            p.add_(g, alpha=-lr)
        return
    for device_params, device_grads in grouped([params, grads]):
        device_grads = apply_weight_decay(
            device_params, device_grads, lr=lr, weight_decay=weight_decay,
            decoupled=decoupled_weight_decay, foreach=True,
        )
        torch._foreach_add_(device_params, device_grads, alpha=-lr)
