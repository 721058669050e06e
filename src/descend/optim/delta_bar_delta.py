"""Delta-bar-delta (Jacobs, 1988), Deep Learning sec. 8.5: per-parameter learning rates."""

from __future__ import annotations

import torch
from torch import Tensor

from descend.optim._common import check_nonnegative, check_unit_interval
from descend.optim.first_order import FirstOrderOptimizer


class DeltaBarDelta(FirstOrderOptimizer):
    r"""Delta-bar-delta: a learning rate per parameter, grown while the sign of its partial
    derivative holds and shrunk when it flips (Deep Learning sec. 8.5, Jacobs 1988).

    The text states the idea only ("if the partial derivative ... remains the same sign,
    then the learning rate should increase ... if [it] changes sign, then the learning rate
    should decrease") and notes that such a rule suits full-batch optimization. Jacobs'
    rule, with the rates written as gains :math:`\gamma_i` on the group learning rate
    (:math:`\epsilon_i = \epsilon \gamma_i`) so that torch LR schedulers still scale every rate
    (all operations per element :math:`i`; :math:`\theta_J` is Jacobs' smoothing, ``smoothing``):

    .. math::

        \begin{aligned}
        &\gamma \leftarrow 1,\ \bar{\delta} \leftarrow 0 \\
        &\textbf{while } \text{stopping criterion not met } \textbf{do} \\
        &\quad g \leftarrow \nabla_\theta J(\theta) && \text{"delta"} \\
        &\quad \textbf{if } \bar{\delta}_i g_i > 0 \textbf{ then } \gamma_i \leftarrow \gamma_i + \kappa
            && \text{same sign: additive increase} \\
        &\quad \textbf{if } \bar{\delta}_i g_i < 0 \textbf{ then } \gamma_i \leftarrow (1 - \phi) \gamma_i
            && \text{sign flip: geometric decrease} \\
        &\quad \theta \leftarrow \theta - \epsilon\, \gamma \odot g \\
        &\quad \bar{\delta} \leftarrow (1 - \theta_J) g + \theta_J \bar{\delta}
            && \text{"delta bar": averaged past } g \\
        &\textbf{end while}
        \end{aligned}

    With a constant ``lr`` this is exactly Jacobs' rule with additive increment
    :math:`\epsilon \kappa` on the rate (the reference test transcribes it in that form). The
    first step has :math:`\bar{\delta} = 0` and leaves the gains at 1. torch has no
    delta-bar-delta; its closest relative is ``torch.optim.Rprop`` (sign-based, multiplicative
    increase, step sizes independent of :math:`|g|`).

    Args:
        params: parameters or param-group dicts.
        lr: initial (and base) learning rate :math:`\epsilon` (>= 0).
        kappa: additive gain increase :math:`\kappa` while signs agree (>= 0).
        phi: fraction :math:`\phi` the gain loses on a sign flip, in [0, 1].
        smoothing: :math:`\theta_J`, Jacobs' :math:`\theta` of the average of past derivatives,
            in [0, 1).
        weight_decay, decoupled_weight_decay: L2 coupled to g (the texts) or decoupled.
        foreach: multi-tensor path (default) or per-tensor loop; identical numbers.
    """

    state_keys = ("gain", "bar_delta")

    def __init__(self, params, lr: float = 0.01, kappa: float = 0.1, phi: float = 0.5, smoothing: float = 0.7,
                 weight_decay: float = 0.0, decoupled_weight_decay: bool = False,
                 *, foreach: bool | None = None) -> None:
        super().__init__(params, lr=lr, weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay,
                         foreach=foreach, kappa=check_nonnegative("kappa", kappa),
                         phi=check_unit_interval("phi", phi, closed=True),
                         smoothing=check_unit_interval("smoothing", smoothing))

    def _new_state(self, p: Tensor) -> dict[str, Tensor]:
        return {"gain": torch.ones_like(p, memory_format=torch.preserve_format),
                "bar_delta": torch.zeros_like(p, memory_format=torch.preserve_format)}

    @staticmethod
    def _single_tensor(params: list[Tensor], grads: list[Tensor], gains: list[Tensor], bars: list[Tensor], *,
                       lr: float, kappa: float, phi: float, smoothing: float) -> None:
        """``agree = sign(bar_delta * g)`` is +1, 0 or -1; ``gain += phi * gain * min(agree, 0)``
        is the geometric decrease on flips and ``gain += kappa * max(agree, 0)`` the additive
        increase; each element receives at most one of the two."""
        for p, g, gain, bar in zip(params, grads, gains, bars):
            agree = (g * bar).sign_()
            grow = agree.clamp_min(0)
            agree.clamp_max_(0)
            gain.addcmul_(gain, agree, value=phi)
            gain.add_(grow, alpha=kappa)
            p.addcmul_(gain, g, value=-lr)  # theta <- theta - lr * gain * g
            bar.lerp_(g, 1 - smoothing)  # bar_delta <- (1 - smoothing) g + smoothing bar_delta

    @staticmethod
    def _multi_tensor(params: list[Tensor], grads: list[Tensor], gains: list[Tensor], bars: list[Tensor], *,
                      lr: float, kappa: float, phi: float, smoothing: float) -> None:
        agree = torch._foreach_mul(grads, bars)
        torch._foreach_sign_(agree)
        grow = torch._foreach_clamp_min(agree, 0)
        torch._foreach_clamp_max_(agree, 0)
        torch._foreach_addcmul_(gains, gains, agree, value=phi)
        torch._foreach_add_(gains, grow, alpha=kappa)
        torch._foreach_addcmul_(params, gains, grads, value=-lr)
        torch._foreach_lerp_(bars, grads, 1 - smoothing)

    def learning_rates(self) -> dict[Tensor, Tensor]:
        """The per-element rates ``lr * gain`` each parameter currently uses."""
        return {
            p: group["lr"] * self.state[p]["gain"]
            for group in self.param_groups
            for p in group["params"]
            if "gain" in self.state[p]
        }
