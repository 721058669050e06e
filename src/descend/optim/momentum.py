"""SGD with momentum, Deep Learning Algorithm 8.2 (sec. 8.3.2, eqs. 8.15-8.16)."""

from __future__ import annotations

import torch
from torch import Tensor

from descend.optim._common import check_unit_interval
from descend.optim.first_order import FirstOrderOptimizer


class Momentum(FirstOrderOptimizer):
    r"""SGD with momentum (Polyak, 1964), Algorithm 8.2.

    .. math::

        \begin{aligned}
        &\textbf{Require: } \text{learning rate } \epsilon \text{, momentum parameter } \alpha \\
        &\textbf{Require: } \text{initial parameter } \theta \text{, initial velocity } v \ (\text{here } v = 0) \\
        &\textbf{while } \text{stopping criterion not met } \textbf{do} \\
        &\quad \text{sample a minibatch } \{x^{(1)}, \dots, x^{(m)}\} \text{ with targets } y^{(i)} \\
        &\quad g \leftarrow \frac{1}{m} \nabla_\theta \sum_i L(f(x^{(i)}; \theta), y^{(i)}) \\
        &\quad v \leftarrow \alpha v - \epsilon g && \text{(8.15)} \\
        &\quad \theta \leftarrow \theta + v && \text{(8.16)} \\
        &\textbf{end while}
        \end{aligned}

    The velocity accumulates past gradients; with a constant gradient the step reaches the
    terminal size (eq. 8.17)

    .. math::

        \frac{\epsilon \lVert g \rVert}{1 - \alpha},

    so :math:`\alpha = 0.9` multiplies the maximum speed by 10. CS189 writes the same rule as
    :math:`\Delta w \leftarrow -\epsilon \nabla J(w) + \beta \Delta w;\ w \leftarrow w + \Delta w`.

    The momentum coefficient is the param group's ``momentum``; it may change during
    training (Hinton's 0.5 rising to 0.9, :class:`descend.optim.MomentumSchedule`).

    Relation to ``torch.optim.SGD(momentum=alpha)``: torch keeps ``b <- alpha b + g`` and
    steps ``theta <- theta - lr b``. With a constant learning rate ``v = -lr b`` and the two
    give the same iterates (test_momentum.py checks it). They differ when the rate changes:
    here v remembers steps already scaled by their own eps, so a new eps acts on new
    gradients only, while torch's buffer rescales the whole accumulated velocity at once.

    Args:
        params: parameters or param-group dicts.
        lr: learning rate :math:`\epsilon` (>= 0).
        momentum: :math:`\alpha \in [0, 1]`. 0 gives Algorithm 8.1.
        weight_decay, decoupled_weight_decay: L2 coupled to g (the texts) or decoupled.
        foreach: multi-tensor path (default) or per-tensor loop; identical numbers.
    """

    state_keys = ("velocity",)

    def __init__(self, params, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 0.0,
                 decoupled_weight_decay: bool = False, *, foreach: bool | None = None) -> None:
        super().__init__(params, lr=lr, weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay,
                         foreach=foreach, momentum=check_unit_interval("momentum", momentum, closed=True))

    @staticmethod
    def _single_tensor(params: list[Tensor], grads: list[Tensor], velocities: list[Tensor], *,
                       lr: float, momentum: float) -> None:
        for p, g, v in zip(params, grads, velocities):
            v.mul_(momentum).add_(g, alpha=-lr)  # v <- alpha v - eps g
            p.add_(v)  # theta <- theta + v

    @staticmethod
    def _multi_tensor(params: list[Tensor], grads: list[Tensor], velocities: list[Tensor], *,
                      lr: float, momentum: float) -> None:
        torch._foreach_mul_(velocities, momentum)
        torch._foreach_add_(velocities, grads, alpha=-lr)
        torch._foreach_add_(params, velocities)
