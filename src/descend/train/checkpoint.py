"""Checkpoints: safetensors for tensors, JSON for everything else, nothing pickled.

A training state is a nested structure of dicts, lists, tuples, numbers, strings and
tensors (a model's ``state_dict``, an optimizer's, a scheduler's, RNG states, callback
states). :func:`flatten` splits it into a flat ``{key: tensor}`` dict, stored with
safetensors, and a JSON skeleton in which each tensor is replaced by
``{"__tensor__": key}``; :func:`unflatten` puts them back together exactly
(tuples survive as ``{"__tuple__": [...]}``, non-finite floats as JSON's NaN/Infinity).

The whole checkpoint is one ``.safetensors`` file whose header metadata holds the JSON
skeleton, written to a temporary name and renamed into place: a crash leaves the
previous checkpoint intact. A copy of the metadata is written beside it as
``.json`` for people and tools to read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from descend.errors import CheckpointError
from descend.io import atomic_path, atomic_write_json

FORMAT = "descend-checkpoint-1"


def flatten(obj: Any, tensors: dict[str, torch.Tensor], prefix: str = "") -> Any:
    """Replace every tensor in ``obj`` by a reference, collecting the tensors in ``tensors``."""
    if isinstance(obj, torch.Tensor):
        key = prefix or "tensor"
        # safetensors wants contiguous tensors that share no storage (tied weights do).
        tensors[key] = obj.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise CheckpointError(f"cannot checkpoint a dict key of type {type(k).__name__} at {prefix!r}")
            # JSON keys are strings: remember integer keys (optimizer state is keyed by int).
            out[f"__int__{k}" if isinstance(k, int) else k] = flatten(v, tensors, f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(obj, (list, tuple)):
        items = [flatten(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise CheckpointError(
        f"cannot checkpoint a value of type {type(obj).__name__} at {prefix!r}; "
        "state must be tensors, numbers, strings, lists, tuples and dicts"
    )


def unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten`."""
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            try:
                return tensors[obj["__tensor__"]]
            except KeyError:
                raise CheckpointError(f"checkpoint is missing tensor {obj['__tensor__']!r}") from None
        if set(obj) == {"__tuple__"}:
            return tuple(unflatten(v, tensors) for v in obj["__tuple__"])
        return {
            (int(k[7:]) if k.startswith("__int__") else k): unflatten(v, tensors) for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [unflatten(v, tensors) for v in obj]
    return obj


def save_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` as one safetensors file (+ a readable ``.json`` twin), atomically."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = flatten(state, tensors)
    meta = json.dumps({"format": FORMAT, "state": skeleton})
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"descend": meta})
    atomic_write_json(path.with_suffix(".json"), {"format": FORMAT, "state": skeleton})


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_state`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; train first (descend train) or check the run directory")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = (f.metadata() or {}).get("descend")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint ({exc}); it may be truncated") from None
    if meta is None:
        raise CheckpointError(f"{path} is a safetensors file but not a descend checkpoint (no 'descend' metadata)")
    skeleton = json.loads(meta)
    if skeleton.get("format") != FORMAT:
        raise CheckpointError(f"{path} has checkpoint format {skeleton.get('format')!r}; this descend reads {FORMAT!r}")
    return unflatten(skeleton["state"], tensors)


def save_weights(path: str | os.PathLike, model: torch.nn.Module, metadata: dict[str, Any] | None = None) -> None:
    """Save a model's ``state_dict`` alone (for evaluate/predict), atomically."""
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"descend": json.dumps(metadata or {})})


def load_weights(path: str | os.PathLike, model: torch.nn.Module) -> None:
    """Load weights saved by :func:`save_weights` into ``model``; a mismatch is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no weights at {path}; is this a finished descend run directory?")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from None
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:
        raise CheckpointError(
            f"the weights in {path} do not fit the model built from the run's config: {exc}"
        ) from None
