"""Adam, Deep Learning Algorithm 8.7 (sec. 8.5.3), and AMSGrad (Reddi et al., 2018; CS189
"acceleration schemes")."""

from __future__ import annotations

import torch
from torch import Tensor

from descend.optim._common import (
    apply_weight_decay,
    check_betas,
    check_eps,
    check_eps_placement,
    check_foreach,
    check_lr,
    check_nonnegative,
    evaluate_closure,
    gather,
    grouped,
    use_foreach,
    zeros,
)


class Adam(torch.optim.Optimizer):
    r"""Adam (Kingma & Ba, 2014), Algorithm 8.7.

    .. code-block:: text

        Require: step size eps (suggested default 0.001)
        Require: exponential decay rates rho1, rho2 in [0, 1) (suggested 0.9, 0.999)
        Require: small constant delta for numerical stabilization (suggested 1e-8)
        s = 0, r = 0, t = 0                          # 1st and 2nd moment variables
        while stopping criterion not met:
            g <- (1/m) grad_theta sum_i L(f(x_i; theta), y_i)
            t <- t + 1
            s <- rho1 s + (1 - rho1) g                # biased first moment
            r <- rho2 r + (1 - rho2) g * g            # biased second moment
            s^ <- s / (1 - rho1^t)                    # bias corrections
            r^ <- r / (1 - rho2^t)
            delta_theta <- -eps s^ / sqrt(r^ + delta) # element-wise
            theta <- theta + delta_theta

    delta placement: the book puts delta under the root, ``sqrt(r^ + delta)``;
    Kingma & Ba's paper and ``torch.optim.Adam`` add it outside, ``sqrt(r^) + delta``.
    ``eps_placement="torch"`` gives that form, and then this class computes the same
    numbers as ``torch.optim.Adam`` (and, with ``decoupled_weight_decay=True``, as
    ``torch.optim.AdamW``); both are tested. With delta = 1e-8 the book's delta matters
    where r^ is below about 1e-8 (gradients below ~1e-4), torch's only where sqrt(r^) is
    below 1e-8: inside the root delta acts like a gradient of size sqrt(delta) = 1e-4,
    outside like one of size 1e-8, so the book's form takes much smaller steps on
    near-zero gradients (test_adam.py checks both first steps).

    The first moment is updated as ``s <- s + (1 - rho1)(g - s)`` (``lerp``), the same
    value as the book's line and the same kernel torch uses. The book's update is computed
    as ``-eps sqrt(1 - rho2^t) / (1 - rho1^t) * s * rsqrt(r + delta (1 - rho2^t))``, the same
    quantity (``sqrt(r^ + delta) = sqrt(r + delta (1 - rho2^t)) / sqrt(1 - rho2^t)``) in one
    pass fewer over the tensors; the "torch" form follows torch's order of operations.

    Args:
        params: parameters or param-group dicts.
        lr: step size eps (>= 0).
        betas: (rho1, rho2), each in [0, 1). (torch's name for the book's rho1, rho2.)
        eps: delta (> 0).
        eps_placement: ``"book"`` (``sqrt(r^ + delta)``) or ``"torch"`` (``sqrt(r^) + delta``).
        weight_decay: L2 coefficient coupled to g (torch.optim.Adam's weight_decay).
        decoupled_weight_decay: decay theta directly, ``theta <- (1 - lr wd) theta`` (AdamW).
        foreach: multi-tensor path (default) or per-tensor loop; identical numbers.

    Data-parallel: DDP-safe. The update is element-wise in the gradient, which DDP has
    averaged over ranks before ``step``, so every rank keeps the same parameters and state
    (the Trainer under torchrun; see ``descend.train.distributed``).
    """

    _amsgrad = False

    def __init__(
        self,
        params,
        lr: float = 0.001,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        eps_placement: str = "book",
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
    ) -> None:
        defaults = dict(
            lr=check_lr(lr),
            betas=check_betas(betas),
            eps=check_eps(eps),
            eps_placement=check_eps_placement(eps_placement),
            weight_decay=check_nonnegative("weight_decay", weight_decay),
            decoupled_weight_decay=bool(decoupled_weight_decay),
            amsgrad=self._amsgrad,
            foreach=check_foreach(foreach),
        )
        super().__init__(params, defaults)

    @staticmethod
    def _new_state(p: Tensor, amsgrad: bool) -> dict[str, Tensor]:
        state = {
            # A float tensor step, as in torch.optim, so the state is all tensors.
            "step": torch.tensor(0.0, dtype=torch.float64 if p.dtype == torch.float64 else torch.float32),
            "first_moment": zeros(p),
            "second_moment": zeros(p),
        }
        if amsgrad:
            state["max_second_moment"] = zeros(p)
        return state

    @torch.no_grad()
    def step(self, closure=None):
        loss = evaluate_closure(closure)
        for group in self.param_groups:
            amsgrad = group["amsgrad"]
            params, grads, states = gather(self, group, lambda p: self._new_state(p, amsgrad))
            adam(
                params,
                grads,
                [s["first_moment"] for s in states],
                [s["second_moment"] for s in states],
                [s["max_second_moment"] for s in states] if amsgrad else [],
                [s["step"] for s in states],
                lr=group["lr"],
                betas=group["betas"],
                eps=group["eps"],
                eps_placement=group["eps_placement"],
                weight_decay=group["weight_decay"],
                decoupled_weight_decay=group["decoupled_weight_decay"],
                amsgrad=group["amsgrad"],
                foreach=use_foreach(group["foreach"], params),
            )
        return loss


