"""Adam, Deep Learning Algorithm 8.7 (sec. 8.5.3), and AMSGrad (Reddi et al., 2018; CS189
"acceleration schemes")."""

from __future__ import annotations

import torch
from torch import Tensor

from descend.optim._common import check_betas, check_eps, check_eps_placement
from descend.optim.first_order import FirstOrderOptimizer


class Adam(FirstOrderOptimizer):
    r"""Adam (Kingma & Ba, 2014), Algorithm 8.7.

    .. math::

        \begin{aligned}
        &\textbf{Require: } \text{step size } \epsilon \ (\text{suggested default } 0.001) \\
        &\textbf{Require: } \text{exponential decay rates for moment estimates, } \rho_1, \rho_2 \in [0, 1)
            \ (\text{suggested } 0.9,\ 0.999) \\
        &\textbf{Require: } \text{small constant } \delta \text{ for numerical stabilization }
            (\text{suggested } 10^{-8}) \\
        &\textbf{Require: } \text{initial parameters } \theta \\
        &s \leftarrow 0,\ r \leftarrow 0 && \text{1st and 2nd moment variables} \\
        &t \leftarrow 0 && \text{time step} \\
        &\textbf{while } \text{stopping criterion not met } \textbf{do} \\
        &\quad \text{sample a minibatch } \{x^{(1)}, \dots, x^{(m)}\} \text{ with targets } y^{(i)} \\
        &\quad g \leftarrow \frac{1}{m} \nabla_\theta \sum_i L(f(x^{(i)}; \theta), y^{(i)}) \\
        &\quad t \leftarrow t + 1 \\
        &\quad s \leftarrow \rho_1 s + (1 - \rho_1) g && \text{biased first moment estimate} \\
        &\quad r \leftarrow \rho_2 r + (1 - \rho_2) g \odot g && \text{biased second moment estimate} \\
        &\quad \hat{s} \leftarrow \frac{s}{1 - \rho_1^t} && \text{bias corrections} \\
        &\quad \hat{r} \leftarrow \frac{r}{1 - \rho_2^t} \\
        &\quad \Delta\theta \leftarrow -\epsilon \frac{\hat{s}}{\sqrt{\hat{r} + \delta}}
            && \text{element-wise} \\
        &\quad \theta \leftarrow \theta + \Delta\theta \\
        &\textbf{end while}
        \end{aligned}

    :math:`\delta` placement: the book puts :math:`\delta` under the root,
    :math:`\sqrt{\hat{r} + \delta}`; Kingma & Ba's paper and ``torch.optim.Adam`` add it
    outside, :math:`\sqrt{\hat{r}} + \delta`.
    ``eps_placement="torch"`` gives that form, and then this class computes the same
    numbers as ``torch.optim.Adam`` (and, with ``decoupled_weight_decay=True``, as
    ``torch.optim.AdamW``); both are tested. With :math:`\delta = 10^{-8}` the book's
    :math:`\delta` matters where :math:`\hat{r}` is below about :math:`10^{-8}` (gradients
    below :math:`\sim 10^{-4}`), torch's only where :math:`\sqrt{\hat{r}}` is below
    :math:`10^{-8}`: inside the root :math:`\delta` acts like a gradient of size
    :math:`\sqrt{\delta} = 10^{-4}`, outside like one of size :math:`10^{-8}`, so the book's
    form takes much smaller steps on near-zero gradients (test_adam.py checks both first steps).

    The first moment is updated as :math:`s \leftarrow s + (1 - \rho_1)(g - s)` (``lerp``),
    the same value as the book's line and the same kernel torch uses. The book's update is
    computed as

    .. math::

        \Delta\theta = -\epsilon \frac{\sqrt{1 - \rho_2^t}}{1 - \rho_1^t}\,
            \frac{s}{\sqrt{r + \delta (1 - \rho_2^t)}},

    the same quantity (:math:`\sqrt{\hat{r} + \delta} = \sqrt{r + \delta (1 - \rho_2^t)} /
    \sqrt{1 - \rho_2^t}`) in one pass fewer over the tensors; the "torch" form follows
    torch's order of operations.

    Args:
        params: parameters or param-group dicts.
        lr: step size :math:`\epsilon` (>= 0).
        betas: :math:`(\rho_1, \rho_2)`, each in [0, 1). (torch's name for the book's
            :math:`\rho_1, \rho_2`.)
        eps: :math:`\delta` (> 0).
        eps_placement: ``"book"`` (:math:`\sqrt{\hat{r} + \delta}`) or ``"torch"``
            (:math:`\sqrt{\hat{r}} + \delta`).
        weight_decay: L2 coefficient coupled to g (torch.optim.Adam's weight_decay).
        decoupled_weight_decay: decay :math:`\theta` directly,
            :math:`\theta \leftarrow (1 - \epsilon \lambda) \theta` with :math:`\lambda` the
            ``weight_decay`` (AdamW).
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
    per-parameter step :math:`\epsilon / \sqrt{\hat{r}}` never grows (the fix for Adam's
    non-convergence examples):

    .. math::

        \begin{aligned}
        &\dots \text{ as Adam (Alg. 8.7) up to } r \leftarrow \rho_2 r + (1 - \rho_2) g \odot g \\
        &r_{\max} \leftarrow \max(r_{\max}, r) \\
        &\Delta\theta \leftarrow -\epsilon \frac{\hat{s}}{\sqrt{r_{\max} / (1 - \rho_2^t) + \delta}}
        \end{aligned}

    Like ``torch.optim.Adam(amsgrad=True)`` the maximum is taken over the uncorrected r and
    then bias-corrected; Reddi et al.'s paper omits bias correction altogether. delta is
    placed as in Alg. 8.7 (``eps_placement="book"``) or as torch does (``"torch"``, which
    makes this class compute torch's numbers; tested).

    Args: as :class:`Adam`.
    """

    state_keys = ("step", "first_moment", "second_moment", "max_second_moment")
    _amsgrad = True
