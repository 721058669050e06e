"""Hyperparameter checks shared by the optimizers, schedules, clipping and averaging.

Each raises ``descend.errors.ConfigError`` naming the bad value and the allowed range
("Invalid learning rate: -0.1; lr must be >= 0"), so a bad TOML value is reported at
construction, not as a NaN a thousand steps later. The plumbing around the first-order
update rules is in ``descend.optim.first_order``.
"""

from __future__ import annotations

import math

from descend.errors import ConfigError

EPS_PLACEMENTS = ("book", "torch")


def _number(name: str, value: object) -> float:
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"Invalid {name}: {value!r}; {name} must be a real number") from None
    if math.isnan(x):
        raise ConfigError(f"Invalid {name}: nan; {name} must be a real number")
    return x


def check_lr(lr: object) -> float:
    x = _number("learning rate", lr)
    if x < 0 or math.isinf(x):
        raise ConfigError(f"Invalid learning rate: {lr}; lr must be >= 0 and finite")
    return x


def check_nonnegative(name: str, value: object) -> float:
    x = _number(name, value)
    if x < 0 or math.isinf(x):
        raise ConfigError(f"Invalid {name}: {value}; {name} must be >= 0 and finite")
    return x


def check_positive(name: str, value: object) -> float:
    x = _number(name, value)
    if not (x > 0) or math.isinf(x):
        raise ConfigError(f"Invalid {name}: {value}; {name} must be > 0 and finite")
    return x


def check_unit_interval(name: str, value: object, *, closed: bool = False) -> float:
    """A decay rate or momentum: [0, 1) (or [0, 1] when ``closed``)."""
    x = _number(name, value)
    if x < 0 or x > 1 or (x == 1 and not closed):
        allowed = "[0, 1]" if closed else "[0, 1)"
        raise ConfigError(f"Invalid {name}: {value}; {name} must be in {allowed}")
    return x


def check_betas(betas: object) -> tuple[float, float]:
    try:
        b1, b2 = betas  # type: ignore[misc]
    except (TypeError, ValueError):
        raise ConfigError(
            f"Invalid betas: {betas!r}; betas must be a pair (rho1, rho2), each in [0, 1)"
        ) from None
    for i, b in enumerate((b1, b2)):
        x = _number(f"betas[{i}]", b)
        if not 0 <= x < 1:
            raise ConfigError(f"Invalid betas[{i}]: {b}; each of betas must be in [0, 1)")
    return float(b1), float(b2)


def check_eps(eps: object, *, allow_zero: bool = False) -> float:
    return check_nonnegative("eps", eps) if allow_zero else check_positive("eps", eps)


def check_eps_placement(eps_placement: object) -> str:
    if eps_placement not in EPS_PLACEMENTS:
        raise ConfigError(
            f"Invalid eps_placement: {eps_placement!r}; use 'book' (where the algorithm of "
            "Deep Learning ch. 8 puts delta) or 'torch' (sqrt(r) + eps, as torch.optim does)"
        )
    return str(eps_placement)


def check_foreach(foreach: object) -> bool | None:
    if foreach is not None and not isinstance(foreach, bool):
        raise ConfigError(f"Invalid foreach: {foreach!r}; foreach must be True, False or None")
    return foreach
