"""Checkpoints: safetensors for tensors, JSON for everything else, nothing pickled.

A training state is a nested structure of dicts, lists, tuples, numbers, strings and
tensors (a model's ``state_dict``, an optimizer's, a scheduler's, RNG states, callback
states). :func:`flatten` splits it into a flat ``{key: tensor}`` dict, stored with
safetensors, and a JSON skeleton in which each tensor is replaced by
``{"__tensor__": key}``; :func:`unflatten` puts them back together exactly
(tuples survive as ``{"__tuple__": [...]}``, non-finite floats as JSON's NaN/Infinity).

The whole checkpoint is one ``.safetensors`` file. Its header metadata holds the JSON
skeleton (``"descend"``) and a SHA-256 digest (``"descend_sha256"``) of the skeleton
and of every tensor's name, dtype, shape and bytes; file and digest are written
together, to a temporary name renamed into place (``descend.io``), so a crash leaves
the previous checkpoint intact and no kill can separate a checkpoint from its digest.
A copy of the metadata is written beside it as ``.json`` for people and tools to read.

Loading trusts nothing in the file: a digest that does not match (flipped bits, a
truncated or edited file) and a skeleton of the wrong shape are CheckpointErrors naming
the file and the key. :func:`load_state` with ``schema=TRAINING_STATE`` also checks the
keys and types the Trainer reads (``epoch`` and ``global_step`` non-negative integers,
...), and with ``template=trainer.state_dict()`` the structure below them.

Checkpoints of the first format (``descend-checkpoint-1``) predate digests: they are
accepted after the same structural checks, with a warning, so older runs still resume
(their next checkpoint carries a digest). A file of the current format without a
digest has been altered and is refused. Weights files (:func:`save_weights`) carry the
same digest; weights files without one (older versions) load as before.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import struct
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from descend.errors import CheckpointError
from descend.io import atomic_write_bytes, atomic_write_json

FORMAT = "descend-checkpoint-2"
OLD_FORMATS = ("descend-checkpoint-1",)  # before digests: accepted after the structural checks
META_KEY = "descend"  # safetensors metadata: the JSON skeleton (checkpoints) or the caller's metadata (weights)
DIGEST_KEY = "descend_sha256"  # safetensors metadata: digest(tensors, metadata[META_KEY])

logger = logging.getLogger(__name__)


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


_INT_KEY = re.compile(r"-?[0-9]{1,20}")


def unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten`; a malformed skeleton is a CheckpointError naming the place."""
    try:
        return _unflatten(obj, tensors, "state")
    except RecursionError:
        raise CheckpointError("the checkpoint's skeleton is nested too deeply to be one descend writes") from None


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            key = obj["__tensor__"]
            if not isinstance(key, str) or key not in tensors:
                raise CheckpointError(f"checkpoint is missing tensor {key!r} (at {where})")
            return tensors[key]
        if set(obj) == {"__tuple__"}:
            if not isinstance(obj["__tuple__"], list):
                raise CheckpointError(f"checkpoint key {where!r}: a tuple must be stored as a list, got {obj['__tuple__']!r:.60}")
            return tuple(_unflatten(v, tensors, f"{where}.{i}") for i, v in enumerate(obj["__tuple__"]))
        out = {}
        for k, v in obj.items():
            if k.startswith("__int__"):
                if not _INT_KEY.fullmatch(k[7:]):
                    raise CheckpointError(f"checkpoint key {where}.{k!r} is not an integer key")
                k = int(k[7:])
            out[k] = _unflatten(v, tensors, f"{where}.{k}")
        return out
    if isinstance(obj, list):
        return [_unflatten(v, tensors, f"{where}.{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise CheckpointError(f"checkpoint key {where!r} holds a {type(obj).__name__}")  # pragma: no cover (not JSON)


# ------------------------------------------------------------------ integrity
def digest(tensors: dict[str, torch.Tensor], metadata: str) -> str:
    """SHA-256 (hex) of ``metadata`` and of each tensor's name, dtype, shape and bytes, in name order.

    Independent of how safetensors lays the tensors out in the file; every field is
    length-prefixed or fixed by the one before it, so two different contents never
    hash the same byte stream.
    """
    h = hashlib.sha256()
    text = metadata.encode("utf-8")
    h.update(struct.pack("<Q", len(text)) + text)
    for name in sorted(tensors):
        t = tensors[name]
        head = json.dumps([name, str(t.dtype).removeprefix("torch."), list(t.shape)]).encode("utf-8")
        h.update(struct.pack("<Q", len(head)) + head)
        h.update(t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def _read(path: Path, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and the header metadata of a safetensors file; any failure is a CheckpointError."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}; check that the file is readable") from None
    except (SafetensorError, ValueError, TypeError, RuntimeError, OverflowError, MemoryError) as exc:
        raise CheckpointError(
            f"{path} is not a readable safetensors {what} ({exc}); it may be truncated or damaged"
        ) from None
    return tensors, metadata


def _verify(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str], what: str) -> None:
    stored = metadata[DIGEST_KEY]
    actual = digest(tensors, metadata.get(META_KEY, ""))
    if stored != actual:
        raise CheckpointError(
            f"{path} is corrupted: tensor data does not match its digest (SHA-256 of the tensors and the "
            f"metadata, stored {stored[:16]!r}..., computed {actual[:16]}...); the file changed after it was "
            f"written (disk or copy error, or an edit): {what}"
        )


def _parse_json(text: str, path: Path, key: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path}: the {key!r} metadata is not valid JSON ({exc})") from None


# ------------------------------------------------------------------ schema
COUNT = "a non-negative integer below 2**63"

# The keys of a Trainer's state_dict: key -> (type, required). Checked by
# load_state(path, schema=TRAINING_STATE) before the Trainer reads them.
TRAINING_STATE: dict[str, tuple[Any, bool]] = {
    "epoch": (COUNT, True),
    "epochs": (COUNT, True),
    "global_step": (COUNT, True),
    "seed": (int, True),
    "history": (list, True),
    "model": (dict, True),
    "optimizer": (dict, True),
    "rng_cpu": (torch.Tensor, True),
    "callbacks": (dict, True),
    "scheduler": (dict, False),
    "scaler": (dict, False),
    "rng_cuda": (torch.Tensor, False),
}


def _describe(kind: Any) -> str:
    if kind == COUNT:
        return COUNT
    return {int: "an integer", list: "a list", dict: "a table (dict)", torch.Tensor: "a tensor"}.get(kind, str(kind))


def _is_leaf(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_is_leaf(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str, torch.Tensor))


def check_state(state: Any, schema: dict[str, tuple[Any, bool]], path: str | os.PathLike = "checkpoint") -> None:
    """Check ``state`` against ``schema`` (``key -> (type, required)``); a CheckpointError names the key.

    For :data:`TRAINING_STATE` it also checks what the Trainer hands to PyTorch: the
    model's entries are tensors, the optimizer's per-parameter states are tables of
    tensors, numbers and flags, its ``param_groups`` are tables whose ``params`` are
    integer lists, the RNG states are byte tensors (the CPU one of the
    size ``torch.get_rng_state()`` has), ``history`` is a list of tables.
    """
    def bad(key: str, kind: str, value: Any) -> CheckpointError:
        shown = f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}" if isinstance(value, torch.Tensor) \
            else f"{value!r:.80}"
        return CheckpointError(
            f"{path}: checkpoint key {key!r} must be {kind}, got {shown}; the checkpoint was edited or not "
            "written by descend: delete it to start the run over"
        )

    if not isinstance(state, dict):
        raise bad("state", "a table (dict)", state)
    for key, (kind, required) in schema.items():
        if key not in state:
            if required:
                raise CheckpointError(
                    f"{path}: checkpoint key {key!r} is missing; the checkpoint was edited or not written by "
                    "descend: delete it to start the run over"
                )
            continue
        value = state[key]
        if kind == COUNT:
            if not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63):
                raise bad(key, COUNT, value)
        elif kind is int:
            if not isinstance(value, int) or isinstance(value, bool):
                raise bad(key, "an integer", value)
        elif not isinstance(value, kind):
            raise bad(key, _describe(kind), value)
    if schema is not TRAINING_STATE:
        return
    for key, value in state["model"].items():
        if not isinstance(value, torch.Tensor) and not str(key).endswith("_extra_state"):
            raise bad(f"model.{key}", "a tensor", value)
    optimizer = state["optimizer"]
    if not isinstance(optimizer.get("state"), dict):
        raise bad("optimizer.state", "a table (dict)", optimizer.get("state"))
    for index, entry in optimizer["state"].items():
        if not isinstance(entry, dict):
            raise bad(f"optimizer.state.{index}", "a table (the state of one parameter)", entry)
        for key, value in entry.items():
            if not _is_leaf(value):
                raise bad(f"optimizer.state.{index}.{key}", "a tensor, number, flag or a list of them", value)
    groups = optimizer.get("param_groups")
    if not isinstance(groups, list):
        raise bad("optimizer.param_groups", "a list", groups)
    for i, group in enumerate(groups):
        if not isinstance(group, dict):
            raise bad(f"optimizer.param_groups.{i}", "a table (dict)", group)
        params = group.get("params")
        if not isinstance(params, list) or not all(isinstance(p, int) and not isinstance(p, bool) for p in params):
            raise bad(f"optimizer.param_groups.{i}.params", "a list of integers", params)
    for i, record in enumerate(state["history"]):
        if not isinstance(record, dict):
            raise bad(f"history.{i}", "a table (dict)", record)
    for key in ("scheduler", "scaler"):
        if key in state and not all(isinstance(k, str) for k in state[key]):
            raise bad(key, "a table with string keys", state[key])
    cpu_size = torch.get_rng_state().numel()
    for key in ("rng_cpu", "rng_cuda"):
        value = state.get(key)
        if value is not None and (value.dtype != torch.uint8 or value.dim() != 1
                                  or key == "rng_cpu" and value.numel() != cpu_size):
            raise bad(key, "a byte tensor (a torch RNG state)" + (f" of {cpu_size} bytes" if key == "rng_cpu" else ""),
                      value)


