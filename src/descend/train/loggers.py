"""Loggers: a run's metrics as a CSV table and as TensorBoard events.

Both are callbacks (see :mod:`descend.train.callbacks`) that only write on rank 0 and
keep each epoch exactly once after any interruption and ``--resume``:

* :class:`CSVLogger` rewrites the whole ``metrics.csv`` atomically at every epoch end from
  the Trainer's history, which the checkpoint restores; an epoch that was written but not
  checkpointed is overwritten when it is trained again.
* :class:`TensorBoardLogger` opens its ``SummaryWriter`` with ``purge_step`` = the first
  epoch still to train, so TensorBoard hides the events that a killed attempt wrote for
  that epoch and later ones. Steps are epochs.

Put them last in the callback list, so the metrics other callbacks add to an epoch
(``best_epoch``) are in the row.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

from descend.errors import ConfigError
from descend.io import atomic_write_text
from descend.train.callbacks import Callback

log = logging.getLogger(__name__)

CSV = "metrics.csv"
TENSORBOARD = "tensorboard"


def columns(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """The union of the rows' keys, in order of first appearance (``epoch`` first)."""
    seen: dict[str, None] = {"epoch": None}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def write_csv(path: str | Path, rows: list[Mapping[str, Any]]) -> None:
    """Write ``rows`` as one CSV table (a header of :func:`columns`), atomically.

    A key missing from a row is an empty cell; floats are written with ``repr`` so they
    read back exactly.
    """
    names = columns(rows) if rows else []
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if names:
        writer.writerow(names)
    for row in rows:
        writer.writerow(["" if row.get(k) is None else repr(row[k]) if isinstance(row[k], float) else row[k]
                         for k in names])
    atomic_write_text(path, buffer.getvalue())


class CSVLogger(Callback):
    """``metrics.csv`` beside ``metrics.jsonl``: one row per epoch, one column per metric.

    Args:
        path: the CSV file, e.g. ``run_dir / "metrics.csv"``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_epoch_end(self, trainer, epoch: int, metrics: dict) -> None:
        if trainer.rank == 0:  # the Trainer appends ``metrics`` to its history after this hook
            write_csv(self.path, [*trainer.history, metrics])

    def on_fit_end(self, trainer) -> None:
        if trainer.rank == 0 and trainer.history:  # with what callbacks after this one added
            write_csv(self.path, trainer.history)


def tag(key: str) -> str:
    """TensorBoard tag of a metric: ``val_loss`` -> ``loss/val``, ``test_accuracy`` ->
    ``accuracy/test`` (one chart per quantity, one line per split); others unchanged."""
    for quantity in ("loss", "accuracy"):
        if key.endswith("_" + quantity):
            return f"{quantity}/{key[: -len(quantity) - 1]}"
    return key


def flat_hparams(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config (``dataclasses.asdict(config)``) as ``{"optimizer.lr": 0.1, ...}``
    with the value types TensorBoard's hparams accept (lists and None become strings)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flat_hparams(value, name + "."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


def require_tensorboard():
    """torch's ``SummaryWriter``, or a ConfigError saying how to install what it needs."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(
            'train.log = ["tensorboard"] needs the tensorboard package: pip install "descend[tensorboard]"'
        ) from None
    return SummaryWriter


def figure_image(fig):
    """A matplotlib Figure rendered to an (H, W, 3) uint8 array."""
    import numpy as np

    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


class TensorBoardLogger(Callback):
    """TensorBoard events for a run: scalars per epoch, pictures and hyperparameters at the end.

    Every number of an epoch's metrics (losses, accuracies, ``lr``, ``images_per_s``,
    ``seconds``) is a scalar at step = epoch, tagged by :func:`tag`. When training ends:
    the learning curves and the first conv layer's filters as images, and ``hparams``
    with the final metrics, for TensorBoard's HParams tab.

    Args:
        log_dir: the events folder, e.g. ``run_dir / "tensorboard"``.
        hparams: flat ``{name: bool | int | float | str}`` (see :func:`flat_hparams`).
        pictures: log the learning curves and filters at the end.
    """

    def __init__(self, log_dir: str | Path, hparams: Mapping[str, Any] | None = None, pictures: bool = True) -> None:
        self.SummaryWriter = require_tensorboard()  # fail at construction, before training starts
        self.log_dir = Path(log_dir)
        self.hparams = dict(hparams or {})
        self.pictures = pictures
        self.writer = None

    def on_fit_start(self, trainer) -> None:
        if trainer.rank != 0:
            return
        # Events of epochs >= purge_step that an interrupted attempt wrote are hidden.
        self.writer = self.SummaryWriter(str(self.log_dir), purge_step=trainer.epoch + 1)
        if trainer.epoch:
            log.info("TensorBoard: resuming at epoch %d; later events of the earlier attempt are purged",
                     trainer.epoch + 1)

    def on_epoch_end(self, trainer, epoch: int, metrics: dict) -> None:
        if self.writer is None:
            return
        for key, value in metrics.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(tag(key), value, epoch)
        self.writer.flush()

    def on_fit_end(self, trainer) -> None:
        if self.writer is None:
            return
        if self.pictures and trainer.history:
            self._log_pictures(trainer)
        if self.hparams and trainer.history:
            from torch.utils.tensorboard.summary import hparams

            final = {f"hparam/{k}": float(v) for k, v in trainer.history[-1].items()
                     if k.endswith(("_loss", "_accuracy")) and math.isfinite(float(v))}
            for summary in hparams(self.hparams, final):
                self.writer.file_writer.add_summary(summary, trainer.epoch)
            for k, v in final.items():
                self.writer.add_scalar(k, v, trainer.epoch)
        self.writer.close()
        self.writer = None

    def _log_pictures(self, trainer) -> None:
        from descend import plots, viz

        fig = plots.learning_curves_figure(trainer.history)
        self.writer.add_image("learning_curves", figure_image(fig), trainer.epoch, dataformats="HWC")
        layers = viz.conv_layers(trainer.model)
        if layers:
            name, layer = next(iter(layers.items()))
            fig = viz.filters_figure(layer, title=f"first-layer filters ({name})")
            self.writer.add_image("filters", figure_image(fig), trainer.epoch, dataformats="HWC")
