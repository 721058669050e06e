"""RMSProp, Deep Learning Algorithm 8.5, and RMSProp with Nesterov momentum, Algorithm 8.6
(sec. 8.5.2)."""

from __future__ import annotations

import torch
from torch import Tensor

from descend.optim._common import (
    apply_weight_decay,
    check_eps,
    check_eps_placement,
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
from descend.optim.nesterov import evaluate_at_interim_point


def _root_terms(square_avgs: list[Tensor], eps: float, eps_placement: str, foreach: bool) -> tuple[list[Tensor], bool]:
    """What the gradient is scaled by, as new tensors, and whether to divide by them.

    ``"book"``: ``1 / sqrt(delta + r)``, multiplied (``rsqrt`` then ``addcmul``: measured
    faster on CPU than an in-place ``sqrt`` followed by ``addcdiv``; the two differ in the
    last bit only). ``"torch"``: ``sqrt(r) + delta``, divided, in torch's own order of
    operations so that the numbers match ``torch.optim.RMSprop``.

    With ``eps = 0`` (Alg. 8.6 taken literally) a coordinate whose gradient has been exactly
    zero so far has r = 0 and g = 0; the term is clamped (1/sqrt(0) to 1/tiny, sqrt(0) to
    tiny, tiny the smallest normal number) so that the update there is 0, not NaN.
    """
    book = eps_placement == "book"
    if foreach:
        if book:
            terms = torch._foreach_add(square_avgs, eps)
            torch._foreach_rsqrt_(terms)
        else:
            terms = torch._foreach_sqrt(square_avgs)
            torch._foreach_add_(terms, eps)
        if eps == 0:
            tiny = torch.finfo(square_avgs[0].dtype).tiny
            if book:
                torch._foreach_clamp_max_(terms, 1 / tiny)
            else:
                torch._foreach_clamp_min_(terms, tiny)
        return list(terms), not book
    terms = []
    for r in square_avgs:
        t = r.add(eps).rsqrt_() if book else r.sqrt().add_(eps)
        if eps == 0:
            tiny = torch.finfo(r.dtype).tiny
            if book:
                t.clamp_max_(1 / tiny)
            else:
                t.clamp_min_(tiny)
        terms.append(t)
    return terms, not book


def _add_scaled_gradients_(targets, grads, terms, divide: bool, value: float, foreach: bool) -> None:
    """``target += value * g / term`` (divide) or ``target += value * g * term``."""
    if foreach:
        if divide:
            torch._foreach_addcdiv_(targets, grads, terms, value=value)
        else:
            torch._foreach_addcmul_(targets, grads, terms, value=value)
        return
    for x, g, t in zip(targets, grads, terms):
        if divide:
            x.addcdiv_(g, t, value=value)
        else:
            x.addcmul_(g, t, value=value)


def _accumulate_(square_avgs: list[Tensor], grads: list[Tensor], rho: float, foreach: bool) -> None:
    """``r <- rho r + (1 - rho) g * g``."""
    if foreach:
        torch._foreach_mul_(square_avgs, rho)
        torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - rho)
    else:
        for r, g in zip(square_avgs, grads):
            r.mul_(rho).addcmul_(g, g, value=1 - rho)


