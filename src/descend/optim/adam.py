"""Adam, Deep Learning Algorithm 8.7 (sec. 8.5.3), and AMSGrad (Reddi et al., 2018; CS189
"acceleration schemes")."""

from __future__ import annotations

import torch
from torch import Tensor

from descend.optim._common import check_betas, check_eps, check_eps_placement
from descend.optim.first_order import FirstOrderOptimizer


class Adam(FirstOrderOptimizer):
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
    """

    state_keys = ("step", "first_moment", "second_moment")
    _amsgrad = False

    def __init__(self, params, lr: float = 0.001, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 eps_placement: str = "book", weight_decay: float = 0.0, decoupled_weight_decay: bool = False,
                 *, foreach: bool | None = None) -> None:
        super().__init__(params, lr=lr, weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay,
                         foreach=foreach, betas=check_betas(betas), eps=check_eps(eps),
                         eps_placement=check_eps_placement(eps_placement), amsgrad=self._amsgrad)

    def _new_state(self, p: Tensor) -> dict[str, Tensor]:
        # t is a float tensor, as in torch.optim, so that the state is all tensors.
        t = torch.tensor(0.0, dtype=torch.float64 if p.dtype == torch.float64 else torch.float32)
        moments = {key: torch.zeros_like(p, memory_format=torch.preserve_format) for key in self.state_keys[1:]}
        return {"step": t, **moments}

    @staticmethod
    def _single_tensor(params: list[Tensor], grads: list[Tensor], steps: list[Tensor], first_moments: list[Tensor],
                       second_moments: list[Tensor], max_second_moments: list[Tensor] | None = None, *,
                       lr: float, betas: tuple[float, float], eps: float, eps_placement: str, amsgrad: bool) -> None:
        rho1, rho2 = betas
        for i, (p, g, step, s, r) in enumerate(zip(params, grads, steps, first_moments, second_moments)):
            step.add_(1)  # t <- t + 1
            t = step.item()
            s.lerp_(g, 1 - rho1)  # s <- rho1 s + (1 - rho1) g
            r.mul_(rho2).addcmul_(g, g, value=1 - rho2)  # r <- rho2 r + (1 - rho2) g * g
            if amsgrad:
                torch.maximum(max_second_moments[i], r, out=max_second_moments[i])  # r_max <- max(r_max, r)
                r = max_second_moments[i]
            bias1, bias2 = 1 - rho1**t, 1 - rho2**t
            if eps_placement == "book":  # theta <- theta - eps s^ / sqrt(r^ + delta)
                inverse_root = r.add(eps * bias2).rsqrt_()
                p.addcmul_(s, inverse_root, value=-lr * bias2**0.5 / bias1)
            else:  # theta <- theta - eps s^ / (sqrt(r^) + delta)
                denom = (r.sqrt() / bias2**0.5).add_(eps)
                p.addcdiv_(s, denom, value=-lr / bias1)

    @staticmethod
    def _multi_tensor(params: list[Tensor], grads: list[Tensor], steps: list[Tensor], first_moments: list[Tensor],
                      second_moments: list[Tensor], max_second_moments: list[Tensor] | None = None, *,
                      lr: float, betas: tuple[float, float], eps: float, eps_placement: str, amsgrad: bool) -> None:
        rho1, rho2 = betas
        torch._foreach_add_(steps, 1)
        ts = [step.item() for step in steps]
        torch._foreach_lerp_(first_moments, grads, 1 - rho1)
        torch._foreach_mul_(second_moments, rho2)
        torch._foreach_addcmul_(second_moments, grads, grads, value=1 - rho2)
        r = second_moments
        if amsgrad:
            torch._foreach_maximum_(max_second_moments, second_moments)
            r = max_second_moments
        if eps_placement == "book":
            inverse_roots = torch._foreach_add(r, [eps * (1 - rho2**t) for t in ts])
            torch._foreach_rsqrt_(inverse_roots)
            step_sizes = [-lr * (1 - rho2**t) ** 0.5 / (1 - rho1**t) for t in ts]
            torch._foreach_addcmul_(params, first_moments, inverse_roots, step_sizes)
        else:
            denom = torch._foreach_sqrt(r)
            torch._foreach_div_(denom, [(1 - rho2**t) ** 0.5 for t in ts])
            torch._foreach_add_(denom, eps)
            torch._foreach_addcdiv_(params, first_moments, denom, [-lr / (1 - rho1**t) for t in ts])


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
    """

    state_keys = ("step", "first_moment", "second_moment", "max_second_moment")
    _amsgrad = True
