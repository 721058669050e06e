"""Learning-rate and momentum schedules (Deep Learning sec. 8.3.1-8.3.2).

* :class:`LinearDecay`: eq. 8.14, the book's linear decay to step tau, then constant
  (with an optional linear warm-up before it).
* :class:`WarmupCosine`: linear warm-up, then cosine annealing.
* :class:`Plateau`: divide the rate when a validation metric stops improving (torch's
  ``ReduceLROnPlateau``), stepped once per epoch with that metric.
* :class:`MomentumSchedule`: the momentum coefficient raised over time (sec. 8.3.2;
  CS189: "Geoff Hinton suggests starting at 0.5 and slowly increasing it to 0.9").
* ``SCHEDULES``: config name -> ``make(optimizer, *, total_steps, steps_per_epoch, **hparams)``
  returning a torch LR scheduler stepped once per batch; step, exponential, cosine and
  one-cycle wrap torch's schedulers.

All learning-rate schedules are ``torch.optim.lr_scheduler.LRScheduler`` subclasses, so
they work with any optimizer, save with ``state_dict()`` and resume exactly; all but
:class:`Plateau` have closed forms in the step count.
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LRScheduler

from descend.errors import ConfigError
from descend.optim._common import check_lr, check_nonnegative, check_positive, check_unit_interval


def _check_steps(name: str, value: object, *, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"Invalid {name}: {value!r}; {name} must be an integer >= {minimum}")
    return value


class LinearDecay(LRScheduler):
    r"""Linear decay of the learning rate until step :math:`\tau`, eq. 8.14, then constant.

    .. math::

        \epsilon_k = \begin{cases}
        (1 - \alpha) \epsilon_0 + \alpha \epsilon_\tau,\quad \alpha = \dfrac{k}{\tau} & k \le \tau \\
        \epsilon_\tau & k > \tau
        \end{cases}

    :math:`\epsilon_0` is each param group's initial ``lr`` and
    :math:`\epsilon_\tau = \texttt{final\_fraction} \cdot \epsilon_0`; the text: "Usually
    :math:`\epsilon_\tau` should be set to roughly 1% the value of :math:`\epsilon_0`" and
    :math:`\tau` to the number of iterations of "a few hundred passes through the training set".

    With ``warmup_steps`` :math:`= W > 0` the rate first rises linearly,
    :math:`\epsilon_0 (k + 1) / W` for :math:`k < W`, and eq. 8.14 then runs with
    :math:`k - W` in place of :math:`k`.

    Step it once per optimizer step (:math:`k` = number of ``scheduler.step()`` calls so far).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        tau: int,
        final_fraction: float = 0.01,
        warmup_steps: int = 0,
        last_epoch: int = -1,
    ) -> None:
        self.tau = _check_steps("tau", tau)
        self.final_fraction = check_unit_interval("final_fraction", final_fraction, closed=True)
        self.warmup_steps = _check_steps("warmup_steps", warmup_steps, minimum=0)
        super().__init__(optimizer, last_epoch)

    def _lr(self, base: float, k: int) -> float:
        if k < self.warmup_steps:
            return base * (k + 1) / self.warmup_steps
        alpha = min((k - self.warmup_steps) / self.tau, 1.0)
        return (1 - alpha) * base + alpha * self.final_fraction * base

    def get_lr(self) -> list[float]:
        return [self._lr(base, self.last_epoch) for base in self.base_lrs]

    _get_closed_form_lr = get_lr