class AMSGrad(Adam):
    r"""AMSGrad (Reddi, Kale & Kumar, 2018), named among CS189's "acceleration schemes".

    Algorithm 8.7 with the second moment replaced by its running maximum, so the effective
    per-parameter step ``eps / sqrt(r^)`` never grows (the fix for Adam's non-convergence
    examples):

    .. code-block:: text

        ... as Adam (Alg. 8.7) up to r <- rho2 r + (1 - rho2) g * g
        r_max <- max(r_max, r)
        delta_theta <- -eps s^ / sqrt(r_max / (1 - rho2^t) + delta)

    Like ``torch.optim.Adam(amsgrad=True)`` the maximum is taken over the uncorrected r and
    then bias-corrected; Reddi et al.'s paper omits bias correction altogether. delta is
    placed as in Alg. 8.7 (``eps_placement="book"``) or as torch does (``"torch"``, which
    makes this class compute torch's numbers; tested).

    Args: as :class:`Adam`.

    Data-parallel: DDP-safe. The update is element-wise in the gradient, which DDP has
    averaged over ranks before ``step``, so every rank keeps the same parameters and state
    (the Trainer under torchrun; see ``descend.train.distributed``).
    """

    _amsgrad = True

    def __init__(
        self,
        params,
        lr: float = 0.001,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        eps_placement: str = "book",
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
    ) -> None:
        super().__init__(
            params, lr=lr, betas=betas, eps=eps, eps_placement=eps_placement, weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay, foreach=foreach,
        )


def adam(
    params: list[Tensor],
    grads: list[Tensor],
    first_moments: list[Tensor],
    second_moments: list[Tensor],
    max_second_moments: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    eps_placement: str,
    weight_decay: float,
    decoupled_weight_decay: bool,
    amsgrad: bool,
    foreach: bool,
) -> None:
    """Functional form of Algorithm 8.7 (and AMSGrad when ``amsgrad``)."""
    if not params:
        return
    rho1, rho2 = betas
    wd = dict(lr=lr, weight_decay=weight_decay, decoupled=decoupled_weight_decay)
    book = eps_placement == "book"

    if not foreach:
        for i, (p, g, s, r, step) in enumerate(zip(params, grads, first_moments, second_moments, steps)):
            (g,) = apply_weight_decay([p], [g], foreach=False, **wd)
            step.add_(1)
            t = step.item()
            s.lerp_(g, 1 - rho1)
            r.mul_(rho2).addcmul_(g, g, value=1 - rho2)
            if amsgrad:
                torch.maximum(max_second_moments[i], r, out=max_second_moments[i])
                r = max_second_moments[i]
            bias1, bias2 = 1 - rho1**t, 1 - rho2**t
            if book:
                inverse_root = r.add(eps * bias2).rsqrt_()
                p.addcmul_(s, inverse_root, value=-lr * bias2**0.5 / bias1)
            else:
                denom = (r.sqrt() / bias2**0.5).add_(eps)
                p.addcdiv_(s, denom, value=-lr / bias1)
        return

    lists = [params, grads, first_moments, second_moments, steps] + ([max_second_moments] if amsgrad else [])
    for bucket in grouped(lists):
        device_params, device_grads, device_s, device_r, device_steps = bucket[:5]
        device_grads = apply_weight_decay(device_params, device_grads, foreach=True, **wd)
        torch._foreach_add_(device_steps, 1)
        ts = [step.item() for step in device_steps]
        torch._foreach_lerp_(device_s, device_grads, 1 - rho1)
        torch._foreach_mul_(device_r, rho2)
        torch._foreach_addcmul_(device_r, device_grads, device_grads, value=1 - rho2)
        if amsgrad:
            device_max = bucket[5]
            torch._foreach_maximum_(device_max, device_r)
            device_r = device_max
        if book:
            inverse_roots = torch._foreach_add(device_r, [eps * (1 - rho2**t) for t in ts])
            torch._foreach_rsqrt_(inverse_roots)
            step_sizes = [-lr * (1 - rho2**t) ** 0.5 / (1 - rho1**t) for t in ts]
            torch._foreach_addcmul_(device_params, device_s, inverse_roots, step_sizes)
        else:
            denom = torch._foreach_sqrt(device_r)
            torch._foreach_div_(denom, [(1 - rho2**t) ** 0.5 for t in ts])
            torch._foreach_add_(denom, eps)
            torch._foreach_addcdiv_(device_params, device_s, denom, [-lr / (1 - rho1**t) for t in ts])
