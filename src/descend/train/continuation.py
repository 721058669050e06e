"""Continuation methods, Deep Learning sec. 8.7.6: a sequence of objectives J^(0), ..., J^(n)
made easier by blurring, the last being the true cost J.

"These continuation methods would construct easier cost functions by 'blurring' the
original cost function. This blurring operation can be done by approximating

    J^(i)(theta) = E_{theta' ~ N(theta', theta, sigma^(i)2)} J(theta')          (eq. 8.40)

via sampling." The gradient of the blurred cost is the average gradient at perturbed
parameters, grad J^(i)(theta) = E_eps[grad J(theta + sigma eps)], which is what
:class:`Continuation` estimates on each minibatch: add sigma * N(0, I) noise to every
parameter, back-propagate, take the noise away again, step (averaging ``samples`` draws).
With ``target="inputs"`` the inputs are blurred instead of the parameters (noise
injection on x), another smoothing of the objective.

:class:`ContinuationSchedule` is the sequence sigma^(0) >= sigma^(1) >= ... >= sigma^(n) = 0,
each held for ``epochs_per_stage`` epochs: early epochs minimize a heavily smoothed cost
("well behaved over more of theta space"), the last ones the true cost. Continuation
"is also closely related to simulated annealing, which adds noise to the parameters".

Each minibatch is one update through the Trainer's step (``trainer.update``), so mixed
precision, clipping and data parallelism apply as to any other training. The perturbed
parameters theta + sigma eps are passed to the model functionally
(``torch.func.functional_call``); since d(theta + sigma eps)/d theta = I, the gradient
with respect to theta of J(theta + sigma eps) is grad J at the perturbed point, and the
parameters themselves are never moved. Use it as the Trainer's ``batch_step``::

    cont = Continuation(ContinuationSchedule.linear(0.05, stages=4, epochs_per_stage=2))
    Trainer(model, opt, data, epochs=10, batch_step=cont).fit()
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from descend.errors import ConfigError


class ContinuationSchedule:
    r""":math:`\sigma` for each epoch: ``sigmas[i]`` during stage i (``epochs_per_stage`` epochs
    each), then the last value (which must be 0: the final objective is the true J).

    Stage :math:`i` minimizes the blurred cost of eq. 8.40,

    .. math::

        J^{(i)}(\theta) = \mathbb{E}_{\theta' \sim \mathcal{N}(\theta'; \theta, \sigma^{(i)2})} J(\theta'),
        \qquad \sigma^{(0)} \ge \sigma^{(1)} \ge \dots \ge \sigma^{(n)} = 0.
    """

    def __init__(self, sigmas: Sequence[float], epochs_per_stage: int = 1) -> None:
        sigmas = [float(s) for s in sigmas]
        if not sigmas or any(s < 0 for s in sigmas):
            raise ConfigError(f"continuation sigmas must be a non-empty list of numbers >= 0, got {sigmas}")
        if any(b > a for a, b in zip(sigmas, sigmas[1:])):
            raise ConfigError(f"continuation sigmas must not increase (each objective harder than the last), got {sigmas}")
        if sigmas[-1] != 0:
            raise ConfigError(f"the last continuation sigma must be 0 (the true cost J), got {sigmas[-1]}")
        if not isinstance(epochs_per_stage, int) or epochs_per_stage < 1:
            raise ConfigError(f"epochs_per_stage must be an integer >= 1, got {epochs_per_stage!r}")
        self.sigmas, self.epochs_per_stage = sigmas, epochs_per_stage

    @classmethod
    def linear(cls, sigma0: float, stages: int, epochs_per_stage: int = 1) -> "ContinuationSchedule":
        r""":math:`\sigma^{(i)} = \sigma_0 (1 - i / n)`, :math:`i = 0, \dots, n` (:math:`n` = ``stages``)."""
        if stages < 1:
            raise ConfigError(f"stages must be >= 1, got {stages}")
        return cls([sigma0 * (1 - i / stages) for i in range(stages + 1)], epochs_per_stage)

    @classmethod
    def geometric(cls, sigma0: float, stages: int, ratio: float = 0.5, epochs_per_stage: int = 1) -> "ContinuationSchedule":
        r""":math:`\sigma^{(i)} = \sigma_0 r^i` for :math:`i < n` (:math:`r` = ``ratio``, :math:`n` =
        ``stages``), then 0."""
        if stages < 1 or not 0 < ratio < 1:
            raise ConfigError(f"need stages >= 1 and 0 < ratio < 1, got {stages}, {ratio}")
        return cls([sigma0 * ratio**i for i in range(stages)] + [0.0], epochs_per_stage)

    def stage(self, epoch: int) -> int:
        return min((epoch - 1) // self.epochs_per_stage, len(self.sigmas) - 1)

    def __call__(self, epoch: int) -> float:
        return self.sigmas[self.stage(epoch)]

    def __repr__(self) -> str:
        return f"ContinuationSchedule(sigmas={self.sigmas}, epochs_per_stage={self.epochs_per_stage})"


class Continuation:
    r"""A Trainer ``batch_step`` that descends the blurred objective of eq. 8.40.

    On each minibatch, with :math:`\sigma = \sigma^{(i)}` from the schedule and :math:`S` =
    ``samples``, the gradient of the blurred cost is estimated by

    .. math::

        \nabla_\theta J^{(i)}(\theta)
            = \mathbb{E}_{\varepsilon \sim \mathcal{N}(0, I)} \bigl[ \nabla J(\theta + \sigma \varepsilon) \bigr]
            \approx \frac{1}{S} \sum_{s=1}^{S} \nabla J(\theta + \sigma \varepsilon_s)

    (with ``target="inputs"`` the noise is added to :math:`x` instead).

    Args:
        schedule: epoch -> sigma (a :class:`ContinuationSchedule` or any callable).
        target: ``"parameters"`` (eq. 8.40) or ``"inputs"``.
        samples: noise draws averaged per minibatch (Monte Carlo estimate of the expectation).
        seed: with the step count, determines the noise (reproducible, also after resume).
    """

    def __init__(self, schedule: Callable[[int], float], target: str = "parameters", samples: int = 1,
                 seed: int = 0) -> None:
        if target not in ("parameters", "inputs"):
            raise ConfigError(f"continuation target must be 'parameters' or 'inputs', got {target!r}")
        if not isinstance(samples, int) or samples < 1:
            raise ConfigError(f"samples must be an integer >= 1, got {samples!r}")
        self.schedule, self.target, self.samples, self.seed = schedule, target, samples, int(seed)
        self.last_sigma = None

    def _generator(self, step: int) -> torch.Generator:
        return torch.Generator().manual_seed((self.seed * 1_000_003 + step) * 31 + 17)

    def __call__(self, trainer, x: Tensor, y: Tensor) -> Tensor:
        sigma = float(self.schedule(trainer.epoch + 1))
        self.last_sigma = sigma
        if sigma == 0.0:
            return trainer.step(x, y)  # the true objective J^(n) = J
        generator = self._generator(trainer.global_step)
        if self.target == "inputs":
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
            return trainer.step(x + sigma * noise, y)
        model = trainer.model
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        params = [p for p in model.parameters() if p.requires_grad]
        # Drawn once per minibatch, so that an optimizer re-evaluating the loss (a closure)
        # sees the same blurred objective at every evaluation.
        draws = [[torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device) for p in params]
                 for _ in range(self.samples)]

        def blurred_loss() -> Tensor:
            total = None
            for noise in draws:
                moved = dict(zip(names, torch._foreach_add(params, noise, alpha=sigma)))  # theta' = theta + sigma eps
                loss = trainer.loss_fn(torch.func.functional_call(model, moved, (x,)), y)
                total = loss if total is None else total + loss
            return total / self.samples  # the average of J(theta'): its gradient, that of grad J(theta')

        return trainer.update(blurred_loss)

    def __repr__(self) -> str:
        return f"Continuation({self.schedule!r}, target={self.target!r}, samples={self.samples})"


def blurred(objective: Callable[[Tensor], Tensor], theta: Tensor, sigma: float, samples: int = 1000,
            generator: torch.Generator | None = None) -> Tensor:
    """Monte Carlo estimate of eq. 8.40, E_{theta' ~ N(theta, sigma^2 I)} J(theta'), for a
    function ``objective`` of a parameter tensor (for plots and small demonstrations)."""
    eps = torch.randn((samples, *theta.shape), generator=generator, dtype=theta.dtype)
    return torch.stack([objective(theta + sigma * e) for e in eps]).mean(0)
