"""SGD with momentum, Deep Learning Algorithm 8.2 (sec. 8.3.2, eqs. 8.15-8.16)."""

from __future__ import annotations

import torch
from torch import Tensor

from descend.optim._common import (
    apply_weight_decay,
    check_foreach,
    check_lr,
    check_nonnegative,
    check_unit_interval,
    evaluate_closure,
    gather,
    grouped,
    use_foreach,
    zeros,
)


class Momentum(torch.optim.Optimizer):
    r"""SGD with momentum (Polyak, 1964), Algorithm 8.2.

    .. code-block:: text

        Require: learning rate eps, momentum parameter alpha
        Require: initial parameter theta, initial velocity v (here v = 0)
        while stopping criterion not met:
            g <- (1/m) grad_theta sum_i L(f(x_i; theta), y_i)
            v <- alpha v - eps g                                # eq. 8.15
            theta <- theta + v                                  # eq. 8.16

    The velocity accumulates past gradients; with a constant gradient the step reaches the
    terminal size ``eps ||g|| / (1 - alpha)`` (eq. 8.17), so alpha = 0.9 multiplies the
    maximum speed by 10. CS189 writes the same rule as
    ``dw <- -eps grad J(w) + beta dw; w <- w + dw``.

    The momentum coefficient is the param group's ``momentum``; it may change during
    training (Hinton's 0.5 rising to 0.9, :class:`descend.optim.MomentumSchedule`).

    Relation to ``torch.optim.SGD(momentum=alpha)``: torch keeps ``b <- alpha b + g`` and
    steps ``theta <- theta - lr b``. With a constant learning rate ``v = -lr b`` and the two
    give the same iterates (test_momentum.py checks it). They differ when the rate changes:
    here v remembers steps already scaled by their own eps, so a new eps acts on new
    gradients only, while torch's buffer rescales the whole accumulated velocity at once.

    Args:
        params: parameters or param-group dicts.
        lr: learning rate eps (>= 0).
        momentum: alpha in [0, 1]. 0 gives Algorithm 8.1.
        weight_decay, decoupled_weight_decay: L2 coupled to g (the texts) or decoupled.
        foreach: multi-tensor path (default) or per-tensor loop; identical numbers.

    Data-parallel: DDP-safe. The update is element-wise in the gradient, which DDP has
    averaged over ranks before ``step``, so every rank keeps the same parameters and state
    (the Trainer under torchrun; see ``descend.train.distributed``).
    """

    def __init__(
        self,
        params,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
    ) -> None:
        defaults = dict(
            lr=check_lr(lr),
            momentum=check_unit_interval("momentum", momentum, closed=True),
            weight_decay=check_nonnegative("weight_decay", weight_decay),
            decoupled_weight_decay=bool(decoupled_weight_decay),
            foreach=check_foreach(foreach),
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = evaluate_closure(closure)
        for group in self.param_groups:
            params, grads, states = gather(self, group, lambda p: {"velocity": zeros(p)})
            momentum(
                params,
                grads,
                [s["velocity"] for s in states],
                lr=group["lr"],
                momentum=group["momentum"],
                weight_decay=group["weight_decay"],
                decoupled_weight_decay=group["decoupled_weight_decay"],
                foreach=use_foreach(group["foreach"], params),
            )
        return loss


def momentum(
    params: list[Tensor],
    grads: list[Tensor],
    velocities: list[Tensor],
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    foreach: bool,
) -> None:
    """Functional form of Algorithm 8.2: ``v <- alpha v - eps g; theta <- theta + v``."""
    if not params:
        return
    wd = dict(lr=lr, weight_decay=weight_decay, decoupled=decoupled_weight_decay)
    if not foreach:
        for p, g, v in zip(params, grads, velocities):
            (g,) = apply_weight_decay([p], [g], foreach=False, **wd)
            v.mul_(momentum).add_(g, alpha=-lr)
            p.add_(v)
        return
    for device_params, device_grads, device_v in grouped([params, grads, velocities]):
        device_grads = apply_weight_decay(device_params, device_grads, foreach=True, **wd)
        torch._foreach_mul_(device_v, momentum)
        torch._foreach_add_(device_v, device_grads, alpha=-lr)
        torch._foreach_add_(device_params, device_v)
