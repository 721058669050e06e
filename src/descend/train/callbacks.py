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
Deep Learning, used throughout ch. 8), the weights of the best validation epoch kept on
disk, and Polyak averaging for evaluation (sec. 8.7.3). They report what they did through
``logging.getLogger(__name__)``; the CLI shows those messages.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
from pathlib import Path
from typing import Any

import torch

from descend.errors import ConfigError

log = logging.getLogger(__name__)


def _monitored(callback: str, monitor: str, metrics: dict, trainer) -> float | None:
    """The epoch's value of ``monitor`` (None in an epoch the trainer did not evaluate, see its
    ``eval_every``); a ConfigError naming the metrics there are if the run lacks it."""
    if not getattr(trainer, "evaluated", True):
        return None
    if monitor not in metrics:
        raise ConfigError(
            f"{callback} monitors {monitor!r}, which this run does not compute; "
            f"available: {', '.join(sorted(metrics))}"
        )
    return float(metrics[monitor])


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
    keep the parameters of the best validation epoch (the averaged ones under
    :class:`AveragedEvaluation`, which were scored); with ``restore_best`` they are put
    back into the model when training ends.

    Args:
        monitor: a metric of the epoch, e.g. ``"val_accuracy"`` or ``"val_loss"``.
        mode: ``"max"`` or ``"min"``; by default ``"min"`` for losses, else ``"max"``.
        patience: epochs without improvement before stopping.
        min_delta: the smallest change that counts as an improvement.
        restore_best: load the best epoch's weights back at the end of training.

    After training, ``stopped_epoch`` is the epoch it stopped at (0 if it never stopped
    the run) and ``reason`` says why, for the CLI to print; both are logged.
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
        self.stopped_epoch = 0
        self.reason = ""

    def _improved(self, value: float) -> bool:
        if self.mode == "max":
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def on_epoch_end(self, trainer, epoch: int, metrics: dict) -> None:
        value = _monitored("EarlyStopping", self.monitor, metrics, trainer)
        if value is None:
            return
        if self._improved(value):
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            if self.restore_best:
                with _evaluated_weights(trainer):
                    self.best_state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        else:
            self.bad_epochs += 1
            if self.bad_epochs > self.patience:
                trainer.should_stop = True
                self.stopped_epoch = epoch
                self.reason = (
                    f"{self.monitor} did not improve on its best, {self.best:.6g} at epoch {self.best_epoch}, "
                    f"in the {self.bad_epochs} epochs since (patience {self.patience}"
                    + (f", min_delta {self.min_delta:g}" if self.min_delta else "") + ")"
                )
                log.info("early stopping at epoch %d: %s", epoch, self.reason)
        metrics["best_epoch"] = self.best_epoch

    def on_fit_end(self, trainer) -> None:
        if self.restore_best and self.best_state is not None:
            trainer.model.load_state_dict(self.best_state)
            log.info("early stopping: restored the weights of epoch %d (%s %.6g)",
                     self.best_epoch, self.monitor, self.best)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}
        if self.best_state is not None:
            state["best_state"] = self.best_state
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.bad_epochs = state["best"], state["best_epoch"], state["bad_epochs"]
        self.best_state = state.get("best_state")


class BestWeights(Callback):
    """Keep the weights of the best epoch on disk (``best.safetensors``) beside the last ones.

    The model selection of early stopping (Deep Learning sec. 7.8) without stopping:
    after each epoch whose ``monitor`` improves on the best so far, the model's weights
    are written atomically with :func:`~descend.train.checkpoint.save_weights`, with
    ``{"epoch", monitor}`` in the file's metadata; under :class:`AveragedEvaluation` these
    are the averaged weights, the ones the epoch was scored with. A tie keeps the earlier
    epoch. The best
    value and epoch are in ``state_dict()``, so a resumed run compares with the best of
    the epochs before the interruption.

    Args:
        path: the weights file, e.g. ``run_dir / "best.safetensors"``.
        monitor: a metric of the epoch, e.g. ``"val_accuracy"`` or ``"val_loss"``.
        mode: ``"max"`` or ``"min"``; by default ``"min"`` for losses, else ``"max"``.
    """

    def __init__(self, path: str | Path, monitor: str = "val_accuracy", mode: str | None = None) -> None:
        mode = mode or ("min" if "loss" in monitor else "max")
        if mode not in ("min", "max"):
            raise ConfigError(f"BestWeights mode must be 'min' or 'max', got {mode!r}")
        self.path, self.monitor, self.mode = Path(path), monitor, mode
        self.best = -math.inf if mode == "max" else math.inf
        self.best_epoch = 0

    def on_epoch_end(self, trainer, epoch: int, metrics: dict) -> None:
        value = _monitored("BestWeights", self.monitor, metrics, trainer)
        if value is None:
            return
        if value > self.best if self.mode == "max" else value < self.best:
            self.best, self.best_epoch = value, epoch
            if trainer.rank == 0:
                from descend.train.checkpoint import save_weights

                with _evaluated_weights(trainer):
                    save_weights(self.path, trainer.model, {"epoch": epoch, self.monitor: value})
                log.debug("best weights: epoch %d, %s %.6g -> %s", epoch, self.monitor, value, self.path)

    def state_dict(self) -> dict[str, Any]:
        return {"monitor": self.monitor, "best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = float(state["best"]), int(state["best_epoch"])


def _evaluated_weights(trainer) -> contextlib.AbstractContextManager:
    """Put into the model the weights its last evaluation scored, for as long as the block
    runs: the averaged ones under :class:`AveragedEvaluation` (Polyak averaging, sec.
    8.7.3), which training swaps out again after evaluating; else the model's own."""
    for cb in trainer.callbacks:
        if isinstance(cb, AveragedEvaluation):
            return cb.averager.swapped()
    return contextlib.nullcontext()


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
