"""AdaGrad, Deep Learning Algorithm 8.4 (sec. 8.5.1)."""

from __future__ import annotations

import torch
from torch import Tensor

from descend.optim._common import check_eps
from descend.optim.first_order import FirstOrderOptimizer


class AdaGrad(FirstOrderOptimizer):
    r"""AdaGrad (Duchi et al., 2011), Algorithm 8.4.

    .. math::

        \begin{aligned}
        &\textbf{Require: } \text{global learning rate } \epsilon \text{, initial parameter } \theta \\
        &\textbf{Require: } \text{small constant } \delta \text{, perhaps } 10^{-7} \text{, for numerical stability} \\
        &r \leftarrow 0 && \text{gradient accumulation variable} \\
        &\textbf{while } \text{stopping criterion not met } \textbf{do} \\
        &\quad \text{sample a minibatch } \{x^{(1)}, \dots, x^{(m)}\} \text{ with targets } y^{(i)} \\
        &\quad g \leftarrow \frac{1}{m} \nabla_\theta \sum_i L(f(x^{(i)}; \theta), y^{(i)}) \\
        &\quad r \leftarrow r + g \odot g \\
        &\quad \Delta\theta \leftarrow -\frac{\epsilon}{\delta + \sqrt{r}} \odot g
            && \text{division and root element-wise} \\
        &\quad \theta \leftarrow \theta + \Delta\theta \\
        &\textbf{end while}
        \end{aligned}

    Each parameter's effective rate :math:`\epsilon / (\delta + \sqrt{r})` shrinks with the
    square root of its accumulated squared gradient: for a constant gradient :math:`g` it is
    about :math:`\epsilon / (|g| \sqrt{t})` after :math:`t` steps, falling fastest where the
    derivatives are large.
    The text warns that accumulating from the start of training can shrink the rate too
    early for deep networks.

    :math:`\delta` placement: :math:`\delta + \sqrt{r}`, outside the root, exactly as
    ``torch.optim.Adagrad`` places its ``eps``; with ``lr_decay=0`` and
    ``initial_accumulator_value=0`` torch's Adagrad is this algorithm (tested). torch's
    default eps is 1e-10; the book suggests 1e-7.

    Args:
        params: parameters or param-group dicts.
        lr: global learning rate :math:`\epsilon` (>= 0).
        eps: :math:`\delta` (> 0).
        weight_decay, decoupled_weight_decay: L2 coupled to g (the texts) or decoupled.
        foreach: multi-tensor path (default) or per-tensor loop; identical numbers.
    """

    state_keys = ("sum",)

    def __init__(self, params, lr: float = 0.01, eps: float = 1e-7, weight_decay: float = 0.0,
                 decoupled_weight_decay: bool = False, *, foreach: bool | None = None) -> None:
        super().__init__(params, lr=lr, weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay,
                         foreach=foreach, eps=check_eps(eps))

    @staticmethod
    def _single_tensor(params: list[Tensor], grads: list[Tensor], sums: list[Tensor], *, lr: float, eps: float) -> None:
        for p, g, r in zip(params, grads, sums):
            r.addcmul_(g, g, value=1)  # r <- r + g * g
            p.addcdiv_(g, r.sqrt().add_(eps), value=-lr)  # theta <- theta - eps g / (delta + sqrt(r))

    @staticmethod
    def _multi_tensor(params: list[Tensor], grads: list[Tensor], sums: list[Tensor], *, lr: float, eps: float) -> None:
        torch._foreach_addcmul_(sums, grads, grads, value=1)
        denom = torch._foreach_sqrt(sums)
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(params, grads, denom, value=-lr)

    def effective_learning_rates(self) -> dict[Tensor, Tensor]:
        """``eps / (delta + sqrt(r))`` per parameter: the rate Alg. 8.4 applies to each element."""
        rates = {}
        for group in self.param_groups:
            for p in group["params"]:
                r = self.state[p].get("sum")
                if r is not None:
                    rates[p] = group["lr"] / (group["eps"] + r.sqrt())
        return rates
