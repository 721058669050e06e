"""RMSProp, Deep Learning Algorithm 8.5, and RMSProp with Nesterov momentum, Algorithm 8.6
(sec. 8.5.2)."""

from __future__ import annotations

import torch
from torch import Tensor

from descend.optim._common import check_eps, check_eps_placement, check_unit_interval
from descend.optim.first_order import FirstOrderOptimizer


class RMSProp(FirstOrderOptimizer):
    r"""RMSProp (Hinton, 2012), Algorithm 8.5.

    .. math::

        \begin{aligned}
        &\textbf{Require: } \text{global learning rate } \epsilon \text{, decay rate } \rho \\
        &\textbf{Require: } \text{initial parameter } \theta \\
        &\textbf{Require: } \text{small constant } \delta \text{, usually } 10^{-6}
            \text{, to stabilize division by small numbers} \\
        &r \leftarrow 0 \\
        &\textbf{while } \text{stopping criterion not met } \textbf{do} \\
        &\quad \text{sample a minibatch } \{x^{(1)}, \dots, x^{(m)}\} \text{ with targets } y^{(i)} \\
        &\quad g \leftarrow \frac{1}{m} \nabla_\theta \sum_i L(f(x^{(i)}; \theta), y^{(i)}) \\
        &\quad r \leftarrow \rho r + (1 - \rho) g \odot g \\
        &\quad \Delta\theta \leftarrow -\frac{\epsilon}{\sqrt{\delta + r}} \odot g
            && \tfrac{1}{\sqrt{\delta + r}} \text{ element-wise} \\
        &\quad \theta \leftarrow \theta + \Delta\theta \\
        &\textbf{end while}
        \end{aligned}

    AdaGrad's sum replaced by an exponentially decaying average, so history from the
    extreme past is discarded and the rate can recover inside a convex bowl.

    :math:`\delta` placement: the book puts :math:`\delta` inside the root,
    :math:`\sqrt{\delta + r}`; ``torch.optim.RMSprop`` adds its eps outside,
    :math:`\sqrt{r} + \delta`. ``eps_placement="torch"`` gives torch's form, and with it this
    class equals ``torch.optim.RMSprop(alpha=rho, eps=eps)`` (tested). The two differ most
    while :math:`r` is small: :math:`\sqrt{10^{-6}} = 10^{-3}` bounds the book's step by
    :math:`\epsilon |g| / 10^{-3}`, torch's eps=1e-8 bounds it by :math:`\epsilon |g| / 10^{-8}`.
    torch's default decay is alpha = 0.99; Hinton's lecture used 0.9, the default here.

    Args:
        params: parameters or param-group dicts.
        lr: global learning rate :math:`\epsilon` (>= 0).
        rho: decay rate :math:`\rho` of the average, in [0, 1).
        eps: :math:`\delta` (> 0).
        eps_placement: ``"book"`` (:math:`\sqrt{\delta + r}`) or ``"torch"`` (:math:`\sqrt{r} + \delta`).
        weight_decay, decoupled_weight_decay: L2 coupled to g (the texts) or decoupled.
        foreach: multi-tensor path (default) or per-tensor loop; identical numbers.
    """

    state_keys = ("square_avg",)

    def __init__(self, params, lr: float = 0.001, rho: float = 0.9, eps: float = 1e-6,
                 eps_placement: str = "book", weight_decay: float = 0.0, decoupled_weight_decay: bool = False,
                 *, foreach: bool | None = None) -> None:
        super().__init__(params, lr=lr, weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay,
                         foreach=foreach, rho=check_unit_interval("rho", rho), eps=check_eps(eps),
                         eps_placement=check_eps_placement(eps_placement))

    @staticmethod
    def _single_tensor(params: list[Tensor], grads: list[Tensor], square_avgs: list[Tensor], *,
                       lr: float, rho: float, eps: float, eps_placement: str) -> None:
        for p, g, r in zip(params, grads, square_avgs):
            r.mul_(rho).addcmul_(g, g, value=1 - rho)  # r <- rho r + (1 - rho) g * g
            terms, divide = _root_terms([r], eps, eps_placement, foreach=False)
            # theta <- theta - eps g / sqrt(delta + r)
            _add_scaled_gradients_([p], [g], terms, divide, -lr, foreach=False)

    @staticmethod
    def _multi_tensor(params: list[Tensor], grads: list[Tensor], square_avgs: list[Tensor], *,
                      lr: float, rho: float, eps: float, eps_placement: str) -> None:
        torch._foreach_mul_(square_avgs, rho)
        torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - rho)
        terms, divide = _root_terms(square_avgs, eps, eps_placement, foreach=True)
        _add_scaled_gradients_(params, grads, terms, divide, -lr, foreach=True)


