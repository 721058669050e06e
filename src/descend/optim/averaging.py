"""Polyak averaging, Deep Learning sec. 8.7.3: the uniform average of the points an
optimizer visits, or their exponential moving average (eq. 8.39)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator

import torch
from torch import Tensor

from descend.errors import CheckpointError, ConfigError
from descend.optim._common import check_unit_interval


class PolyakAverage:
    r"""Running average of parameters (and optionally buffers) over the optimization path.

    Sec. 8.7.3 (Polyak & Juditsky, 1992). After :math:`t` visited points
    :math:`\theta^{(1)}, \dots, \theta^{(t)}`:

    .. math::

        \begin{aligned}
        &\text{uniform:} && \hat{\theta}^{(t)} = \frac{1}{t} \sum_i \theta^{(i)} \\
        &\text{ema:} && \hat{\theta}^{(t)} = \alpha \hat{\theta}^{(t-1)} + (1 - \alpha) \theta^{(t)}
            && \text{(8.39)}
        \end{aligned}

    The optimizer may leap back and forth across a valley without visiting its bottom; the
    average of points on both sides lies close to it. For non-convex problems the text
    recommends the exponential form, which forgets points separated from the current one by
    barriers. Both start from :math:`\hat{\theta}^{(1)} = \theta^{(1)}`, so the EMA has no bias
    towards the initial value (no bias correction is needed).

    Call :meth:`update` after every ``optimizer.step()``. The first ``start_step`` calls
    are a burn-in: the average just follows the current point, and averaging begins with the
    next call. Both forms are one ``torch._foreach_lerp_`` per call:
    :math:`\hat{\theta} \leftarrow \hat{\theta} + w (\theta - \hat{\theta})` with
    :math:`w = 1/k` (:math:`k`-th averaged point) or :math:`w = 1 - \alpha`.

    :meth:`swapped` puts the averaged weights into the model for evaluation or a checkpoint
    and restores the trained weights on exit (also on an exception); :meth:`state_dict`
    holds plain tensors only (safetensors-ready).

    Args:
        params_or_module: an ``nn.Module`` (names come from ``named_parameters``) or an
            iterable of tensors.
        mode: ``"uniform"`` or ``"ema"``.
        decay: :math:`\alpha` of eq. 8.39, in [0, 1) (ema only).
        start_step: number of ``update`` calls before averaging starts (>= 0).
        include_buffers: also average a module's floating-point buffers (e.g. BatchNorm
            running mean and variance, which the averaged weights should be evaluated
            with); integer buffers (``num_batches_tracked``) are copied, not averaged.
    """

    def __init__(
        self,
        params_or_module: torch.nn.Module | Iterable[Tensor],
        mode: str = "ema",
        decay: float = 0.999,
        start_step: int = 0,
        include_buffers: bool = False,
    ) -> None:
        if mode not in ("uniform", "ema"):
            raise ConfigError(f"Invalid mode: {mode!r}; Polyak averaging mode must be 'uniform' or 'ema'")
        self.mode = mode
        self.decay = check_unit_interval("decay", decay)
        if not isinstance(start_step, int) or isinstance(start_step, bool) or start_step < 0:
            raise ConfigError(f"Invalid start_step: {start_step!r}; start_step must be an integer >= 0")
        self.start_step = start_step

        self._module = params_or_module if isinstance(params_or_module, torch.nn.Module) else None
        self.include_buffers = include_buffers
        if self._module is not None:
            named = self._named_tensors()
        else:
            if include_buffers:
                raise ConfigError("include_buffers=True needs an nn.Module, not a list of tensors")
            named = [(str(i), p) for i, p in enumerate(params_or_module)]
        if not named:
            raise ConfigError("PolyakAverage got no parameters to average")
        self.names = [n for n, _ in named]
        self._live = [t for _, t in named]
        with torch.no_grad():
            self._average = [t.detach().clone() for t in self._live]
        self._floating = [i for i, t in enumerate(self._live) if t.is_floating_point() or t.is_complex()]
        self._other = [i for i in range(len(self._live)) if i not in set(self._floating)]
        self.num_updates = 0  # calls to update()
        self.num_averaged = 0  # points in the average

    def _named_tensors(self) -> list[tuple[str, Tensor]]:
        named = list(self._module.named_parameters())
        if self.include_buffers:
            named += list(self._module.named_buffers())
        return named

    def _refresh(self) -> None:
        """Follow the module if it was moved (``module.to(device)`` replaces buffer tensors,
        and keeps parameters but changes their device): re-read its tensors and move the
        averages to where the live tensors now are."""
        if self._module is not None:
            self._live = [t for _, t in self._named_tensors()]
        for i, (a, t) in enumerate(zip(self._average, self._live)):
            if a.device != t.device or a.dtype != t.dtype:
                self._average[i] = a.to(device=t.device, dtype=t.dtype)

    @torch.no_grad()
    def update(self) -> None:
        """Fold the current point into the average."""
        self._refresh()
        self.num_updates += 1
        if self.num_updates <= self.start_step:
            weight = 1.0  # burn-in: follow the current point
        else:
            self.num_averaged += 1
            if self.num_averaged == 1:
                weight = 1.0
            elif self.mode == "uniform":
                weight = 1.0 / self.num_averaged
            else:
                weight = 1.0 - self.decay
        average = [self._average[i] for i in self._floating]
        live = [self._live[i] for i in self._floating]
        for device_average, device_live in _buckets(average, live):
            torch._foreach_lerp_(device_average, device_live, weight)
        if self._other:
            torch._foreach_copy_([self._average[i] for i in self._other], [self._live[i] for i in self._other])

    def averaged(self) -> dict[str, Tensor]:
        """The averaged tensors by name (views of the internal state; clone to keep)."""
        return dict(zip(self.names, self._average))

    @contextmanager
    def swapped(self) -> Iterator[PolyakAverage]:
        """Put the averaged weights into the model, restore the trained ones on exit."""
        self._refresh()
        with torch.no_grad():
            backup = [t.detach().clone() for t in self._live]
            torch._foreach_copy_(self._live, self._average)
        try:
            yield self
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self._live, backup)

    def state_dict(self) -> dict[str, Tensor]:
        """Plain tensors: ``num_updates``, ``num_averaged`` (int64 scalars) and
        ``average.<name>`` for every averaged tensor."""
        out = {
            "num_updates": torch.tensor(self.num_updates, dtype=torch.int64),
            "num_averaged": torch.tensor(self.num_averaged, dtype=torch.int64),
        }
        out.update({f"average.{n}": t for n, t in zip(self.names, self._average)})
        return out

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        expected = {"num_updates", "num_averaged"} | {f"average.{n}" for n in self.names}
        missing, unexpected = expected - set(state), set(state) - expected
        if missing or unexpected:
            raise CheckpointError(
                "PolyakAverage state does not match the model: "
                f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}; "
                "was it saved from a different model or with include_buffers set differently?"
            )
        for n, t in zip(self.names, self._average):
            src = state[f"average.{n}"]
            if tuple(src.shape) != tuple(t.shape):
                raise CheckpointError(
                    f"PolyakAverage state for '{n}' has shape {tuple(src.shape)}, the model's is {tuple(t.shape)}"
                )
            t.copy_(src)
        self.num_updates = int(state["num_updates"])
        self.num_averaged = int(state["num_averaged"])

    def __repr__(self) -> str:
        extra = f", decay={self.decay}" if self.mode == "ema" else ""
        return (
            f"PolyakAverage(mode={self.mode!r}{extra}, start_step={self.start_step}, "
            f"tensors={len(self._live)}, num_averaged={self.num_averaged})"
        )


def _buckets(average: list[Tensor], live: list[Tensor]):
    if not average:
        return []
    groups = torch.optim.Optimizer._group_tensors_by_device_and_dtype([average, live])
    return [lists for lists, _ in groups.values()]
