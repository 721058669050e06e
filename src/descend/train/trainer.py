"""The Trainer: the one training loop of descend.

Minibatch stochastic gradient training (Deep Learning Algorithm 8.1) with everything
around it: seeded shuffling, augmentation, evaluation on validation and test data
after each epoch, callbacks, LR schedulers, a progress bar, metrics as JSONL,
checkpoints that resume bit-identically on CPU, and a NaN/inf guard.

Every other way of training in descend plugs into this loop instead of writing its
own: strategies are callbacks (early stopping, averaging, curricula), samplers decide
the order of examples, ``batch_step`` replaces the per-batch work (truncated BPTT,
continuation, hints), and optimizers that re-evaluate the loss receive a closure
(``needs_closure = True``). Whatever the plugin, every parameter update goes through
:meth:`Trainer.update`, which owns precision (autocast, the fp16 gradient scaler),
back-propagation, gradient averaging across processes, clipping, the non-finite guard
and the optimizer step: a plugin only says what loss to descend.

Reproducibility: the example order and the augmentation of epoch ``e`` are drawn from
generators seeded by ``(seed, e)``, so they need no saved state; dropout uses the
global torch RNG, whose state is checkpointed. Resuming from the checkpoint of epoch
``e`` therefore gives the same losses, bit for bit on CPU, as never stopping.

Scale-out and devices: in a ``torch.distributed`` process group (torchrun)
the same loop trains data-parallel; the pieces it calls live in
:mod:`descend.train.distributed` (sharding of each global batch, DDP, sharded evaluation,
rank-0-only writing). ``amp`` runs the training forward pass under autocast (bf16, or
fp16 with a gradient scaler), ``channels_last`` stores conv weights and batches
channels-last, and batches reach a CUDA device through pinned memory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F

from descend.data.tensors import Splits, TensorPair
from descend.errors import CheckpointError, ConfigError, DescendError, Diverged, ShapeError
from descend.io import append_line, atomic_write_text, remove_temp_files
from descend.optim import in_backward
from descend.train import distributed
from descend.train import checkpoint
from descend.train.checkpoint import load_state, save_state, save_weights
from descend.train.summary import eta_seconds, format_duration

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.safetensors"
METRICS = "metrics.jsonl"
WEIGHTS = "model.safetensors"

HOOKS = (
    "on_fit_start",
    "on_epoch_start",
    "on_batch_end",
    "on_validation_start",
    "on_validation_end",
    "on_epoch_end",
    "on_fit_end",
)


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """A CPU generator determined by (seed, epoch, stream): the same draws on every run."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 7 + stream)