def _kind(value: Any) -> str | None:
    """The kind a template value asks for (None: anything)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, torch.Tensor):
        return "a tensor"
    if isinstance(value, (list, tuple)):
        return "a list"
    return "a table (dict)" if isinstance(value, dict) else None


def _is(value: Any, kind: str) -> bool:
    return {
        "true or false": lambda v: isinstance(v, bool),
        "a number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "a string": lambda v: isinstance(v, str),
        "a tensor": lambda v: isinstance(v, torch.Tensor),
        "a list": lambda v: isinstance(v, (list, tuple)),
        "a table (dict)": lambda v: isinstance(v, dict),
    }[kind](value)


def check_template(state: Any, template: Any, path: str | os.PathLike = "checkpoint", where: str = "") -> None:
    """Check that ``state`` has the structure of ``template`` (e.g. the state_dict of the Trainer
    about to load it): the template's keys, and values of the same kinds (numbers, strings,
    booleans, tensors, lists, tables); lists are compared item by item as far as both go.

    A template value of None accepts anything; keys whose template value is a flag (a
    boolean or None) may be missing, as optimizers fill those in with their defaults.
    """
    kind = _kind(template)
    if kind is None:
        return
    if not _is(state, kind):
        shown = f"a tensor of shape {tuple(state.shape)}" if isinstance(state, torch.Tensor) else f"{state!r:.80}"
        raise CheckpointError(
            f"{path}: checkpoint key {where or 'state'!r} must be {kind} (as in the state it is loaded into), "
            f"got {shown}; the checkpoint was edited or comes from another configuration"
        )
    if isinstance(template, dict):
        for key, value in template.items():
            if key in state:
                check_template(state[key], value, path, f"{where}.{key}" if where else str(key))
            elif value is not None and not isinstance(value, bool):
                raise CheckpointError(
                    f"{path}: checkpoint key {f'{where}.{key}' if where else key!r} is missing (the state it is "
                    "loaded into has it); the checkpoint was edited or comes from another configuration"
                )
    elif isinstance(template, (list, tuple)):
        for i, (item, value) in enumerate(zip(state, template)):
            check_template(item, value, path, f"{where}.{i}")


# ------------------------------------------------------------------ files
def save_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` as one safetensors file with its digest (+ a readable ``.json`` twin), atomically."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = flatten(state, tensors)
    meta = json.dumps({"format": FORMAT, "state": skeleton})
    atomic_write_bytes(path, save(tensors, metadata={META_KEY: meta, DIGEST_KEY: digest(tensors, meta)}))
    atomic_write_json(path.with_suffix(".json"), {"format": FORMAT, "state": skeleton})


def load_state(path: str | os.PathLike, schema: dict[str, tuple[Any, bool]] | None = None,
               template: Any = None) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_state`, verifying its digest and skeleton.

    ``schema`` (e.g. :data:`TRAINING_STATE`) also checks the top-level keys and types;
    ``template`` (e.g. the ``state_dict()`` of the Trainer that will load it) the
    structure below them (:func:`check_template`).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; train first (descend train) or check the run directory")
    tensors, metadata = _read(path, "checkpoint")
    if META_KEY not in metadata:
        raise CheckpointError(f"{path} is a safetensors file but not a descend checkpoint (no 'descend' metadata)")
    unknown = sorted(set(metadata) - {META_KEY, DIGEST_KEY})
    if unknown:
        raise CheckpointError(
            f"{path} has metadata keys descend does not write ({', '.join(map(repr, unknown))}); "
            "it is damaged or not a descend checkpoint"
        )
    redo = "restore an earlier copy of it, or delete it to start the run over"
    if DIGEST_KEY in metadata:
        _verify(path, tensors, metadata, redo)
    skeleton = _parse_json(metadata[META_KEY], path, META_KEY)
    if not isinstance(skeleton, dict) or "format" not in skeleton or "state" not in skeleton:
        raise CheckpointError(f"{path}: the checkpoint metadata must be a table with 'format' and 'state' keys")
    version = skeleton["format"]
    if version == FORMAT and DIGEST_KEY not in metadata:
        raise CheckpointError(f"{path} has no digest although its format ({FORMAT!r}) has one: it was altered; {redo}")
    if version in OLD_FORMATS:
        logger.warning("%s was written before checkpoints carried a digest; loading it after checking its structure", path)
    elif version != FORMAT:
        raise CheckpointError(f"{path} has checkpoint format {version!r:.60}; this descend reads {FORMAT!r}")
    if not isinstance(skeleton["state"], dict):
        raise CheckpointError(f"{path}: the checkpoint's 'state' must be a table, got {skeleton['state']!r:.60}")
    try:
        state = unflatten(skeleton["state"], tensors)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    if schema is not None:
        check_state(state, schema, path)
    if template is not None:
        check_template(state, template, path)
    return state


def save_weights(path: str | os.PathLike, model: torch.nn.Module, metadata: dict[str, Any] | None = None) -> None:
    """Save a model's ``state_dict`` alone (for evaluate/predict) with its digest, atomically."""
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    meta = json.dumps(metadata or {})
    atomic_write_bytes(path, save(tensors, metadata={META_KEY: meta, DIGEST_KEY: digest(tensors, meta)}))


def load_weights(path: str | os.PathLike, model: torch.nn.Module) -> None:
    """Load weights saved by :func:`save_weights` into ``model``; a mismatch is a CheckpointError.

    The digest is verified when the file has one; weights files of older versions
    (no digest) and plain safetensors files of a matching ``state_dict`` load as they are.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no weights at {path}; is this a finished descend run directory?")
    tensors, metadata = _read(path, "weights file")
    unknown = sorted(k for k in metadata if k not in (META_KEY, DIGEST_KEY))
    if (META_KEY in metadata or DIGEST_KEY in metadata) and unknown:  # a file descend wrote, edited
        raise CheckpointError(f"{path} has metadata keys descend does not write ({', '.join(map(repr, unknown))}); "
                              "it is damaged")
    if DIGEST_KEY in metadata:
        _verify(path, tensors, metadata, "restore an earlier copy of it, or train the run again (descend train)")
    if META_KEY in metadata and not isinstance(_parse_json(metadata[META_KEY], path, META_KEY), dict):
        raise CheckpointError(f"{path}: the 'descend' metadata of a weights file must be a JSON table")
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:
        raise CheckpointError(
            f"the weights in {path} do not fit the model built from the run's config: {exc}"
        ) from None