class WarmupCosine(LRScheduler):
    r"""Linear warm-up for ``warmup_steps``, then cosine annealing to ``min_lr`` at
    ``total_steps`` (Loshchilov & Hutter's SGDR without restarts).

    .. math::

        \epsilon_k = \begin{cases}
        \epsilon_0 \dfrac{k + 1}{W} & k < W \\
        \epsilon_{\min} + \dfrac{1}{2} (\epsilon_0 - \epsilon_{\min})
            \Bigl(1 + \cos\Bigl(\pi \min\Bigl(1, \dfrac{k - W}{T - W}\Bigr)\Bigr)\Bigr) & k \ge W
        \end{cases}

    with :math:`W` = ``warmup_steps``, :math:`T` = ``total_steps``,
    :math:`\epsilon_{\min}` = ``min_lr`` and :math:`\epsilon_0` each param group's initial ``lr``.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_steps: int,
        total_steps: int,
        min_lr: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        self.warmup_steps = _check_steps("warmup_steps", warmup_steps, minimum=0)
        self.total_steps = _check_steps("total_steps", total_steps)
        if self.warmup_steps >= self.total_steps:
            raise ConfigError(
                f"Invalid warmup_steps: {warmup_steps}; warmup_steps must be < total_steps ({total_steps})"
            )
        self.min_lr = check_lr(min_lr)
        super().__init__(optimizer, last_epoch)

    def _lr(self, base: float, k: int) -> float:
        if k < self.warmup_steps:
            return base * (k + 1) / self.warmup_steps
        progress = min(1.0, (k - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        return self.min_lr + (base - self.min_lr) * (1 + math.cos(math.pi * progress)) / 2

    def get_lr(self) -> list[float]:
        return [self._lr(base, self.last_epoch) for base in self.base_lrs]

    _get_closed_form_lr = get_lr


class Plateau(torch.optim.lr_scheduler.ReduceLROnPlateau):
    r"""Multiply the rate by ``factor`` when ``monitor`` has not improved for ``patience`` epochs.

    Sec. 8.3.1: the learning rate must decrease over time, and is best chosen by
    "monitoring learning curves"; this lets the validation curve decide when. Torch's
    ``ReduceLROnPlateau``, with the metric it watches named:

    .. math::

        \begin{aligned}
        &\textbf{after } \text{epoch } k \text{, with } m_k = \texttt{metrics[monitor]}: \\
        &\quad \textbf{if } m_k \text{ better than } m_{\text{best}}
            \text{ (by threshold, relative or absolute)}:\
            m_{\text{best}} \leftarrow m_k,\ b \leftarrow 0 \\
        &\quad \textbf{else: } b \leftarrow b + 1 \\
        &\quad \textbf{if } \text{in cooldown}: c \leftarrow c - 1,\ b \leftarrow 0 \\
        &\quad \textbf{if } b > \texttt{patience}:
            \epsilon \leftarrow \max(\epsilon \cdot \texttt{factor}, \epsilon_{\min}),\
            c \leftarrow \texttt{cooldown},\ b \leftarrow 0
        \end{aligned}

    with :math:`b` the count of epochs without improvement, :math:`c` the cooldown epochs
    left and :math:`\epsilon_{\min}` = ``min_lr``.

    ``interval = "epoch"`` and ``monitor`` tell the Trainer to call
    ``scheduler.step(metrics[scheduler.monitor])`` once per epoch instead of ``step()``
    per batch. ``mode`` defaults to ``"min"`` for losses and ``"max"`` otherwise.
    """

    interval = "epoch"

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        monitor: str = "val_loss",
        mode: str | None = None,
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float = 0.0,
    ) -> None:
        if not isinstance(monitor, str) or not monitor:
            raise ConfigError(f"Invalid monitor: {monitor!r}; name a metric of the epoch, e.g. 'val_loss'")
        mode = mode or ("min" if "loss" in monitor else "max")
        if mode not in ("min", "max"):
            raise ConfigError(f"Invalid mode: {mode!r}; use 'min' or 'max'")
        if threshold_mode not in ("rel", "abs"):
            raise ConfigError(f"Invalid threshold_mode: {threshold_mode!r}; use 'rel' or 'abs'")
        if not 0.0 < factor < 1.0:
            raise ConfigError(f"Invalid factor: {factor!r}; factor must be in (0, 1)")
        self.monitor = monitor
        super().__init__(
            optimizer, mode=mode, factor=factor, patience=_check_steps("patience", patience, minimum=0),
            threshold=check_nonnegative("threshold", threshold), threshold_mode=threshold_mode,
            cooldown=_check_steps("cooldown", cooldown, minimum=0), min_lr=check_lr(min_lr),
        )

    def step(self, metrics: float | None = None, epoch: None = None) -> None:  # type: ignore[override]
        if metrics is None:
            raise ConfigError(
                f"the plateau schedule is stepped once per epoch with the metric it watches, "
                f"scheduler.step(metrics[{self.monitor!r}]); it was stepped without one"
            )
        super().step(metrics)


class MomentumSchedule:
    r"""Raise the momentum coefficient linearly from ``start`` to ``end`` over ``steps`` steps.

    Sec. 8.3.2: "Like the learning rate, :math:`\alpha` may also be adapted over time.
    Typically it begins with a small value and is later raised"; CS189: start at 0.5 and
    slowly increase to 0.9 or higher:

    .. math::

        \alpha_k = \alpha_{\text{start}} + (\alpha_{\text{end}} - \alpha_{\text{start}})
            \min\Bigl(\frac{k}{\texttt{steps}}, 1\Bigr).

    Sets each param group's ``momentum`` (descend's Momentum / Nesterov classes,
    ``torch.optim.SGD``) or, for Adam-style optimizers, ``betas[0]`` (rho1). Step it once per
    optimizer step, like an LR scheduler; ``state_dict``/``load_state_dict`` resume it.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, start: float = 0.5, end: float = 0.9, steps: int = 1000) -> None:
        self.optimizer = optimizer
        self.start = check_unit_interval("start", start, closed=True)
        self.end = check_unit_interval("end", end, closed=True)
        self.steps = _check_steps("steps", steps)
        for group in optimizer.param_groups:
            if "momentum" not in group and "betas" not in group:
                raise ConfigError(
                    f"{type(optimizer).__name__} has no momentum coefficient ('momentum' or 'betas') "
                    "to schedule; use Momentum, NesterovMomentum, RMSPropNesterov or Adam"
                )
        self.last_step = 0
        self._apply()

    def momentum(self, k: int | None = None) -> float:
        k = self.last_step if k is None else k
        return self.start + (self.end - self.start) * min(k / self.steps, 1.0)

    def _apply(self) -> None:
        alpha = self.momentum()
        for group in self.optimizer.param_groups:
            if "momentum" in group:
                group["momentum"] = alpha
            else:
                group["betas"] = (alpha, group["betas"][1])

    def step(self) -> None:
        self.last_step += 1
        self._apply()

    def state_dict(self) -> dict:
        return {"last_step": self.last_step}

    def load_state_dict(self, state: dict) -> None:
        self.last_step = int(state["last_step"])
        self._apply()