class Trainer:
    """Train ``model`` with ``optimizer`` on ``data`` for ``epochs`` epochs.

    Args:
        model: any ``nn.Module`` mapping a batch of inputs to outputs for ``loss``.
        optimizer: any ``torch.optim.Optimizer`` (descend's or torch's).
        data: a :class:`~descend.data.Splits` (train, optional val and test), or a
            ``(train, val, test)`` tuple of TensorPairs.
        loss: ``loss(outputs, targets) -> scalar``; cross-entropy on logits by default.
        epochs: number of epochs to train (counted from 1).
        batch_size: minibatch size m of Algorithm 8.1.
        eval_batch_size: batch size for evaluation (no gradients, so larger).
        scheduler: a torch LR scheduler, stepped after every batch
            (``scheduler_interval="batch"``) or every epoch (``"epoch"``).
        callbacks: objects with hook methods (see :mod:`descend.train.callbacks`).
        run_dir: where metrics, checkpoints and weights go; nothing is written without it.
        seed: determines the example order, augmentation and (on a fresh start) the
            global torch RNG used by dropout.
        augment: ``augment(x, generator) -> x`` applied to each training batch.
        sampler: ``sampler(trainer, epoch, generator) -> LongTensor`` of training indices
            for the epoch (curricula, emphasis); default a uniform random permutation.
        shuffle: with no sampler, shuffle each epoch (else the data set's order).
        drop_last: skip a final partial batch (network3 does).
        batch_step: ``batch_step(trainer, x, y) -> loss`` replacing the per-batch work; it
            makes its updates with ``trainer.update(loss_fn)`` (one or more per batch).
        quiet: no progress bar and no per-epoch line.
        device: where the model and batches live.
        evaluate_test: also evaluate on the test set each epoch.
        eval_every: evaluate (validation, and test with ``evaluate_test``) after every
            ``eval_every``-th epoch and after the last; 0: after the last epoch only.
            Epochs in between report only training metrics, and monitoring callbacks and
            the plateau schedule wait for the next evaluation.
        checkpoint: write a resumable checkpoint after every epoch (needs ``run_dir``).
        amp: ``"none"``, ``"bf16"`` or ``"fp16"``: automatic mixed precision for the training
            forward pass (``torch.autocast``); fp16 adds a ``torch.amp.GradScaler`` (not with
            closure optimizers). Evaluation stays in full precision.
        channels_last: channels-last memory format for the model and 4-D batches (faster
            convolutions on GPUs, above all with ``amp``).
        clip_norm: clip the gradients to this global L2 norm before every step (sec. 8.2.4,
            10.11.1); 0: no clipping.
        nonfinite: ``"raise"``, ``"skip"`` or ``"off"``: before every step, a NaN/inf gradient
            raises :class:`~descend.errors.Diverged` or skips the step (sec. 8.2.5), or is
            not checked (a non-finite *loss* always stops training).
        sync_batchnorm: under data parallelism, normalize with the statistics of the global
            batch instead of each rank's (see :mod:`descend.train.distributed`).
        data_parallel: ``None`` trains data-parallel when a process group is initialized;
            ``False`` trains this process alone (e.g. one ensemble member per process).
        sgd_in_backward: take plain-SGD steps inside back-propagation, without storing the
            gradients (:mod:`descend.optim.in_backward`): of the weights that layers multiply
            through :func:`~descend.optim.in_backward.matmul`, one BLAS call each, and of every
            parameter of a network3 ``Network``, which back-propagates by hand. The same
            updates to rounding, faster at small minibatches. Needs plain SGD (no momentum), and
            no clipping, non-finite guard, fp16 scaler or data parallelism, which would need those
            gradients.

    Data parallelism: ``batch_size`` is the global batch; each rank computes on its
    piece and DDP averages the gradients, so N processes train the model one process
    would (to float rounding; exactly the same example order). Overrides of
    :meth:`compute_loss` must call ``self.forward_model`` (the DDP wrapper), not
    ``self.model``; a ``batch_step`` may use ``self.model``, whose gradients are then
    averaged before every optimizer step.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        data: Splits | tuple,
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
        *,
        epochs: int = 1,
        batch_size: int = 64,
        eval_batch_size: int = 1000,
        scheduler: Any = None,
        scheduler_interval: str = "batch",
        callbacks: Iterable[Any] = (),
        run_dir: str | Path | None = None,
        seed: int = 0,
        augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
        sampler: Callable[["Trainer", int, torch.Generator], torch.Tensor] | None = None,
        shuffle: bool = True,
        drop_last: bool = False,
        batch_step: Callable[["Trainer", torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        quiet: bool = False,
        device: str | torch.device = "cpu",
        evaluate_test: bool = True,
        eval_every: int = 1,
        checkpoint: bool = True,
        amp: str = "none",
        channels_last: bool = False,
        clip_norm: float = 0.0,
        nonfinite: str = "off",
        sync_batchnorm: bool = False,
        data_parallel: bool | None = None,
        sgd_in_backward: bool = False,
    ) -> None:
        if not isinstance(data, Splits):
            if not (isinstance(data, tuple) and 1 <= len(data) <= 3):
                raise ConfigError("data must be a Splits or a (train, val, test) tuple of TensorPairs")
            data = Splits(*data)
        if epochs < 0 or batch_size < 1 or eval_batch_size < 1 or eval_every < 0:
            raise ConfigError(
                f"epochs and eval_every must be >= 0 and batch sizes >= 1 (got epochs={epochs}, "
                f"eval_every={eval_every}, batch_size={batch_size}, eval_batch_size={eval_batch_size})"
            )
        if scheduler_interval not in ("batch", "epoch"):
            raise ConfigError(f"scheduler_interval must be 'batch' or 'epoch', got {scheduler_interval!r}")
        if len(data.train) == 0:
            raise ConfigError("the training set is empty")
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.optimizer, self.data, self.loss_fn = optimizer, data, loss
        self.epochs, self.batch_size, self.eval_batch_size = epochs, batch_size, eval_batch_size
        self.scheduler, self.scheduler_interval = scheduler, scheduler_interval
        self.callbacks = list(callbacks)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.seed, self.augment, self.sampler, self.shuffle, self.drop_last = seed, augment, sampler, shuffle, drop_last
        self.batch_step, self.quiet = batch_step, quiet
        self.evaluate_test, self.eval_every, self.checkpoint = evaluate_test, eval_every, checkpoint
        self.evaluated = False  # whether the current epoch was evaluated (for monitoring callbacks)
        self.needs_closure = bool(getattr(optimizer, "needs_closure", False))

        # Devices and precision.
        if amp not in ("none", "bf16", "fp16"):
            raise ConfigError(f"amp must be 'none', 'bf16' or 'fp16', got {amp!r}")
        if amp == "fp16" and self.needs_closure:
            raise ConfigError(
                "amp = 'fp16' needs a gradient scaler, which cannot drive an optimizer that re-evaluates "
                f"the loss ({type(optimizer).__name__}); use amp = 'bf16' or 'none'"
            )
        self.amp = amp
        self.scaler = torch.amp.GradScaler(self.device.type) if amp == "fp16" else None
        self.channels_last = channels_last
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # Data parallelism: one process of a torch.distributed group, if there is one.
        self.rank, self.world_size = distributed.world() if data_parallel is not False else (0, 1)
        self.sgd_in_backward = sgd_in_backward
        if sgd_in_backward:  # the steps taken in back-propagation leave no gradient for these to see
            blockers = [name for name, on in (("clip_norm", clip_norm > 0), ("nonfinite", nonfinite != "off"),
                                              ("amp = 'fp16'", amp == "fp16"), ("data parallelism", self.world_size > 1))
                        if on]
            if blockers:
                raise ConfigError(f"sgd_in_backward cannot be combined with {', '.join(blockers)}: "
                                  f"{'they need' if len(blockers) > 1 else 'it needs'} every gradient before the "
                                  "step; turn them off or train without sgd_in_backward")
            in_backward.check_plain_sgd(optimizer)
        # Exact-curvature optimizers (Newton, saddle-free Newton) differentiate the gradient
        # again: keep its graph. Not under DDP, which averages only the first backward pass.
        self._create_graph = bool(getattr(optimizer, "needs_create_graph", False)) and self.world_size == 1
        self.forward_model = self.model  # what the training forward pass calls (DDP under data parallelism)
        self._loss_weight = 1.0  # this rank's share of the global batch, see distributed.shard_weight
        if self.world_size > 1:
            if batch_step is None:
                self.model, self.forward_model = distributed.data_parallel(
                    self.model, self.device, sync_batchnorm=sync_batchnorm
                )
            else:  # the batch step runs the bare model: average gradients before each update
                if sync_batchnorm:
                    self.model = distributed.convert_sync_batchnorm(self.model, self.device)
                self._gradient_hook = distributed.register_gradient_averaging(optimizer)
        # Step pre-hooks run in this order: averaged gradients are clipped, then checked.
        if clip_norm < 0 or not math.isfinite(clip_norm):
            raise ConfigError(f"clip_norm must be a finite number >= 0 (0: no clipping), got {clip_norm}")
        if nonfinite not in ("off", "skip", "raise"):
            raise ConfigError(f"nonfinite must be 'off', 'skip' or 'raise', got {nonfinite!r}")
        self.clip_norm, self.nonfinite = clip_norm, nonfinite
        self.skipped_steps = 0
        if clip_norm > 0:
            from descend.optim.clipping import register_grad_clipping

            register_grad_clipping(optimizer, max_norm=clip_norm)
        if nonfinite != "off":
            from descend.optim.clipping import register_nonfinite_guard

            register_nonfinite_guard(optimizer, nonfinite, names=self.model, on_skip=self._skipped)

        self.epoch = 0  # epochs completed
        self.global_step = 0  # optimizer steps taken
        self.history: list[dict[str, Any]] = []
        self.should_stop = False
        self.batch: tuple[torch.Tensor, torch.Tensor] | None = None  # current batch, for callbacks
        self._fresh = True
        if self.run_dir is not None and self.rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ the loop
    def fit(self) -> list[dict[str, Any]]:
        """Train until ``epochs`` epochs are done or a callback sets ``should_stop``."""
        if self._fresh:
            torch.manual_seed(self.seed)  # dropout masks; restored from checkpoints on resume
            self._fresh = False
        self._call("on_fit_start")
        self._fit_start = (self.epoch, time.perf_counter())  # for the ETA of the epoch lines
        while self.epoch < self.epochs and not self.should_stop:
            epoch = self.epoch + 1
            if self.world_size > 1:  # different dropout masks on each rank, the same ones on resume
                torch.manual_seed(distributed.rank_seed(self.seed, epoch, self.rank))
            self._call("on_epoch_start", epoch)
            with distributed.collective_errors(self.world_size > 1):
                metrics = self._train_epoch(epoch)
                self.evaluated = epoch == self.epochs or (self.eval_every > 0 and epoch % self.eval_every == 0)
                if self.evaluated:
                    metrics.update(self._evaluate_all())
            if self.evaluated and self.scheduler is not None and hasattr(self.scheduler, "monitor"):  # plateau
                if self.scheduler.monitor not in metrics:
                    raise ConfigError(f"the schedule monitors {self.scheduler.monitor!r}, which this run does not "
                                      f"compute; available: {', '.join(sorted(metrics))}")
                self.scheduler.step(metrics[self.scheduler.monitor])
            self.epoch = epoch
            self._call("on_epoch_end", epoch, metrics)
            self.history.append(metrics)
            self._report(metrics)
            if self.run_dir is not None and self.rank == 0:
                append_line(self.run_dir / METRICS, json.dumps(metrics))
                if self.checkpoint:
                    self.save_checkpoint(self.run_dir / CHECKPOINT)
        self._call("on_fit_end")
        if self.run_dir is not None and self.rank == 0:
            save_weights(self.run_dir / WEIGHTS, self.model, {"epoch": self.epoch})
        return self.history

    def _train_epoch(self, epoch: int) -> dict[str, Any]:
        self.model.train()
        train = self.data.train
        n = len(train)
        order_gen = epoch_generator(self.seed, epoch, 0)
        augment_gen = epoch_generator(self.seed, epoch, 1)
        if self.sampler is not None:
            order = self.sampler(self, epoch, order_gen)
        elif self.shuffle:
            order = torch.randperm(n, generator=order_gen)
        else:
            order = torch.arange(n)
        batches = list(order.split(self.batch_size))
        if self.drop_last and len(batches) > 1 and len(batches[-1]) < self.batch_size:
            batches.pop()
        if self.world_size > 1 and batches and len(batches[-1]) < self.world_size:
            batches.pop()  # some rank would get no example of it
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        seen = 0
        start = time.perf_counter()
        bar = self._progress(len(batches), f"epoch {epoch}/{self.epochs}")
        for i, idx in enumerate(batches):
            loss, n_local = self._train_batch(idx, augment_gen)
            if not torch.isfinite(loss):
                raise Diverged(
                    f"the training loss became {loss.item()} at epoch {epoch}, batch {i + 1}/{len(batches)} "
                    f"(step {self.global_step + 1}). "
                    "Try a smaller learning rate (e.g. a third of it), gradient clipping, or batch norm"
                )
            self.global_step += 1
            total += loss * n_local
            seen += n_local
            if self.scheduler is not None and self.scheduler_interval == "batch":
                self.scheduler.step()
            if bar is not None:
                bar.update(1)
                if i % 20 == 0:
                    bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
            self._call("on_batch_end", i, loss)
        if bar is not None:
            bar.close()
        self.batch = None
        if self.scheduler is not None and self.scheduler_interval == "epoch" and not hasattr(self.scheduler, "monitor"):
            self.scheduler.step()
        if self.world_size > 1:  # the epoch's loss over all ranks' examples
            sums = distributed.all_reduce_sum(torch.stack([total, torch.full_like(total, seen)]))
            total, seen = sums[0], int(sums[1])
            # Every rank ends the epoch with rank 0's model (batch-norm averages included), so
            # callbacks and samplers that look at the model decide alike on every rank.
            distributed.sync_buffers(self.model)
        seconds = time.perf_counter() - start
        return {
            "epoch": epoch,
            "train_loss": float(total) / max(seen, 1),
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "seconds": seconds,
            "images_per_s": seen / seconds if seconds > 0 else math.inf,
        }

    def _train_batch(self, idx: torch.Tensor, augment_gen: torch.Generator) -> tuple[torch.Tensor, int]:
        """Augment the examples ``idx``, take this rank's piece, update; (loss, examples here)."""
        train = self.data.train
        x, y = train.x[idx], train.y[idx]
        if self.augment is not None:
            x = self.augment(x, augment_gen)
        if self.world_size > 1:  # this rank's piece of the global batch
            x = distributed.shard(x, self.rank, self.world_size)
            y = distributed.shard(y, self.rank, self.world_size)
            self._loss_weight = distributed.shard_weight(len(x), len(idx), self.world_size)
        x, y = self._to_device(x), self._to_device(y)
        self.batch = (x, y)
        loss = self.batch_step(self, x, y) if self.batch_step is not None else self.step(x, y)
        if loss is None or not torch.is_tensor(loss):
            raise ConfigError("the batch step must return the loss as a tensor")
        return loss.detach(), len(x)

    def try_first_batch(self) -> float:
        """One update on the first minibatch, as training would take it; returns its loss.

        For checking a configuration before a run starts (a model that cannot take the data,
        a layer that fails under ``amp``, a loss that is NaN from the start): whatever would
        fail in the first step fails here. It changes this Trainer's model and optimizer, so
        call it on a Trainer built for the purpose and then discarded.
        """
        self.model.train()
        idx = torch.arange(min(self.batch_size, len(self.data.train)))
        try:
            loss, _ = self._train_batch(idx, epoch_generator(self.seed, 1, 1))
        except (RuntimeError, TypeError, ValueError, IndexError) as exc:
            if isinstance(exc, DescendError):
                raise
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(
                f"{type(self.model).__name__} cannot take a training step on inputs of shape "
                f"{tuple(self.data.train.x.shape[1:])} (amp = {self.amp!r}): {detail}. Check the [model] options "
                "against the data set, or try amp = 'none'"
            ) from None
        finally:
            self.batch = None
        if not torch.isfinite(loss):
            raise Diverged(
                f"the training loss is {loss.item()} on the very first batch: check the inputs for NaN/inf "
                "and the loss for the targets' format, then the learning rate"
            )
        return float(loss)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One minibatch update (Algorithm 8.1): the gradient of the batch loss, then a step."""
        return self.update(lambda: self.compute_loss(x, y))

    def update(self, loss_fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The one optimizer update of descend: every way of training goes through here.

        ``loss_fn()`` computes the loss to descend (a forward pass of the current batch, or of
        a chunk of it: truncated BPTT calls this once per chunk). Around it the Trainer runs,
        in this order: zero the gradients; ``loss_fn`` under autocast (``amp``); weight the
        loss by this rank's share of the global batch (data parallelism); scale it for fp16
        (gradient scaler); back-propagate (with ``create_graph`` for exact-curvature
        optimizers); then the optimizer step, whose pre-hooks average the gradients over
        ranks (for plugins that run the bare model), clip them (``clip_norm``) and guard
        against non-finite values (``nonfinite``), and whose scaler skips steps whose fp16
        gradients overflowed. Optimizers that re-evaluate the loss (``needs_closure``) get
        all of this as their closure. Returns the loss (for a closure optimizer: the loss
        its step reports).

        Under data parallelism a closure returns the loss all-reduced over ranks, so that
        the line searches of full-batch methods make the same decisions on every rank.
        """
        if self.needs_closure:
            evaluated: list[torch.Tensor] = []

            def closure() -> torch.Tensor:
                self.optimizer.zero_grad(set_to_none=True)
                loss = self._forward(loss_fn)
                self._backward(loss)
                evaluated.append(loss.detach())
                return loss

            if self.world_size > 1 and self.batch_step is None:  # DDP averages the gradient itself
                closure = distributed.all_reduce_closure(closure, None, self._loss_weight / self.world_size)
            loss = self.optimizer.step(closure)
            if torch.is_tensor(loss):
                return loss
            if not evaluated:
                raise ConfigError(f"{type(self.optimizer).__name__}.step(closure) never called the closure")
            return evaluated[0]
        self.optimizer.zero_grad(set_to_none=True)
        with in_backward.steps(self.optimizer) if self.sgd_in_backward else contextlib.nullcontext():
            loss = self._forward(loss_fn)
        self._backward(loss)
        if self.scaler is not None:  # unscales (so the hooks see true gradients), skips inf/NaN steps
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        return loss

    def compute_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss of the model on one batch (override or pass ``loss=`` to change it).

        Overrides call ``self.forward_model``: the model, or its DDP wrapper.
        """
        return self.loss_fn(self.forward_model(x), y)

    def autocast(self):
        """The precision context of the training forward pass (``amp``): a plugin's forward
        computations outside :meth:`update` (truncated BPTT advancing its state) run in it too."""
        if self.amp == "none":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _forward(self, loss_fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        with self.autocast():
            loss = loss_fn()
        if not torch.is_tensor(loss) or loss.numel() != 1:
            raise ConfigError("the loss of a training step must be a scalar tensor")
        return loss

    def _backward(self, loss: torch.Tensor) -> None:
        if self._loss_weight != 1.0:  # an uneven piece of the global batch
            loss = loss * self._loss_weight
        if self.scaler is not None:
            loss = self.scaler.scale(loss)
        if not self._create_graph:
            loss.backward()
            return
        with warnings.catch_warnings():
            # The gradient<->parameter cycle torch warns about is broken by the zero_grad
            # (set_to_none) that starts every update.
            warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")
            loss.backward(create_graph=True)

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        if t.device != self.device:
            if self.device.type == "cuda" and not t.is_pinned():
                t = t.pin_memory()  # page-locked, so the copy can overlap with compute
            t = t.to(self.device, non_blocking=True)
        if self.channels_last and t.ndim == 4 and t.is_floating_point():
            t = t.contiguous(memory_format=torch.channels_last)
        return t

    # ------------------------------------------------------------ evaluation
    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Model outputs for ``x`` in evaluation mode, batched; returned on the CPU."""
        was_training = self.model.training
        self.model.eval()
        try:
            outs = [self.model(chunk.to(self.device)).cpu() for chunk in x.split(self.eval_batch_size)]
        finally:
            self.model.train(was_training)
        return torch.cat(outs) if outs else torch.empty(0)

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor | TensorPair, y: torch.Tensor | None = None) -> dict[str, float]:
        """Mean loss and, for integer class targets, accuracy (argmax over dim 1) on ``(x, y)``.

        Under data parallelism this is a collective (call it on every rank): each rank
        scores its piece with rank 0's model, and the sums are all-reduced.
        """
        if isinstance(x, TensorPair):
            x, y = x.x, x.y
        if y is None or len(x) != len(y):
            raise ShapeError("evaluate needs inputs and targets of the same length")
        was_training = self.model.training
        self.model.eval()
        n = len(x)
        loss_sum = 0.0
        correct = 0
        count = 0
        with distributed.collective_errors(self.world_size > 1):
            if self.world_size > 1:
                distributed.sync_buffers(self.model)  # rank 0's batch-norm averages everywhere
                x = distributed.shard(x, self.rank, self.world_size)
                y = distributed.shard(y, self.rank, self.world_size)
            try:
                for xb, yb in zip(x.split(self.eval_batch_size), y.split(self.eval_batch_size)):
                    xb, yb = self._to_device(xb), self._to_device(yb)
                    out = self.model(xb)
                    loss_sum += float(self.loss_fn(out, yb)) * len(xb)
                    if not yb.is_floating_point():  # class targets; regression has no accuracy
                        correct += int((out.argmax(1) == yb).sum())
                        count += yb.numel()
            finally:
                self.model.train(was_training)
            if self.world_size > 1:
                sums = distributed.all_reduce_sum(torch.tensor([loss_sum, correct, count], dtype=torch.float64))
                loss_sum, correct, count = float(sums[0]), int(sums[1]), int(sums[2])
        result = {"loss": loss_sum / max(n, 1)}
        if count:
            result["accuracy"] = correct / count
        return result

    def _evaluate_all(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        parts = [("val", self.data.val)]
        if self.evaluate_test:
            parts.append(("test", self.data.test))
        parts = [(name, pair) for name, pair in parts if pair is not None and len(pair)]
        if not parts:
            return metrics
        self._call("on_validation_start")
        try:
            for name, pair in parts:
                result = self.evaluate(pair)
                metrics[f"{name}_loss"] = result["loss"]
                if "accuracy" in result:
                    metrics[f"{name}_accuracy"] = result["accuracy"]
        finally:
            self._call("on_validation_end")
        return metrics

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training exactly where it stopped."""
        state: dict[str, Any] = {
            "epoch": self.epoch,
            "epochs": self.epochs,
            "global_step": self.global_step,
            "seed": self.seed,
            "history": self.history,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "callbacks": {
                key: cb.state_dict() for key, cb in self._callback_keys() if hasattr(cb, "state_dict")
            },
        }
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        if torch.cuda.is_available() and self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def _callback_keys(self, saved: dict[str, Any] | None = None) -> list[tuple[str, Any]]:
        """``("BestWeights#0", callback), ...``: each callback's key in a checkpoint, its class
        and its rank among callbacks of that class, so a resumed run whose list of callbacks
        gained or lost one (a logger, say) still gives each its own state. Given a
        checkpoint's ``saved`` callback states with numeric keys (earlier versions keyed them
        by position), the keys are positions."""
        by_position = saved is not None and all(k.isdigit() for k in saved)
        seen: dict[str, int] = {}
        keys = []
        for i, cb in enumerate(self.callbacks):
            name = type(cb).__name__
            keys.append((str(i) if by_position else f"{name}#{seen.get(name, 0)}", cb))
            seen[name] = seen.get(name, 0) + 1
        return keys

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scheduler is not None and "scheduler" in state:
                # A monitored schedule's state does not depend on the run's length.
                if hasattr(self.scheduler, "monitor") or state.get("epochs", self.epochs) == self.epochs:
                    self.scheduler.load_state_dict(state["scheduler"])
                else:
                    self._fast_forward_scheduler(int(state["global_step"]), int(state["epoch"]))
            if self.scaler is not None and "scaler" in state:
                self.scaler.load_state_dict(state["scaler"])
            saved = state["callbacks"]
            for key, cb in self._callback_keys(saved):
                if hasattr(cb, "load_state_dict") and key in saved:
                    cb.load_state_dict(saved[key])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(
                f"the checkpoint does not match this model/optimizer ({type(exc).__name__}: {exc}); "
                "resume with the same config the run was started with"
            ) from None
        self.epoch = int(state["epoch"])
        self.global_step = int(state["global_step"])
        self.history = list(state["history"])
        torch.set_rng_state(state["rng_cpu"])
        if "rng_cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng_cuda"], self.device)
        self._fresh = False

    def _fast_forward_scheduler(self, steps: int, epochs: int) -> None:
        """A run resumed with a different number of epochs: its schedule is the one built
        for the new length, advanced to where training stands (closed-form schedules only
        depend on the step count, so this is exact for them)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
            for _ in range(steps if self.scheduler_interval == "batch" else epochs):
                self.scheduler.step()

    def save_checkpoint(self, path: str | Path) -> None:
        save_state(path, self.state_dict())

    def resume(self, path: str | Path | None = None) -> None:
        """Load the checkpoint at ``path`` (default: the run directory's) to continue training.

        The run directory is made consistent with the checkpoint: the per-epoch log is rewritten
        from the checkpoint's history (a kill between the metrics line of an epoch and its
        checkpoint would otherwise log that epoch twice), and temporary files left by writes
        that a kill interrupted are removed.
        """
        if path is None:
            if self.run_dir is None:
                raise CheckpointError("resume needs a checkpoint path or a run_dir")
            path = self.run_dir / CHECKPOINT
        template = self.state_dict()
        # A callback this run has but the checkpoint lacks (switched on at the resume) starts
        # afresh, one the checkpoint has but this run lacks is ignored; the states both have
        # must have the same structure.
        callbacks, template["callbacks"] = template["callbacks"], None
        state = load_state(path, schema=checkpoint.TRAINING_STATE, template=template)
        saved = state["callbacks"]
        for (key, _), (own_key, _) in zip(self._callback_keys(saved), self._callback_keys()):
            if key in saved and own_key in callbacks:
                checkpoint.check_template(saved[key], callbacks[own_key], path, f"callbacks.{key}")
        self.load_state_dict(state)
        if self.run_dir is not None and self.rank == 0:
            remove_temp_files(self.run_dir, recursive=False)
            atomic_write_text(self.run_dir / METRICS, "".join(json.dumps(h) + "\n" for h in self.history))

    # ------------------------------------------------------------ plumbing
    def _skipped(self, names: list[str]) -> None:
        self.skipped_steps += 1
        logger.warning("skipped a step with non-finite gradients in %s (step %d)", ", ".join(names[:3]), self.global_step + 1)

    def _call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            fn = getattr(cb, hook, None)
            if fn is not None:
                fn(self, *args)

    def _progress(self, total: int, desc: str):
        if self.quiet or self.rank != 0 or not sys.stderr.isatty():
            return None
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, leave=False, unit="batch", dynamic_ncols=True)

    def _report(self, metrics: dict[str, Any]) -> None:
        if self.quiet or self.rank != 0:
            return
        parts = [f"epoch {metrics['epoch']:>3}/{self.epochs}", f"loss {metrics['train_loss']:.4f}"]
        for key in ("val_accuracy", "test_accuracy"):
            if key in metrics:
                parts.append(f"{key.replace('_accuracy', '')} {100 * metrics[key]:.2f}%")
        parts.append(f"{metrics['seconds']:.1f}s ({metrics['images_per_s']:.0f} img/s)")
        first_epoch, started = getattr(self, "_fit_start", (0, time.perf_counter()))
        if self.epoch < self.epochs:
            left = eta_seconds(self.epoch - first_epoch, self.epochs - first_epoch, time.perf_counter() - started)
            parts.append(f"eta {format_duration(left)}")
        print("  ".join(parts), flush=True)
