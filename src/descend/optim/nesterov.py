"""Nesterov momentum, Deep Learning Algorithm 8.3 (sec. 8.3.3, eqs. 8.21-8.22).

Two classes:

* :class:`NesterovMomentum` is the book's algorithm: the gradient is evaluated at the
  interim point ``theta + alpha v``, so ``step`` must be given a closure that recomputes
  the loss and its gradient there (``needs_closure = True``; the move to the interim point
  is :func:`descend.optim.first_order.evaluate_at_interim_point`, shared with RMSProp +
  Nesterov, Alg. 8.6).
* :class:`NesterovMomentumReformulated` is the closure-free form of Sutskever et al.
  (2013) / Bengio et al. (2013) that ``torch.optim.SGD(nesterov=True)`` implements: the
  stored parameters are the look-ahead point itself.
"""

from __future__ import annotations

import torch
from torch import Tensor

from descend.optim.momentum import Momentum


class NesterovMomentum(Momentum):
    r"""SGD with Nesterov momentum in the book's form, Algorithm 8.3.

    .. math::

        \begin{aligned}
        &\textbf{Require: } \text{learning rate } \epsilon \text{, momentum parameter } \alpha \\
        &\textbf{Require: } \text{initial parameter } \theta \text{, initial velocity } v \ (\text{here } v = 0) \\
        &\textbf{while } \text{stopping criterion not met } \textbf{do} \\
        &\quad \text{sample a minibatch } \{x^{(1)}, \dots, x^{(m)}\} \text{ with targets } y^{(i)} \\
        &\quad \tilde{\theta} \leftarrow \theta + \alpha v && \text{interim update} \\
        &\quad g \leftarrow \frac{1}{m} \nabla_{\tilde{\theta}} \sum_i L(f(x^{(i)}; \tilde{\theta}), y^{(i)})
            && \text{gradient at the interim point} \\
        &\quad v \leftarrow \alpha v - \epsilon g && \text{(8.21)} \\
        &\quad \theta \leftarrow \theta + v && \text{(8.22)} \\
        &\textbf{end while}
        \end{aligned}

    The gradient is taken after the current velocity is applied, a correction factor to
    standard momentum (Sutskever et al., 2013); in the convex batch case the excess error
    falls as :math:`O(1/k^2)` instead of :math:`O(1/k)`.

    ``step(closure)`` moves the parameters to :math:`\tilde{\theta}`, calls the closure (which
    must zero the gradients, run forward and backward and return the loss) and finishes the
    update from :math:`\tilde{\theta}`:
    :math:`\theta + v_{\text{new}} = \tilde{\theta} - \alpha v_{\text{old}} + \alpha v_{\text{old}} - \epsilon g
    = \tilde{\theta} - \epsilon g`, so no copy of :math:`\theta` is kept. ``needs_closure = True`` tells descend's Trainer to call
    it that way. The loss the closure returns is the loss at theta~.

    Relation to ``torch.optim.SGD(momentum=alpha, nesterov=True)``: torch implements the
    reformulation whose stored parameters are the look-ahead point ``phi = theta + alpha v``
    (see :class:`NesterovMomentumReformulated`, which matches torch at constant lr). Started
    from the same point, the two produce ``phi_k = theta_k + alpha v_k`` and the same
    gradients; only what is stored in the model differs (the book's theta here).

    Weight decay: coupled L2 adds ``weight_decay * theta~`` to g (the penalty is part of the
    cost evaluated at theta~); decoupled decay shrinks theta (not theta~) by
    ``1 - lr * weight_decay``: ``theta_new = (1 - lr wd) theta + v_new``.

    Args: as :class:`Momentum` (the same hyperparameters and the same state, the velocity
    v); weight decay as above.
    """

    needs_closure = True

    @staticmethod
    def _single_tensor(params: list[Tensor], grads: list[Tensor], velocities: list[Tensor], *,
                       lr: float, momentum: float) -> None:
        """The last two lines, with ``params`` at theta~ and ``grads`` taken there."""
        for p, g, v in zip(params, grads, velocities):
            v.mul_(momentum).add_(g, alpha=-lr)  # v <- alpha v - eps g
            p.add_(g, alpha=-lr)  # theta + v = theta~ - eps g

    @staticmethod
    def _multi_tensor(params: list[Tensor], grads: list[Tensor], velocities: list[Tensor], *,
                      lr: float, momentum: float) -> None:
        torch._foreach_mul_(velocities, momentum)
        torch._foreach_add_(velocities, grads, alpha=-lr)
        torch._foreach_add_(params, grads, alpha=-lr)


class NesterovMomentumReformulated(Momentum):
    r"""Nesterov momentum without a closure: the reformulation of Algorithm 8.3.

    Store the look-ahead point :math:`\phi = \theta + \alpha v` as the parameters instead of
    :math:`\theta`. Substituting into eqs. 8.21-8.22 gives an update that needs only the
    gradient at the stored parameters:

    .. math::

        \begin{aligned}
        &g \leftarrow \frac{1}{m} \nabla_\phi \sum_i L(f(x^{(i)}; \phi), y^{(i)}) \\
        &v \leftarrow \alpha v - \epsilon g \\
        &\phi \leftarrow \phi + \alpha v - \epsilon g
        \end{aligned}

    (:math:`\phi_{\text{new}} = \theta_{\text{new}} + \alpha v_{\text{new}}
    = \phi - \alpha v_{\text{old}} + (1 + \alpha) v_{\text{new}}`, and
    :math:`v_{\text{new}} - \alpha v_{\text{old}} = -\epsilon g`.)

    This is what ``torch.optim.SGD(momentum=alpha, nesterov=True)`` computes: torch keeps
    ``b <- alpha b + g`` and steps ``phi <- phi - lr (g + alpha b)``; with a constant
    learning rate ``v = -lr b`` and the iterates coincide (tested). With a changing rate
    they differ as for :class:`Momentum`. The iterates equal those of the book form
    :class:`NesterovMomentum` shifted by :math:`\alpha v`: :math:`\phi_k = \theta_k + \alpha v_k`.

    Args: as :class:`Momentum` (the same hyperparameters and the same state, the velocity v).
    """

    @staticmethod
    def _single_tensor(params: list[Tensor], grads: list[Tensor], velocities: list[Tensor], *,
                       lr: float, momentum: float) -> None:
        for p, g, v in zip(params, grads, velocities):
            v.mul_(momentum).add_(g, alpha=-lr)  # v <- alpha v - eps g
            p.add_(v, alpha=momentum).add_(g, alpha=-lr)  # phi <- phi + alpha v - eps g

    @staticmethod
    def _multi_tensor(params: list[Tensor], grads: list[Tensor], velocities: list[Tensor], *,
                      lr: float, momentum: float) -> None:
        torch._foreach_mul_(velocities, momentum)
        torch._foreach_add_(velocities, grads, alpha=-lr)
        torch._foreach_add_(params, velocities, alpha=momentum)
        torch._foreach_add_(params, grads, alpha=-lr)
