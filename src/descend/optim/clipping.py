"""Gradient clipping (Deep Learning sec. 8.2.4, 10.11.1) and a guard against non-finite
gradients, as plain functions and as step pre-hooks that attach to any optimizer.

The hooks use ``Optimizer.register_step_pre_hook``, so the optimizer keeps its class and
torch LR schedulers keep working. When ``step`` is given a closure (the book-form Nesterov
methods, L-BFGS), the gradients do not exist yet when the pre-hook runs; the hook then
wraps the closure so that clipping / checking happens right after each backward pass.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Mapping

import torch
from torch import Tensor
from torch.utils.hooks import RemovableHandle

from descend.errors import ConfigError, Diverged
from descend.optim._common import check_positive


def _with_grad(parameters: Iterable[Tensor] | Tensor) -> list[Tensor]:
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p for p in parameters if p.grad is not None]


def _check_norm_type(norm_type: float) -> float:
    try:
        x = float(norm_type)
    except (TypeError, ValueError):
        raise ConfigError(f"Invalid norm_type: {norm_type!r}; use a number >= 1 or inf") from None
    if not x >= 1:
        raise ConfigError(f"Invalid norm_type: {norm_type}; norm_type must be >= 1 (2 is the Euclidean norm, inf the max)")
    return x


@torch.no_grad()
def clip_grad_norm_(parameters: Iterable[Tensor] | Tensor, max_norm: float, norm_type: float = 2.0) -> Tensor:
    r"""Clip the gradients of all ``parameters`` together by their global norm, in place.

    Sec. 8.2.4 / 10.11.1 (Pascanu et al., 2013), with threshold :math:`v` = ``max_norm``:

    .. math::

        \textbf{if } \lVert g \rVert > v: \quad g \leftarrow \frac{g\, v}{\lVert g \rVert}

    where :math:`g` is the gradient of all parameters concatenated: the direction is kept and only
    the step length is bounded, so a cliff (fig. 8.3) cannot catapult the parameters away.

    Returns the norm before clipping (a 0-d tensor; no host synchronization). Differences
    from ``torch.nn.utils.clip_grad_norm_``: torch scales by
    :math:`v / (\lVert g \rVert + 10^{-6})` (so a clipped gradient has norm slightly below
    :math:`v`), this function by exactly :math:`v / \lVert g \rVert`; and
    when the norm is NaN or infinite torch multiplies every gradient by NaN, while this
    function leaves the gradients unchanged, because a non-finite gradient is divergence,
    not a cliff (see :func:`register_nonfinite_guard`).
    """
    max_norm = check_positive("max_norm", max_norm)
    norm_type = _check_norm_type(norm_type)
    grads = [p.grad for p in _with_grad(parameters)]
    if not grads:
        return torch.tensor(0.0)
    buckets = torch.optim.Optimizer._group_tensors_by_device_and_dtype([grads])
    first_device = grads[0].device
    norms = []
    for (device, _), ([device_grads], _) in buckets.items():
        norms.extend(n.to(first_device) for n in torch._foreach_norm(device_grads, norm_type))
    # Float64 gradients keep a float64 norm; half-precision norms are combined in float32.
    dtype = torch.float64 if any(n.dtype == torch.float64 for n in norms) else torch.float32
    total = torch.linalg.vector_norm(torch.stack([n.to(dtype) for n in norms]), norm_type)
    coef = torch.where(torch.isfinite(total) & (total > max_norm), max_norm / total, torch.ones_like(total))
    for (device, _), ([device_grads], _) in buckets.items():
        torch._foreach_mul_(device_grads, coef.to(device))
    return total


@torch.no_grad()
def clip_grad_value_(parameters: Iterable[Tensor] | Tensor, max_value: float) -> None:
    r"""Clip every gradient element to ``[-max_value, max_value]`` in place.

    .. math::

        g_i \leftarrow \min\bigl(\max(g_i, -v), v\bigr), \qquad v = \texttt{max\_value}

    The element-wise clipping of sec. 10.11.1 (Mikolov, 2012), which can change the
    gradient's direction (unlike norm clipping). Same semantics as
    ``torch.nn.utils.clip_grad_value_``, which this calls.
    """
    max_value = check_positive("max_value", max_value)
    grads = _with_grad(parameters)
    if grads:
        torch.nn.utils.clip_grad_value_(grads, max_value)


# ----------------------------------------------------------------------------- hooks


def _all_params(optimizer: torch.optim.Optimizer) -> list[Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def _after_gradients(action: Callable[[], None]):
    """A step pre-hook that runs ``action`` now, or right after the closure if there is one."""

    def hook(optimizer, args, kwargs):
        args = tuple(args)
        if len(args) > 1 and args[1] is not None:
            closure, where = args[1], "args"
        elif kwargs.get("closure") is not None:
            closure, where = kwargs["closure"], "kwargs"
        else:
            action()
            return None

        def closure_then_action():
            loss = closure()
            action()
            return loss

        if where == "args":
            return (args[0], closure_then_action, *args[2:]), kwargs
        return args, {**kwargs, "closure": closure_then_action}

    return hook


def register_grad_clipping(
    optimizer: torch.optim.Optimizer,
    *,
    max_norm: float | None = None,
    max_value: float | None = None,
    norm_type: float = 2.0,
) -> RemovableHandle:
    """Clip gradients before every ``optimizer.step()``; returns the hook's handle.

    ``max_value`` clips element-wise (:func:`clip_grad_value_`), ``max_norm`` by the global
    norm over all parameters of the optimizer (:func:`clip_grad_norm_`); with both, values
    are clipped first. Works with any ``torch.optim.Optimizer`` (``handle.remove()`` detaches).
    """
    if max_norm is None and max_value is None:
        raise ConfigError("register_grad_clipping needs max_norm (clip by norm) or max_value (clip by value)")
    if max_norm is not None:
        check_positive("max_norm", max_norm)
    if max_value is not None:
        check_positive("max_value", max_value)
    _check_norm_type(norm_type)

    def clip():
        params = _all_params(optimizer)
        if max_value is not None:
            clip_grad_value_(params, max_value)
        if max_norm is not None:
            clip_grad_norm_(params, max_norm, norm_type)

    return optimizer.register_step_pre_hook(_after_gradients(clip))


def _parameter_names(optimizer: torch.optim.Optimizer, names) -> dict[int, str]:
    """id(param) -> a readable name: from ``names`` (a module or a mapping), the groups'
    ``param_names`` (torch >= 2.6 keeps them), or the position in ``param_groups``."""
    out: dict[int, str] = {}
    for gi, group in enumerate(optimizer.param_groups):
        group_names = group.get("param_names")
        for pi, p in enumerate(group["params"]):
            out[id(p)] = group_names[pi] if group_names else f"param_groups[{gi}]['params'][{pi}]"
    if isinstance(names, torch.nn.Module):
        out.update({id(p): n for n, p in names.named_parameters()})
    elif isinstance(names, Mapping):
        for k, v in names.items():
            if isinstance(k, Tensor):
                out[id(k)] = str(v)
            else:
                out[id(v)] = str(k)
    return out


def register_nonfinite_guard(
    optimizer: torch.optim.Optimizer,
    mode: str = "skip",
    *,
    names: torch.nn.Module | Mapping | None = None,
    on_skip: Callable[[list[str]], None] | None = None,
) -> RemovableHandle:
    """Check the gradients for NaN/inf before every ``optimizer.step()``; returns the handle.

    A non-finite gradient means the loss overflowed or diverged (the exploding gradient
    of sec. 8.2.4-8.2.5 gone all the way); applying it would poison the parameters and every
    optimizer state (momentum, second moments) for the rest of training.

    mode ``"skip"``: every gradient of the optimizer is set to None, so the step changes no
    parameter and no state (optimizers skip parameters without a gradient), and
    ``on_skip(names_of_bad_parameters)`` is called. mode ``"raise"``: raise
    :class:`descend.errors.Diverged` naming the first bad parameter.

    Checking costs one max-norm per tensor and one host synchronization per step. Register
    it before (or in place of) any hook that rescales gradients. ``names`` (the model, or a
    mapping name -> parameter) makes messages use parameter names.
    """
    if mode not in ("skip", "raise"):
        raise ConfigError(f"Invalid mode: {mode!r}; the non-finite guard's mode must be 'skip' or 'raise'")

    def check():
        params = _with_grad(_all_params(optimizer))
        if not params:
            return
        grads = [p.grad for p in params]
        buckets = torch.optim.Optimizer._group_tensors_by_device_and_dtype([grads], with_indices=True)
        finite = []
        for ([device_grads], _) in buckets.values():
            norms = torch._foreach_norm(device_grads, math.inf)
            finite.append(torch.stack(norms).isfinite().all().cpu())
        if bool(torch.stack(finite).all()):
            return
        lookup = _parameter_names(optimizer, names)
        bad = [lookup.get(id(p), "?") for p in params if not bool(torch.isfinite(p.grad).all())]
        if mode == "raise":
            p = next(p for p in params if not bool(torch.isfinite(p.grad).all()))
            raise Diverged(
                f"Non-finite gradient (NaN or inf) in parameter '{bad[0]}' of shape {tuple(p.shape)}"
                + (f" and {len(bad) - 1} other(s)" if len(bad) > 1 else "")
                + "; the loss diverged or overflowed: lower the learning rate, clip the gradients "
                "(register_grad_clipping), or check the inputs for NaN"
            )
        for p in _all_params(optimizer):
            p.grad = None
        if on_skip is not None:
            on_skip(bad)

    return optimizer.register_step_pre_hook(_after_gradients(check))
