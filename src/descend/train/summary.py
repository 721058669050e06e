"""What a run prints at its start and while it trains: the model's size and cost, and an ETA.

    parameter_count(model)             trainable and total parameters
    flops_per_image(model, shape)      floating-point operations of one forward pass
    model_summary(model, shape)        both, as one line
    eta_seconds(done, total, seconds)  time left, at the mean pace so far
    format_duration(seconds)           "1h 05m", "3m 07s", "42s"

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one input: the matrix
products and convolutions, a multiply-add counted as 2 operations; additions of biases,
nonlinearities, pooling and normalization are not counted (they are a small part of the
work of a conv net).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from descend.errors import ShapeError


def parameter_count(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) numbers of parameters; a tied parameter is counted once."""
    params = {id(p): p for p in model.parameters()}.values()
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


@torch.no_grad()
def flops_per_image(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs of one forward pass on one input of ``input_shape`` (e.g. (1, 28, 28)), in eval mode."""
    from torch.utils.flop_counter import FlopCounterMode

    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    x = torch.zeros(1, *input_shape, device=device)
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(x)
    except RuntimeError as exc:
        raise ShapeError(f"the model does not take an input of shape {tuple(input_shape)}: {exc}") from None
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def _si(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g} "


def model_summary(model: nn.Module, input_shape: tuple[int, ...]) -> str:
    """``"NielsenNet: 1,234,567 parameters, 12.3 MFLOPs per image"`` (frozen ones named apart)."""
    trainable, total = parameter_count(model)
    frozen = f" ({total - trainable:,} frozen)" if total != trainable else ""
    flops = flops_per_image(model, input_shape)
    name = type(model).__name__
    if isinstance(model, nn.Sequential) and len(model) == 2:  # preprocessing, then the network
        name = type(model[1]).__name__
    return f"{name}: {total:,} parameters{frozen}, {_si(flops)}FLOPs per image"


def eta_seconds(done: float, total: float, seconds: float) -> float:
    """Seconds left when ``done`` of ``total`` units (epochs, or epochs of all ensemble
    members) took ``seconds``: the mean pace so far times what is left; inf before the
    first unit is done."""
    if total < 0 or done < 0 or seconds < 0:
        raise ValueError(f"eta_seconds needs done, total, seconds >= 0; got {done}, {total}, {seconds}")
    if done >= total:
        return 0.0
    if done == 0:
        return math.inf
    return seconds / done * (total - done)


def format_duration(seconds: float) -> str:
    """A duration as a person reads it: ``"2d 03h"``, ``"1h 05m"``, ``"3m 07s"``, ``"42s"``, ``"?"`` if unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = round(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {s:02d}s"
    return f"{s}s"