# ----------------------------------------------------------------------------- config names
# Each ``make`` takes the optimizer, the run's total number of batches and batches per epoch,
# and the schedule's own hyperparameters by name (validated with inspect.signature by the
# config layer), and returns a scheduler to step once per batch.


def constant(optimizer, *, total_steps: int, steps_per_epoch: int):
    """The learning rate stays at its initial value."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: 1.0)


def linear_decay(
    optimizer, *, total_steps: int, steps_per_epoch: int, tau: int | None = None,
    final_fraction: float = 0.01, warmup_steps: int = 0,
):
    """Eq. 8.14 to step ``tau`` (default: the whole run), optionally after a warm-up."""
    return LinearDecay(
        optimizer, tau=tau if tau is not None else max(1, total_steps - warmup_steps),
        final_fraction=final_fraction, warmup_steps=warmup_steps,
    )


def step_decay(optimizer, *, total_steps: int, steps_per_epoch: int, step_epochs: int | None = None, gamma: float = 0.1):
    """Multiply the rate by ``gamma`` every ``step_epochs`` epochs (default: a third of the run)."""
    epochs = max(1, total_steps // max(1, steps_per_epoch))
    step_epochs = step_epochs if step_epochs is not None else max(1, epochs // 3)
    _check_steps("step_epochs", step_epochs)
    return torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=step_epochs * steps_per_epoch, gamma=check_positive("gamma", gamma)
    )


def multistep(optimizer, *, total_steps: int, steps_per_epoch: int, milestones: list[int] | None = None,
              gamma: float = 0.1):
    """Multiply the rate by ``gamma`` at each epoch in ``milestones`` (default: half and
    three quarters of the run)."""
    if milestones is None:
        epochs = max(1, total_steps // max(1, steps_per_epoch))
        milestones = sorted({max(1, epochs // 2), max(1, 3 * epochs // 4)})
    for m in milestones:
        _check_steps("milestone", m)
    return torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=[m * steps_per_epoch for m in milestones], gamma=check_positive("gamma", gamma)
    )


def exponential(optimizer, *, total_steps: int, steps_per_epoch: int, gamma: float = 0.95):
    """Multiply the rate by ``gamma`` per epoch, spread evenly over its batches."""
    gamma = check_positive("gamma", gamma)
    return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma ** (1 / max(1, steps_per_epoch)))


def cosine(optimizer, *, total_steps: int, steps_per_epoch: int, min_lr: float = 0.0):
    """Cosine annealing from the initial rate to ``min_lr`` over the run (torch's CosineAnnealingLR)."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=_check_steps("total_steps", total_steps),
                                                      eta_min=check_lr(min_lr))


