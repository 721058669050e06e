"""Truncated back-propagation through time, as a ``batch_step`` of the Trainer (sec. 10.2.2).

Full BPTT costs O(tau) memory and one update per sequence (sec. 10.2). Truncated BPTT
cuts a long sequence into chunks of ``chunk_length`` steps; for each chunk it runs the
forward pass from the state the previous chunk ended in, back-propagates through that
chunk only, and takes an optimizer step. The state is carried forward (the forward
computation is the same unfolded graph as without cutting, sec. 10.1) but detached,
so gradients stop at the chunk boundary: dependencies longer than a chunk can still be
*used* but are not *learned* through gradients.

    trainer = Trainer(model, optimizer, data, loss=..., batch_step=TruncatedBPTT(50))

The model. It is called as ``model.forward_chunk(x, state)`` if it has that method,
else ``model(x, state)``, and must return ``(output, state)``: every recurrent module
of ``descend.nn`` does. If the model has ``to_sequence(x)`` (the image classifiers of
``descend.models.rnn_models``), batches are first turned into ``(N, T, F)`` sequences.

The targets decide what a chunk's loss is:
* per-step targets ``y`` of shape ``(N, T, ...)`` (sequence-to-sequence): each chunk
  gets its slice ``y[:, t0:t1]`` and ``loss(output, y_chunk)``, one update per chunk.
* per-sequence targets (sequence-to-one, fig. 10.5): only the last chunk has a loss;
  the earlier chunks just advance the state (without building a graph), so the update
  is the gradient through the last ``chunk_length`` steps only.

Each chunk's update is one ``trainer.update(...)``, the Trainer's one step, so mixed
precision, the gradient scaler, gradient averaging across processes, clipping
(sec. 10.11.1) and the non-finite guard act on every chunk, and optimizers that
re-evaluate the loss get a closure. The state-advancing forward passes of
sequence-to-one chunks run in the Trainer's precision too. The Trainer's schedule and
``global_step`` still count batches, not chunks.

With ``chunk_length >= T`` this is exactly the Trainer's ordinary step (full BPTT).
"""

from __future__ import annotations

import inspect

import torch
from torch import Tensor

from descend.errors import ConfigError, ShapeError


def detach_state(state):
    """The recurrent state with its history cut: a tensor, a tuple of tensors, or None."""
    if state is None:
        return None
    if torch.is_tensor(state):
        return state.detach()
    if isinstance(state, (tuple, list)):
        return type(state)(detach_state(s) for s in state)
    raise ShapeError(f"a recurrent state must be a tensor or a tuple of tensors; got {type(state).__name__}")


class TruncatedBPTT:
    """``batch_step(trainer, x, y) -> loss``: truncated BPTT over chunks of the time axis (dim 1).

    Args:
        chunk_length: time steps per chunk (k1 = k2 = chunk_length in the usual notation:
            an update every chunk_length steps, back-propagating as many steps).

    Returns (for the Trainer's log) the chunk losses averaged with weights proportional
    to the chunk lengths, which is the whole sequence's loss for a loss that averages
    over time steps (the Trainer's default cross-entropy on ``(N, K, T)`` outputs); for
    sequence-to-one targets, the loss of the last chunk.
    """

    def __init__(self, chunk_length: int) -> None:
        if not isinstance(chunk_length, int) or isinstance(chunk_length, bool) or chunk_length < 1:
            raise ConfigError(f"Invalid chunk_length: {chunk_length!r}; it must be an integer >= 1 (time steps per chunk)")
        self.chunk_length = chunk_length

    def __call__(self, trainer, x: Tensor, y: Tensor) -> Tensor:
        model = trainer.model
        to_sequence = getattr(model, "to_sequence", None)
        forward = getattr(model, "forward_chunk", None) or model
        seq = to_sequence(x) if to_sequence is not None else x
        if seq.dim() != 3:
            raise ShapeError(
                f"truncated BPTT needs sequences (batch, time, features); got inputs of shape {tuple(seq.shape)}. "
                "Give the model a to_sequence(x) method to convert its inputs"
            )
        T = seq.shape[1]
        per_step = y.dim() >= 2 and y.shape[1] == T
        state = None
        total, counted = None, 0
        start = 0
        for chunk in seq.split(self.chunk_length, dim=1):
            length = chunk.shape[1]
            last = start + length == T
            if per_step or last:
                target = y[:, start : start + length] if per_step else y
                loss, state = self._update(trainer, forward, chunk, detach_state(state), target)
                weighted = loss.detach() * length
                total = weighted if total is None else total + weighted
                counted += length
            else:  # sequence-to-one: only advance the state; no loss lives in this chunk
                with torch.no_grad(), trainer.autocast():
                    state = _call(forward, chunk, state)[1]
            start += length
        return total / counted

    @staticmethod
    def _update(trainer, forward, chunk: Tensor, state, target: Tensor):
        """One update on one chunk through the Trainer's step; returns (loss, state at the chunk's end).

        A closure optimizer may evaluate the chunk several times; the state handed to the
        next chunk is the one computed at the parameters before the update, as without one.
        """
        first: dict = {}

        def chunk_loss() -> Tensor:
            output, new_state = _call(forward, chunk, state)
            loss = trainer.loss_fn(output, target)
            first.setdefault("state", new_state)
            first.setdefault("loss", loss)
            return loss

        trainer.update(chunk_loss)
        if "loss" not in first:
            raise ConfigError("the optimizer's step(closure) never called the closure")
        return first["loss"], first["state"]


def _call(forward, chunk: Tensor, state):
    try:
        # For a module, check its forward: Module.__call__ itself accepts any arguments.
        target = forward.forward if isinstance(forward, torch.nn.Module) else forward
        inspect.signature(target).bind(chunk, state)
    except TypeError:
        raise ConfigError(
            f"truncated BPTT calls the model as forward(x, state), which {type(forward).__name__} does not accept; "
            "give the model a forward_chunk(x, state) -> (output, state) method"
        ) from None
    result = forward(chunk, state)
    if not (isinstance(result, tuple) and len(result) == 2):
        raise ConfigError(
            "truncated BPTT calls the model as forward(x, state) and needs (output, state) back; "
            f"got {type(result).__name__}. Give the model a forward_chunk(x, state) method"
        )
    return result
