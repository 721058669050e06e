"""Stochastic gradient descent, Deep Learning Algorithm 8.1 (sec. 8.3.1)."""

from __future__ import annotations

import torch
from torch import Tensor

from descend.optim.first_order import FirstOrderOptimizer


class SGD(FirstOrderOptimizer):
    r"""Stochastic gradient descent, Algorithm 8.1.

    .. math::

        \begin{aligned}
        &\textbf{Require: } \text{learning rate } \epsilon_k \text{, initial parameter } \theta \\
        &\textbf{while } \text{stopping criterion not met } \textbf{do} \\
        &\quad \text{sample a minibatch } \{x^{(1)}, \dots, x^{(m)}\} \text{ with targets } y^{(i)} \\
        &\quad \hat{g} \leftarrow \frac{1}{m} \nabla_\theta \sum_i L(f(x^{(i)}; \theta), y^{(i)}) \\
        &\quad \theta \leftarrow \theta - \epsilon_k \hat{g} \\
        &\textbf{end while}
        \end{aligned}

    The learning rate :math:`\epsilon_k` is the param group's ``lr``; decay it with a scheduler, e.g.
    :class:`descend.optim.LinearDecay` (eq. 8.14), which the text recommends because the
    minibatch gradient's noise does not vanish at a minimum (conditions 8.12-8.13).

    Same numbers as ``torch.optim.SGD(momentum=0)``. The momentum variants of torch's
    class are :class:`Momentum` (Alg. 8.2) and :class:`NesterovMomentum` (Alg. 8.3) here.

    Args:
        params: parameters or param-group dicts (e.g. from :func:`descend.optim.param_groups`).
        lr: learning rate :math:`\epsilon` (>= 0).
        weight_decay: L2 coefficient; adds ``weight_decay * theta`` to :math:`\hat{g}` (CS189's
            :math:`\lambda \lVert w \rVert^2` penalty has ``weight_decay = 2 lambda``).
        decoupled_weight_decay: shrink :math:`\theta` by ``1 - lr * weight_decay`` instead (same
            result for plain SGD up to rounding; matters for the adaptive methods).
        foreach: ``torch._foreach_*`` multi-tensor path (default) or a per-tensor loop;
            both give identical numbers.
    """

    def __init__(self, params, lr: float = 0.01, weight_decay: float = 0.0, decoupled_weight_decay: bool = False,
                 *, foreach: bool | None = None) -> None:
        super().__init__(params, lr=lr, weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay,
                         foreach=foreach)

    @staticmethod
    def _single_tensor(params: list[Tensor], grads: list[Tensor], *, lr: float) -> None:
        for p, g in zip(params, grads):
            p.add_(g, alpha=-lr)  # theta <- theta - eps g

    @staticmethod
    def _multi_tensor(params: list[Tensor], grads: list[Tensor], *, lr: float) -> None:
        torch._foreach_add_(params, grads, alpha=-lr)