class RMSPropNesterov(FirstOrderOptimizer):
    r"""RMSProp with Nesterov momentum, Algorithm 8.6.

    .. math::

        \begin{aligned}
        &\textbf{Require: } \text{global learning rate } \epsilon \text{, decay rate } \rho
            \text{, momentum coefficient } \alpha \\
        &\textbf{Require: } \text{initial parameter } \theta \text{, initial velocity } v \ (\text{here } v = 0) \\
        &r \leftarrow 0 \\
        &\textbf{while } \text{stopping criterion not met } \textbf{do} \\
        &\quad \text{sample a minibatch } \{x^{(1)}, \dots, x^{(m)}\} \text{ with targets } y^{(i)} \\
        &\quad \tilde{\theta} \leftarrow \theta + \alpha v && \text{interim update} \\
        &\quad g \leftarrow \frac{1}{m} \nabla_{\tilde{\theta}} \sum_i L(f(x^{(i)}; \tilde{\theta}), y^{(i)}) \\
        &\quad r \leftarrow \rho r + (1 - \rho) g \odot g \\
        &\quad v \leftarrow \alpha v - \frac{\epsilon}{\sqrt{r}} \odot g
            && \tfrac{1}{\sqrt{r}} \text{ element-wise} \\
        &\quad \theta \leftarrow \theta + v \\
        &\textbf{end while}
        \end{aligned}

    Like :class:`NesterovMomentum`, the gradient is taken at the interim point, so ``step``
    needs a closure (``needs_closure = True``) and finishes from :math:`\tilde{\theta}`:
    :math:`\theta + v_{\text{new}} = \tilde{\theta} - \epsilon g / \sqrt{r}`.

    :math:`\delta`: Algorithm 8.6 has none, so the first step divides by
    :math:`\sqrt{r} = \sqrt{1 - \rho}\, |g|` and an exactly zero derivative gives 0/0. This
    class adds an optional :math:`\delta` placed as in Alg. 8.5, :math:`\sqrt{\delta + r}`
    (default 1e-6); ``eps=0`` is the literal algorithm (with 0/0 read as 0), and
    ``eps_placement="torch"`` uses :math:`\sqrt{r} + \delta`.
    torch has no such optimizer: ``torch.optim.RMSprop(momentum=alpha)`` is RMSProp with
    classical momentum on the rescaled gradient, evaluated at :math:`\theta`.

    Args:
        params: parameters or param-group dicts.
        lr: global learning rate :math:`\epsilon` (>= 0).
        rho: decay rate :math:`\rho` of the average, in [0, 1).
        momentum: :math:`\alpha \in [0, 1]`.
        eps: optional :math:`\delta` (>= 0; 0 is the book's form).
        eps_placement: ``"book"`` (:math:`\sqrt{\delta + r}`) or ``"torch"`` (:math:`\sqrt{r} + \delta`).
        weight_decay, decoupled_weight_decay: as in :class:`NesterovMomentum`.
        foreach: multi-tensor path (default) or per-tensor loop; identical numbers.
    """

    needs_closure = True
    state_keys = ("square_avg", "velocity")

    def __init__(self, params, lr: float = 0.001, rho: float = 0.9, momentum: float = 0.9, eps: float = 1e-6,
                 eps_placement: str = "book", weight_decay: float = 0.0, decoupled_weight_decay: bool = False,
                 *, foreach: bool | None = None) -> None:
        super().__init__(params, lr=lr, weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay,
                         foreach=foreach, rho=check_unit_interval("rho", rho),
                         momentum=check_unit_interval("momentum", momentum, closed=True),
                         eps=check_eps(eps, allow_zero=True), eps_placement=check_eps_placement(eps_placement))

    @staticmethod
    def _single_tensor(params: list[Tensor], grads: list[Tensor], square_avgs: list[Tensor], velocities: list[Tensor],
                       *, lr: float, rho: float, momentum: float, eps: float, eps_placement: str) -> None:
        """The lines after the gradient, with ``params`` at theta~ and ``grads`` taken there."""
        for p, g, r, v in zip(params, grads, square_avgs, velocities):
            r.mul_(rho).addcmul_(g, g, value=1 - rho)  # r <- rho r + (1 - rho) g * g
            terms, divide = _root_terms([r], eps, eps_placement, foreach=False)
            v.mul_(momentum)
            _add_scaled_gradients_([v], [g], terms, divide, -lr, foreach=False)  # v <- alpha v - eps g / sqrt(r)
            _add_scaled_gradients_([p], [g], terms, divide, -lr, foreach=False)  # theta + v = theta~ - eps g / sqrt(r)

    @staticmethod
    def _multi_tensor(params: list[Tensor], grads: list[Tensor], square_avgs: list[Tensor], velocities: list[Tensor],
                      *, lr: float, rho: float, momentum: float, eps: float, eps_placement: str) -> None:
        torch._foreach_mul_(square_avgs, rho)
        torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - rho)
        terms, divide = _root_terms(square_avgs, eps, eps_placement, foreach=True)
        torch._foreach_mul_(velocities, momentum)
        _add_scaled_gradients_(velocities, grads, terms, divide, -lr, foreach=True)
        _add_scaled_gradients_(params, grads, terms, divide, -lr, foreach=True)


def _root_terms(square_avgs: list[Tensor], eps: float, eps_placement: str, foreach: bool) -> tuple[list[Tensor], bool]:
    """What the gradient is scaled by, as new tensors, and whether to divide by them.

    ``"book"``: ``1 / sqrt(delta + r)``, multiplied (``rsqrt`` then ``addcmul``, a multiply
    where ``sqrt`` then ``addcdiv`` would divide; the two differ in the last bit only).
    ``"torch"``: ``sqrt(r) + delta``, divided, in torch's own order of operations so that
    the numbers match ``torch.optim.RMSprop``.

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
