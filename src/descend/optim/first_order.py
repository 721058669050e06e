"""The plumbing every first-order optimizer of Deep Learning sec. 8.3 and 8.5 shares.

:class:`FirstOrderOptimizer` is a ``torch.optim.Optimizer`` that owns everything around
an algorithm's update rule, in the shape of torch.optim's own optimizers:

* defaults and validation of the hyperparameters every method has (``lr``,
  ``weight_decay``, ``decoupled_weight_decay``, ``foreach``); a subclass validates its own
  (momentum, decay rates, delta) with the checks of ``descend.optim._common`` and passes
  them on by keyword;
* per-parameter state: ``self.state[p]`` holds the plain tensors named in ``state_keys``,
  created on a parameter's first step (``_init_group``), so ``state_dict()`` round-trips
  and safetensors checkpoints need no special code;
* the switch between the per-tensor loop (``_single_tensor``) and the multi-tensor
  ``torch._foreach_*`` form (``_multi_tensor``), which receives one call per
  (device, dtype) bucket; both give the same numbers;
* weight decay, coupled or decoupled, applied before the update rule;
* for the methods that take the gradient at the interim point ``theta + alpha v``
  (Nesterov momentum, Alg. 8.3; RMSProp with Nesterov momentum, Alg. 8.6;
  ``needs_closure = True``), moving the parameters there around the closure.

A subclass's docstring shows the algorithm box of the text; its ``_single_tensor`` and
``_multi_tensor`` are the box's update lines, written out, and receive the gradients
(weight decay already added), the state tensors in ``state_keys`` order and the group's
hyperparameters by keyword.

Data-parallel: every update here is element-wise in the gradient. Under DDP (the Trainer
under torchrun; see ``descend.train.distributed``) the gradient has been averaged over
ranks before ``step``, and for the interim-point methods the closure's forward and
backward run through DDP too, so every rank keeps the same parameters and state.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from descend.errors import OptimizationError
from descend.optim._common import check_foreach, check_lr, check_nonnegative


class FirstOrderOptimizer(torch.optim.Optimizer):
    """Base of the first-order optimizers; see the module docstring.

    Subclasses set ``state_keys`` (each a zero tensor like the parameter unless
    ``_new_state`` says otherwise) and define ``_single_tensor`` and ``_multi_tensor``
    as static methods ``(params, grads, *states, **hyperparameters)``.
    """

    state_keys: tuple[str, ...] = ()
    needs_closure = False

    def __init__(
        self, params, *, lr: float, weight_decay: float, decoupled_weight_decay: bool, foreach: bool | None,
        **hyperparameters,
    ) -> None:
        # What the update rule receives from each param group, besides the tensors.
        self.hyperparameters = ("lr", *hyperparameters)
        defaults = dict(
            lr=check_lr(lr),
            **hyperparameters,
            weight_decay=check_nonnegative("weight_decay", weight_decay),
            decoupled_weight_decay=bool(decoupled_weight_decay),
            foreach=check_foreach(foreach),
        )
        super().__init__(params, defaults)

    def _new_state(self, p: Tensor) -> dict[str, Tensor]:
        return {key: torch.zeros_like(p, memory_format=torch.preserve_format) for key in self.state_keys}

    def _init_group(self, group: dict) -> tuple[list[Tensor], list[Tensor], list[list[Tensor]]]:
        """Parameters of ``group`` that have a gradient, their gradients, and one list of
        state tensors per entry of ``state_keys``.

        A parameter whose ``.grad`` is None (frozen, unused, or skipped by the non-finite
        guard) is left alone and its state does not advance, as in torch.optim.
        """
        params, grads, states = [], [], []
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue
            if grad.is_sparse:
                raise OptimizationError(
                    f"{type(self).__name__} does not support sparse gradients; "
                    "use torch.optim.SparseAdam or dense embeddings (sparse=False)"
                )
            params.append(p)
            grads.append(grad)
            if self.state_keys:  # a stateless method (SGD) leaves self.state empty, as torch's SGD does
                state = self.state[p]
                if not state:
                    state.update(self._new_state(p))
                states.append(state)
        return params, grads, [[s[key] for s in states] for key in self.state_keys]

    @torch.no_grad()
    def step(self, closure=None):
        if self.needs_closure:
            loss = evaluate_at_interim_point(self, closure)
        else:
            loss = evaluate_closure(closure)
        for group in self.param_groups:
            params, grads, states = self._init_group(group)
            if not params:
                continue
            hyperparameters = {key: group[key] for key in self.hyperparameters}
            decay = dict(lr=group["lr"], weight_decay=group["weight_decay"], decoupled=group["decoupled_weight_decay"])
            # Alg. 8.3 and 8.6 update from theta~ = theta + alpha v; decoupled decay shrinks theta.
            interim = group["momentum"] if self.needs_closure else 0.0
            if not use_foreach(group["foreach"], params):
                velocities = states[self.state_keys.index("velocity")] if interim else None
                grads = apply_weight_decay(params, grads, velocities, interim, foreach=False, **decay)
                self._single_tensor(params, grads, *states, **hyperparameters)
                continue
            for device_params, device_grads, *device_states in grouped([params, grads, *states]):
                velocities = device_states[self.state_keys.index("velocity")] if interim else None
                device_grads = apply_weight_decay(
                    device_params, device_grads, velocities, interim, foreach=True, **decay
                )
                self._multi_tensor(device_params, device_grads, *device_states, **hyperparameters)
        return loss


def use_foreach(foreach: bool | None, params: Sequence[Tensor]) -> bool:
    """Multi-tensor path unless asked otherwise.

    Unlike torch.optim, which picks the single-tensor loop on CPU, descend defaults to the
    ``torch._foreach_*`` path everywhere: on CPU too it replaces a Python loop over the
    parameters by one C++ loop (benchmarks/optimizers.py compares the two with torch.optim).
    """
    if foreach is not None:
        return foreach
    return not torch.jit.is_scripting() and all(type(p) in (Tensor, torch.nn.Parameter) for p in params)


def grouped(tensorlists: list[list[Tensor]]) -> list[list[list[Tensor]]]:
    """Split parallel lists of tensors by (device, dtype): one foreach kernel call per bucket."""
    buckets = torch.optim.Optimizer._group_tensors_by_device_and_dtype(tensorlists)
    return [lists for lists, _ in buckets.values()]


def apply_weight_decay(
    params: list[Tensor],
    grads: list[Tensor],
    velocities: list[Tensor] | None,
    alpha: float,
    *,
    lr: float,
    weight_decay: float,
    decoupled: bool,
    foreach: bool,
) -> list[Tensor]:
    """Weight decay in either form; returns the gradients the algorithm should use.

    Coupled (the texts' L2 regularization, Deep Learning sec. 7.1.1; CS189 "weight
    decay"): the penalty ``(weight_decay / 2) * ||theta||^2`` is added to the cost, so its
    gradient ``weight_decay * theta`` is added to g and passes through the algorithm's
    rescaling (momentum, 1/sqrt(r), ...). CS189 writes the penalty as ``lambda ||w||^2``,
    i.e. ``weight_decay = 2 * lambda``: "weights decay by a factor 1 - 2 epsilon lambda".
    For the interim-point methods the penalty is part of the cost evaluated at theta~, so
    ``weight_decay * theta~`` is added.

    Decoupled (Loshchilov & Hutter, AdamW): ``theta <- theta - lr * weight_decay * theta``
    before the update, outside the rescaling; for plain SGD the two forms coincide. With
    ``velocities`` the parameters stand at ``theta~ = theta + alpha v`` and theta is
    shrunk there: ``theta~ <- (1 - lr wd) theta~ + lr wd alpha v``.

    The caller's ``grads`` are never modified in place (they are ``p.grad``).
    """
    if weight_decay == 0:
        return grads
    if not decoupled:
        if foreach:
            return list(torch._foreach_add(grads, params, alpha=weight_decay))
        return [g.add(p, alpha=weight_decay) for p, g in zip(params, grads)]
    decay = lr * weight_decay
    if foreach:
        torch._foreach_mul_(params, 1 - decay)
        if velocities is not None:
            torch._foreach_add_(params, velocities, alpha=decay * alpha)
        return grads
    for i, p in enumerate(params):
        p.mul_(1 - decay)
        if velocities is not None:
            p.add_(velocities[i], alpha=decay * alpha)
    return grads


def evaluate_closure(closure) -> Tensor | float | None:
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def _add_scaled_(params: list[Tensor], others: list[Tensor], alpha: float, foreach: bool) -> None:
    if not params or alpha == 0:
        return
    if foreach:
        for device_params, device_others in grouped([params, others]):
            torch._foreach_add_(device_params, device_others, alpha=alpha)
    else:
        for p, o in zip(params, others):
            p.add_(o, alpha=alpha)


@torch.no_grad()
def evaluate_at_interim_point(optimizer: torch.optim.Optimizer, closure):
    """Run ``closure`` with every parameter moved to ``theta~ = theta + alpha v``.

    The "apply interim update" and "compute gradient (at interim point)" lines of
    Algorithms 8.3 and 8.6. The parameters are left at the interim point for those that
    received a gradient (the update rule finishes the step from there); parameters the
    closure gave no gradient (``p.grad is None``: unused, frozen, or dropped by the
    non-finite guard) are moved back to theta. If the closure raises, every parameter is
    moved back before the exception propagates, so a failed step leaves the model as it was.

    Moving back computes ``(theta + alpha v) - alpha v``, which may differ from theta in
    the last bit.
    """
    if closure is None:
        raise OptimizationError(
            f"{type(optimizer).__name__} evaluates the gradient at the interim point "
            "theta + alpha*v (Deep Learning Alg. 8.3/8.6) and needs optimizer.step(closure), "
            "where the closure zeroes the gradients, runs forward and backward and returns the "
            "loss; use NesterovMomentumReformulated ('nesterov-reformulated') for a "
            "closure-free form"
        )
    shifted = []
    for group in optimizer.param_groups:
        params, velocities = [], []
        for p in group["params"]:
            state = optimizer.state.get(p)
            v = state.get("velocity") if state else None
            if v is not None:  # a parameter without velocity yet has v = 0: nothing to move
                params.append(p)
                velocities.append(v)
        alpha = group["momentum"]
        foreach = use_foreach(group["foreach"], params)
        _add_scaled_(params, velocities, alpha, foreach)
        shifted.append((params, velocities, alpha, foreach))
    try:
        loss = evaluate_closure(closure)
    except BaseException:
        for params, velocities, alpha, foreach in shifted:
            _add_scaled_(params, velocities, -alpha, foreach)
        raise
    for params, velocities, alpha, foreach in shifted:
        idle = [i for i, p in enumerate(params) if p.grad is None]
        if idle:
            _add_scaled_([params[i] for i in idle], [velocities[i] for i in idle], -alpha, foreach)
    return loss