class RMSProp(torch.optim.Optimizer):
    r"""RMSProp (Hinton, 2012), Algorithm 8.5.

    .. code-block:: text

        Require: global learning rate eps, decay rate rho
        Require: initial parameter theta
        Require: small constant delta, usually 1e-6, to stabilize division by small numbers
        r = 0
        while stopping criterion not met:
            g <- (1/m) grad_theta sum_i L(f(x_i; theta), y_i)
            r <- rho r + (1 - rho) g * g
            delta_theta <- -eps / sqrt(delta + r) * g           # element-wise
            theta <- theta + delta_theta

    AdaGrad's sum replaced by an exponentially decaying average, so history from the
    extreme past is discarded and the rate can recover inside a convex bowl.

    delta placement: the book puts delta inside the root, ``sqrt(delta + r)``;
    ``torch.optim.RMSprop`` adds its eps outside, ``sqrt(r) + eps``. ``eps_placement="torch"``
    gives torch's form, and with it this class equals ``torch.optim.RMSprop(alpha=rho,
    eps=eps)`` (tested). The two differ most while r is small: sqrt(1e-6) = 1e-3 bounds the
    book's step by ``eps * |g| / 1e-3``, torch's eps=1e-8 bounds it by ``eps * |g| / 1e-8``.
    torch's default decay is alpha = 0.99; Hinton's lecture used 0.9, the default here.

    Args:
        params: parameters or param-group dicts.
        lr: global learning rate eps (>= 0).
        rho: decay rate of the average, in [0, 1).
        eps: delta (> 0).
        eps_placement: ``"book"`` (``sqrt(delta + r)``) or ``"torch"`` (``sqrt(r) + delta``).
        weight_decay, decoupled_weight_decay: L2 coupled to g (the texts) or decoupled.
        foreach: multi-tensor path (default) or per-tensor loop; identical numbers.

    Data-parallel: DDP-safe. The update is element-wise in the gradient, which DDP has
    averaged over ranks before ``step``, so every rank keeps the same parameters and state
    (the Trainer under torchrun; see ``descend.train.distributed``).
    """

    def __init__(
        self,
        params,
        lr: float = 0.001,
        rho: float = 0.9,
        eps: float = 1e-6,
        eps_placement: str = "book",
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
    ) -> None:
        defaults = dict(
            lr=check_lr(lr),
            rho=check_unit_interval("rho", rho),
            eps=check_eps(eps),
            eps_placement=check_eps_placement(eps_placement),
            weight_decay=check_nonnegative("weight_decay", weight_decay),
            decoupled_weight_decay=bool(decoupled_weight_decay),
            foreach=check_foreach(foreach),
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = evaluate_closure(closure)
        for group in self.param_groups:
            params, grads, states = gather(self, group, lambda p: {"square_avg": zeros(p)})
            rmsprop(
                params,
                grads,
                [s["square_avg"] for s in states],
                lr=group["lr"],
                rho=group["rho"],
                eps=group["eps"],
                eps_placement=group["eps_placement"],
                weight_decay=group["weight_decay"],
                decoupled_weight_decay=group["decoupled_weight_decay"],
                foreach=use_foreach(group["foreach"], params),
            )
        return loss


def rmsprop(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    *,
    lr: float,
    rho: float,
    eps: float,
    eps_placement: str,
    weight_decay: float,
    decoupled_weight_decay: bool,
    foreach: bool,
) -> None:
    """Functional form of Algorithm 8.5."""
    if not params:
        return
    wd = dict(lr=lr, weight_decay=weight_decay, decoupled=decoupled_weight_decay)
    if not foreach:
        for p, g, r in zip(params, grads, square_avgs):
            (g,) = apply_weight_decay([p], [g], foreach=False, **wd)
            _accumulate_([r], [g], rho, foreach=False)
            terms, divide = _root_terms([r], eps, eps_placement, foreach=False)
            _add_scaled_gradients_([p], [g], terms, divide, -lr, foreach=False)
        return
    for device_params, device_grads, device_r in grouped([params, grads, square_avgs]):
        device_grads = apply_weight_decay(device_params, device_grads, foreach=True, **wd)
        _accumulate_(device_r, device_grads, rho, foreach=True)
        terms, divide = _root_terms(device_r, eps, eps_placement, foreach=True)
        _add_scaled_gradients_(device_params, device_grads, terms, divide, -lr, foreach=True)


class RMSPropNesterov(torch.optim.Optimizer):
    r"""RMSProp with Nesterov momentum, Algorithm 8.6.

    .. code-block:: text

        Require: global learning rate eps, decay rate rho, momentum coefficient alpha
        Require: initial parameter theta, initial velocity v (here v = 0)
        r = 0
        while stopping criterion not met:
            theta~ <- theta + alpha v                            # interim update
            g <- (1/m) grad_theta~ sum_i L(f(x_i; theta~), y_i)
            r <- rho r + (1 - rho) g * g
            v <- alpha v - eps / sqrt(r) * g                     # element-wise
            theta <- theta + v

    Like :class:`NesterovMomentum`, the gradient is taken at the interim point, so ``step``
    needs a closure (``needs_closure = True``) and finishes from theta~:
    ``theta + v_new = theta~ - eps g / sqrt(r)``.

    delta: Algorithm 8.6 has none, so the first step divides by ``sqrt(r) = sqrt(1 - rho) |g|``
    and an exactly zero derivative gives 0/0. This class adds an optional delta placed as in
    Alg. 8.5, ``sqrt(delta + r)`` (default 1e-6); ``eps=0`` is the literal algorithm (with
    0/0 read as 0), and ``eps_placement="torch"`` uses ``sqrt(r) + delta``.
    torch has no such optimizer: ``torch.optim.RMSprop(momentum=alpha)`` is RMSProp with
    classical momentum on the rescaled gradient, evaluated at theta.

    Args:
        params: parameters or param-group dicts.
        lr: global learning rate eps (>= 0).
        rho: decay rate of the average, in [0, 1).
        momentum: alpha in [0, 1].
        eps: optional delta (>= 0; 0 is the book's form).
        eps_placement: ``"book"`` (``sqrt(delta + r)``) or ``"torch"`` (``sqrt(r) + delta``).
        weight_decay, decoupled_weight_decay: as in :class:`NesterovMomentum`.
        foreach: multi-tensor path (default) or per-tensor loop; identical numbers.

    Data-parallel: DDP-safe. The closure's forward and backward at the interim point run
    through DDP, which averages that gradient over ranks; the update is element-wise
    (the Trainer under torchrun; see ``descend.train.distributed``).
    """

    needs_closure = True

    def __init__(
        self,
        params,
        lr: float = 0.001,
        rho: float = 0.9,
        momentum: float = 0.9,
        eps: float = 1e-6,
        eps_placement: str = "book",
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
    ) -> None:
        defaults = dict(
            lr=check_lr(lr),
            rho=check_unit_interval("rho", rho),
            momentum=check_unit_interval("momentum", momentum, closed=True),
            eps=check_eps(eps, allow_zero=True),
            eps_placement=check_eps_placement(eps_placement),
            weight_decay=check_nonnegative("weight_decay", weight_decay),
            decoupled_weight_decay=bool(decoupled_weight_decay),
            foreach=check_foreach(foreach),
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = evaluate_at_interim_point(self, closure)
        for group in self.param_groups:
            params, grads, states = gather(self, group, lambda p: {"square_avg": zeros(p), "velocity": zeros(p)})
            rmsprop_nesterov(
                params,
                grads,
                [s["square_avg"] for s in states],
                [s["velocity"] for s in states],
                lr=group["lr"],
                rho=group["rho"],
                momentum=group["momentum"],
                eps=group["eps"],
                eps_placement=group["eps_placement"],
                weight_decay=group["weight_decay"],
                decoupled_weight_decay=group["decoupled_weight_decay"],
                foreach=use_foreach(group["foreach"], params),
            )
        return loss


def rmsprop_nesterov(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    velocities: list[Tensor],
    *,
    lr: float,
    rho: float,
    momentum: float,
    eps: float,
    eps_placement: str,
    weight_decay: float,
    decoupled_weight_decay: bool,
    foreach: bool,
) -> None:
    """Second half of Algorithm 8.6, with ``params`` at theta~ and ``grads`` taken there."""
    if not params:
        return
    alpha = momentum
    decay = lr * weight_decay if decoupled_weight_decay else 0.0
    if not foreach:
        for p, g, r, v in zip(params, grads, square_avgs, velocities):
            if decay:
                p.mul_(1 - decay).add_(v, alpha=decay * alpha)
            else:
                (g,) = apply_weight_decay([p], [g], lr=lr, weight_decay=weight_decay, decoupled=False, foreach=False)
            _accumulate_([r], [g], rho, foreach=False)
            terms, divide = _root_terms([r], eps, eps_placement, foreach=False)
            v.mul_(alpha)
            _add_scaled_gradients_([v], [g], terms, divide, -lr, foreach=False)
            _add_scaled_gradients_([p], [g], terms, divide, -lr, foreach=False)
        return
    for device_params, device_grads, device_r, device_v in grouped([params, grads, square_avgs, velocities]):
        if decay:
            torch._foreach_mul_(device_params, 1 - decay)
            torch._foreach_add_(device_params, device_v, alpha=decay * alpha)
        else:
            device_grads = apply_weight_decay(
                device_params, device_grads, lr=lr, weight_decay=weight_decay, decoupled=False, foreach=True
            )
        _accumulate_(device_r, device_grads, rho, foreach=True)
        terms, divide = _root_terms(device_r, eps, eps_placement, foreach=True)
        torch._foreach_mul_(device_v, alpha)
        _add_scaled_gradients_(device_v, device_grads, terms, divide, -lr, foreach=True)
        _add_scaled_gradients_(device_params, device_grads, terms, divide, -lr, foreach=True)
