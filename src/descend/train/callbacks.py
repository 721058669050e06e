"""Callbacks: how strategies plug into the one training loop.

A callback is any object with some of these methods; the Trainer calls those it has:

    on_fit_start(trainer)
    on_epoch_start(trainer, epoch)
    on_batch_end(trainer, batch_index, loss)        loss: detached scalar tensor
    on_validation_start(trainer)                    e.g. swap averaged weights in
    on_validation_end(trainer)                      ... and back out
    on_epoch_end(trainer, epoch, metrics)           may add entries to ``metrics``,
                                                    may set ``trainer.should_stop = True``
    on_fit_end(trainer)
    state_dict() / load_state_dict(state)           saved in checkpoints (tensors and
                                                    JSON-able values), restored on resume

:class:`Callback` is an empty base class for readers who like to subclass.
This module also holds the callbacks every run may want: early stopping (sec. 7.8 of
Deep Learning, used throughout ch. 8) and Polyak averaging for evaluation (sec. 8.7.3).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch

from descend.errors import ConfigError


class Callback:
    """Base class: every hook is a no-op."""

    def on_fit_start(self, trainer) -> None: ...
    def on_epoch_start(self, trainer, epoch: int) -> None: ...
    def on_batch_end(self, trainer, batch_index: int, loss: torch.Tensor) -> None: ...
    def on_validation_start(self, trainer) -> None: ...
    def on_validation_end(self, trainer) -> None: ...
    def on_epoch_end(self, trainer, epoch: int, metrics: dict) -> None: ...
    def on_fit_end(self, trainer) -> None: ...


class EarlyStopping(Callback):
    """Stop when the monitored metric has not improved for ``patience`` epochs.

    Deep Learning sec. 7.8 (Algorithm 7.1), the "early stopping" of sec. 8.7 and CS189:
    keep the parameters of the best validation epoch; with ``restore_best`` they are put
    back into the model when training ends.

    Args:
        monitor: a metric of the epoch, e.g. ``"val_accuracy"`` or ``"val_loss"``.
        mode: ``"max"`` or ``"min"``; by default ``"min"`` for losses, else ``"max"``.
        patience: epochs without improvement before stopping.
        min_delta: the smallest change that counts as an improvement.
        restore_best: load the best epoch's weights back at the end of training.
    """

    def __init__(
        self,
        monitor: str = "val_accuracy",
        mode: str | None = None,
        patience: int = 5,
        min_delta: float = 0.0,
        restore_best: bool = True,
    ) -> None:
        mode = mode or ("min" if "loss" in monitor else "max")
        if mode not in ("min", "max"):
            raise ConfigError(f"EarlyStopping mode must be 'min' or 'max', got {mode!r}")
        if patience < 0:
            raise ConfigError(f"EarlyStopping patience must be >= 0, got {patience}")
        self.monitor, self.mode, self.patience = monitor, mode, patience
        self.min_delta, self.restore_best = min_delta, restore_best
        self.best = -math.inf if mode == "max" else math.inf
        self.best_epoch = 0
        self.bad_epochs = 0
        self.best_state: dict[str, torch.Tensor] | None = None

    def _improved(self, value: float) -> bool:
        if self.mode == "max":
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def on_epoch_end(self, trainer, epoch: int, metrics: dict) -> None:
        if self.monitor not in metrics:
            raise ConfigError(
                f"EarlyStopping monitors {self.monitor!r}, which this run does not compute; "
                f"available: {', '.join(sorted(metrics))}"
            )
        value = float(metrics[self.monitor])
        if self._improved(value):
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            if self.restore_best:
                self.best_state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        else:
            self.bad_epochs += 1
            if self.bad_epochs > self.patience:
                trainer.should_stop = True
        metrics["best_epoch"] = self.best_epoch

    def on_fit_end(self, trainer) -> None:
        if self.restore_best and self.best_state is not None:
            trainer.model.load_state_dict(self.best_state)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}
        if self.best_state is not None:
            state["best_state"] = self.best_state
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.bad_epochs = state["best"], state["best_epoch"], state["bad_epochs"]
        self.best_state = state.get("best_state")


class AveragedEvaluation(Callback):
    """Evaluate (and save) with averaged parameters: Polyak averaging, sec. 8.7.3.

    ``averager`` is any object with ``update()``, a ``swapped()`` context manager and
    ``state_dict()/load_state_dict()`` (e.g. ``descend.optim.PolyakAverage``). It is
    updated after every batch; validation and test run with the averaged weights
    swapped in, training continues with the raw ones. With ``final=True`` the averaged
    weights are left in the model at the end of training, so they are what is saved.
    """

    def __init__(self, averager, final: bool = True) -> None:
        self.averager, self.final = averager, final
        self._swap = None

    def on_batch_end(self, trainer, batch_index: int, loss: torch.Tensor) -> None:
        self.averager.update()

    def on_validation_start(self, trainer) -> None:
        self._swap = self.averager.swapped()
        self._swap.__enter__()

    def on_validation_end(self, trainer) -> None:
        if self._swap is not None:
            self._swap.__exit__(None, None, None)
            self._swap = None

    def on_fit_end(self, trainer) -> None:
        if self.final:
            with self.averager.swapped():
                averaged = copy.deepcopy(trainer.model.state_dict())
            trainer.model.load_state_dict(averaged)

    def state_dict(self) -> dict[str, Any]:
        return self.averager.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.averager.load_state_dict(state)