def warmup_cosine(optimizer, *, total_steps: int, steps_per_epoch: int, warmup_steps: int | None = None,
                  min_lr: float = 0.0):
    """Linear warm-up (default: the first epoch), then cosine annealing to ``min_lr``."""
    warmup_steps = warmup_steps if warmup_steps is not None else min(steps_per_epoch, max(0, total_steps - 1))
    return WarmupCosine(optimizer, warmup_steps=warmup_steps, total_steps=total_steps, min_lr=min_lr)


def onecycle(optimizer, *, total_steps: int, steps_per_epoch: int, max_lr: float | None = None,
             pct_start: float = 0.3, div_factor: float = 25.0, final_div_factor: float = 1e4):
    """Smith's one-cycle policy (torch's OneCycleLR); the peak is each group's ``lr`` unless
    ``max_lr`` is given. Momentum (or rho1) is cycled inversely when the optimizer has one."""
    peak = [g["lr"] for g in optimizer.param_groups] if max_lr is None else check_lr(max_lr)
    cycle_momentum = all("momentum" in g or "betas" in g for g in optimizer.param_groups)
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=peak, total_steps=_check_steps("total_steps", total_steps),
        pct_start=check_unit_interval("pct_start", pct_start), div_factor=check_positive("div_factor", div_factor),
        final_div_factor=check_positive("final_div_factor", final_div_factor), cycle_momentum=cycle_momentum,
    )


def plateau(optimizer, *, total_steps: int, steps_per_epoch: int, monitor: str = "val_loss", mode: str | None = None,
            factor: float = 0.1, patience: int = 10, threshold: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0):
    """Divide the rate by 1/``factor`` when ``monitor`` stalls for ``patience`` epochs
    (:class:`Plateau`; stepped per epoch with the metric, not per batch)."""
    return Plateau(optimizer, monitor=monitor, mode=mode, factor=factor, patience=patience, threshold=threshold,
                   cooldown=cooldown, min_lr=min_lr)


SCHEDULES = {
    "constant": constant,
    "linear-decay": linear_decay,
    "step": step_decay,
    "multistep": multistep,
    "exponential": exponential,
    "cosine": cosine,
    "warmup-cosine": warmup_cosine,
    "onecycle": onecycle,
    "plateau": plateau,
}
