"""AdaGrad, Deep Learning Algorithm 8.4 (sec. 8.5.1)."""

from __future__ import annotations

import torch
from torch import Tensor

from descend.optim._common import (
    apply_weight_decay,
    check_eps,
    check_foreach,
    check_lr,
    check_nonnegative,
    evaluate_closure,
    gather,
    grouped,
    use_foreach,
    zeros,
)


class AdaGrad(torch.optim.Optimizer):
    r"""AdaGrad (Duchi et al., 2011), Algorithm 8.4.

    .. code-block:: text

        Require: global learning rate eps, initial parameter theta
        Require: small constant delta, perhaps 1e-7, for numerical stability
        r = 0                                                   # gradient accumulation
        while stopping criterion not met:
            g <- (1/m) grad_theta sum_i L(f(x_i; theta), y_i)
            r <- r + g * g
            delta_theta <- -eps / (delta + sqrt(r)) * g         # element-wise
            theta <- theta + delta_theta

    Each parameter's effective rate ``eps / (delta + sqrt(r))`` shrinks with the square
    root of its accumulated squared gradient: for a constant gradient g it is about
    ``eps / (|g| sqrt(t))`` after t steps, falling fastest where the derivatives are large.
    The text warns that accumulating from the start of training can shrink the rate too
    early for deep networks.

    delta placement: ``delta + sqrt(r)``, outside the root, exactly as
    ``torch.optim.Adagrad`` places its ``eps``; with ``lr_decay=0`` and
    ``initial_accumulator_value=0`` torch's Adagrad is this algorithm (tested). torch's
    default eps is 1e-10; the book suggests 1e-7.

    Args:
        params: parameters or param-group dicts.
        lr: global learning rate eps (>= 0).
        eps: delta (> 0).
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
        eps: float = 1e-7,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
    ) -> None:
        defaults = dict(
            lr=check_lr(lr),
            eps=check_eps(eps),
            weight_decay=check_nonnegative("weight_decay", weight_decay),
            decoupled_weight_decay=bool(decoupled_weight_decay),
            foreach=check_foreach(foreach),
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = evaluate_closure(closure)
        for group in self.param_groups:
            params, grads, states = gather(self, group, lambda p: {"sum": zeros(p)})
            adagrad(
                params,
                grads,
                [s["sum"] for s in states],
                lr=group["lr"],
                eps=group["eps"],
                weight_decay=group["weight_decay"],
                decoupled_weight_decay=group["decoupled_weight_decay"],
                foreach=use_foreach(group["foreach"], params),
            )
        return loss

    def effective_learning_rates(self) -> dict[Tensor, Tensor]:
        """``eps / (delta + sqrt(r))`` per parameter: the rate Alg. 8.4 applies to each element."""
        rates = {}
        for group in self.param_groups:
            for p in group["params"]:
                r = self.state[p].get("sum")
                if r is not None:
                    rates[p] = group["lr"] / (group["eps"] + r.sqrt())
        return rates


def adagrad(
    params: list[Tensor],
    grads: list[Tensor],
    sums: list[Tensor],
    *,
    lr: float,
    eps: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    foreach: bool,
) -> None:
    """Functional form of Algorithm 8.4: ``r += g*g; theta -= eps * g / (delta + sqrt(r))``."""
    if not params:
        return
    wd = dict(lr=lr, weight_decay=weight_decay, decoupled=decoupled_weight_decay)
    if not foreach:
        for p, g, r in zip(params, grads, sums):
            (g,) = apply_weight_decay([p], [g], foreach=False, **wd)
            r.addcmul_(g, g, value=1)
            denom = r.sqrt().add_(eps)
            p.addcdiv_(g, denom, value=-lr)
        return
    for device_params, device_grads, device_r in grouped([params, grads, sums]):
        device_grads = apply_weight_decay(device_params, device_grads, foreach=True, **wd)
        torch._foreach_addcmul_(device_r, device_grads, device_grads, value=1)
        denom = torch._foreach_sqrt(device_r)
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(device_params, device_grads, denom, value=-lr)
