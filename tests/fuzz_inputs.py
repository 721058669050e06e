"""Inputs for fuzzing the config loader and the checkpoint reader.

Plain functions of a ``random.Random``, so the same mutators serve the quick hypothesis
tests (``tests/test_config_fuzz.py``, ``tests/train/test_checkpoint_fuzz.py``, a few
hundred inputs) and long fuzzing runs (a loop over seeds):

    valid_configs()                      -> list of (name, bytes): valid config files
    mutate_config(data, rng)             -> bytes: a mutated config file
    try_config(data, directory, saved)   -> "valid" | "parse" | "check": where it ended
    random_override(rng)                 -> str: a ``--set key=value`` with an odd key or value
    try_overrides(overrides)             -> "valid" | "check"
    small_trainer(epochs)                -> a small Trainer on random data
    valid_checkpoint()                   -> bytes: its checkpoint after training

    mutate_checkpoint(data, rng)         -> bytes: a mutated checkpoint file
    try_checkpoint(data, directory)      -> "valid" | "parse" | "check": where it ended

``try_*`` return "parse" for inputs refused by the first check (the file could not be
decoded: not UTF-8/TOML, not a safetensors file), "check" for inputs refused later
(a key, type, range, digest or skeleton check), "valid" for inputs that loaded; any
exception that is not a ``descend.errors`` exception propagates: that is a bug.
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import math
import pickletools
import random
import struct
import warnings
from pathlib import Path
from collections.abc import Mapping
from typing import Any

import torch

from descend import config as cfg
from descend.errors import DescendError

# ------------------------------------------------------------------ configs
ODD_VALUES: list[Any] = [
    0, -1, 1, 2**27, 2**63 - 1, 2**63, -(2**63) - 1, 10**30, 0.0, -0.5, 1e308, math.inf, -math.inf, math.nan,
    True, "", "x", "nan", "\u00e9\u0000", [], [1, "a"], [10**30], {}, {"name": 3}, {"a": {"b": 1}},
]


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return cfg._toml_value(value)


def valid_configs() -> list[tuple[str, bytes]]:
    """The bundled configs and the full default config as a run saves it."""
    from importlib.resources import files

    out = [(name, files("descend").joinpath(f"configs/{name}.toml").read_bytes()) for name in cfg.bundled()]
    out.append(("saved-default", cfg.to_toml(cfg.load()).encode("utf-8")))
    return out


def mutate_config(data: bytes, rng: random.Random) -> bytes:
    """One to three random edits of a TOML file: keys, values, types, bytes and encodings."""
    for _ in range(rng.randint(1, 2)):
        data = rng.choice(_CONFIG_MUTATIONS)(data, rng)
    return data


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def _pick_assignment(lines: list[bytes], rng: random.Random) -> int | None:
    """The index of a random ``key = value`` line (None if there is none)."""
    hits = [i for i, line in enumerate(lines) if b"=" in line and not line.lstrip().startswith(b"#")]
    return rng.choice(hits) if hits else None


def _set_value(data: bytes, rng: random.Random) -> bytes:
    lines = _lines(data)
    i = _pick_assignment(lines, rng)
    if i is None:
        return data
    key = lines[i].split(b"=", 1)[0]
    lines[i] = key + b"= " + _toml_value(rng.choice(ODD_VALUES)).encode("utf-8")
    return b"\n".join(lines)


def _rename_key(data: bytes, rng: random.Random) -> bytes:
    lines = _lines(data)
    i = _pick_assignment(lines, rng)
    if i is None:
        return data
    key, value = lines[i].split(b"=", 1)
    key = key.strip()
    edits = [key[:-1], key + b"s", key[::-1], b"unknown_" + key, b"a.b", b'"' + key + b' "', b""]
    lines[i] = rng.choice(edits) + b" =" + value
    return b"\n".join(lines)


def _drop_line(data: bytes, rng: random.Random) -> bytes:
    lines = _lines(data)
    del lines[rng.randrange(len(lines))]
    return b"\n".join(lines)


def _duplicate_line(data: bytes, rng: random.Random) -> bytes:
    lines = _lines(data)
    i = rng.randrange(len(lines))
    lines.insert(rng.randrange(len(lines) + 1), lines[i])
    return b"\n".join(lines)


def _add_table(data: bytes, rng: random.Random) -> bytes:
    table = rng.choice([b"data", b"model", b"optimizer", b"schedule", b"train", b"init", b"nope", b"train.sub"])
    key = rng.choice([b"epochs", b"name", b"lr", b"seed", b"limit", b"x"])
    value = _toml_value(rng.choice(ODD_VALUES)).encode("utf-8")
    return data + b"\n[" + table + b"]\n" + key + b" = " + value + b"\n"


def _set_top(data: bytes, rng: random.Random) -> bytes:
    key = rng.choice([b"seed", b"device", b"quiet", b"run_dir", b"model", b"optimizer", b"init", b"data"])
    return key + b" = " + _toml_value(rng.choice(ODD_VALUES + ["cuda:x", "adam", "lsuv"])).encode("utf-8") + b"\n" + data


def _flip_byte(data: bytes, rng: random.Random) -> bytes:
    if not data:
        return data
    b = bytearray(data)
    i = rng.randrange(len(b))
    b[i] ^= 1 << rng.randrange(8)
    return bytes(b)


def _insert_bytes(data: bytes, rng: random.Random) -> bytes:
    i = rng.randrange(len(data) + 1)
    junk = rng.choice([b"\x00", b"\xff\xfe", b"\xc3", b"[[[[[[", b"\"", b"\r", b"= =", bytes(rng.randrange(256) for _ in range(8))])
    return data[:i] + junk + data[i:]


def _truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(len(data) + 1)]


def _encode(data: bytes, rng: random.Random) -> bytes:
    text = data.decode("utf-8", errors="replace") + rng.choice(["", "# caf\u00e9\n", "name_\u00e9 = 1\n"])
    encoding = rng.choice(["utf-16", "utf-16-le", "latin-1", "utf-8-sig", "cp1252", "utf-32"])
    return text.encode(encoding, errors="replace")


def _whole(data: bytes, rng: random.Random) -> bytes:
    return rng.choice([b"", b"\n\n", b"# only a comment\n", b"\x00" * 16, b"\xff" * 4, b"[[a]]\n", b"a = [" * 600,
                       bytes(rng.randrange(256) for _ in range(64))])


# Edits of keys and values (past the TOML parser, into the checks) outweigh byte-level damage.
_CONFIG_MUTATIONS = [_set_value] * 6 + [_rename_key] * 2 + [_set_top] * 2 + [_add_table] * 2 + [
    _drop_line, _duplicate_line, _flip_byte, _insert_bytes, _truncate, _encode, _whole]


OVERRIDE_KEYS = ["seed", "device", "quiet", "data.limit", "data.augment", "train.epochs", "train.batch_size",
                 "train.ema_decay", "optimizer.lr", "optimizer", "model.hidden", "model.dropout", "init", "schedule.x",
                 "data", "train.epochs.x", "a..b", "", "model.name", "init.gain"]
OVERRIDE_VALUES = ["99999999999999999999", "-99999999999999999999", "9223372036854775807", "134217728", "nan", "inf",
                   "-inf", "NaN", "1e999", "0x10", "1_000", "[1, 2", "[[[[[[[[", "[" * 3000, "true", "\"\\u0000\"",
                   "adam", "{a = 1}", "", "3", "0.5", "-1", "\u00e9"]


def random_override(rng: random.Random) -> str:
    """A ``--set key=value`` argument with an odd key or value."""
    return f"{rng.choice(OVERRIDE_KEYS)}={rng.choice(OVERRIDE_VALUES)}"


def try_overrides(overrides: list[str]) -> str:
    """The default config with ``--set`` overrides: "valid" or "check"."""
    try:
        config = cfg.load(overrides=overrides)
    except DescendError:
        return "check"
    assert isinstance(config, cfg.Config)
    return "valid"


def _config_stage(exc: DescendError) -> str:
    text = str(exc)
    first = ("is not valid TOML", "is not UTF-8", "is empty", "cannot read config")
    return "parse" if any(s in text for s in first) else "check"


def try_config(data: bytes, directory: str | Path, saved: bool = False) -> str:
    """Load ``data`` as a config file (``saved``: a run's config.toml, else ``--config``)."""
    path = Path(directory) / "config.toml"
    path.write_bytes(data)
    try:
        config = cfg.load_saved(path) if saved else cfg.load(path)
    except DescendError as exc:
        return _config_stage(exc)
    assert isinstance(config, cfg.Config)
    return "valid"


# ------------------------------------------------------------------ checkpoints
def small_trainer(epochs: int = 2):
    """A small Trainer (MLP with batch norm, SGD with momentum, OneCycleLR, EarlyStopping) on random data."""
    from descend.data import Splits, TensorPair
    from descend.train import EarlyStopping, Trainer

    g = torch.Generator().manual_seed(0)
    pair = TensorPair(torch.randn(48, 1, 4, 4, generator=g), torch.randint(0, 3, (48,), generator=g))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.BatchNorm1d(8),
                                torch.nn.ReLU(), torch.nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=3 * epochs)
    return Trainer(model, opt, Splits(pair, pair), epochs=epochs, batch_size=16, scheduler=sched, quiet=True,
                   callbacks=[EarlyStopping(patience=3)], evaluate_test=False, checkpoint=False)


@functools.lru_cache(maxsize=1)
def _checkpoint_bytes() -> bytes:
    import tempfile

    from descend.train.checkpoint import save_state

    trainer = small_trainer()
    trainer.fit()
    with tempfile.TemporaryDirectory() as d:
        save_state(Path(d) / "checkpoint.safetensors", trainer.state_dict())
        return (Path(d) / "checkpoint.safetensors").read_bytes()


@functools.lru_cache(maxsize=1)
def _template() -> dict[str, Any]:
    return small_trainer().state_dict()


def valid_checkpoint() -> bytes:
    """The bytes of a real Trainer's checkpoint (a small MLP, SGD with momentum, OneCycleLR, EarlyStopping)."""
    return _checkpoint_bytes()


def split_safetensors(data: bytes) -> tuple[dict[str, Any], bytes]:
    """The header (JSON) and the tensor data of a safetensors file."""
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8: 8 + n]), data[8 + n:]


def join_safetensors(header: dict[str, Any], body: bytes) -> bytes:
    text = json.dumps(header).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + body


def resign(data: bytes, meta: str) -> bytes:
    """The checkpoint ``data`` with its skeleton replaced by ``meta`` and a matching digest,
    as a crafted file would be: it passes the digest, so the skeleton checks must catch it."""
    from safetensors.torch import load, save

    from descend.train.checkpoint import DIGEST_KEY, META_KEY, digest

    tensors = load(data)
    return save(tensors, metadata={META_KEY: meta, DIGEST_KEY: digest(tensors, meta)})


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, prefix + (i,))
    return out


def _edit_skeleton(skeleton: Any, rng: random.Random) -> Any:
    """Delete a key, or replace a value (anywhere in the skeleton) by one of another type."""
    paths = [p for p in _paths(skeleton) if p]
    path = rng.choice(paths)
    parent = skeleton
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    odd = rng.choice([None, True, -1, 1.5, 2**64, "3", "x", [], {}, {"__tensor__": "nope"}, {"__tensor__": 5},
                      {"__tuple__": 7}, {"__int__x": 1}, [[[]]], math.nan])
    if isinstance(parent, dict) and rng.random() < 0.3:
        del parent[last]
    elif isinstance(parent, dict) and rng.random() < 0.2:
        parent[rng.choice(["__int__", "__int__1e3", "__int__" + "9" * 30, "__tensor__", "__tuple__"])] = parent.pop(last)
    else:
        parent[last] = odd
    return skeleton


def _mutate_skeleton(data: bytes, rng: random.Random) -> bytes:
    header, _ = split_safetensors(data)
    meta = json.loads(header["__metadata__"]["descend"])
    kind = rng.random()
    if kind < 0.6:
        meta["state"] = _edit_skeleton(meta["state"], rng)
        text = json.dumps(meta)
    elif kind < 0.7:
        meta[rng.choice(["format", "state"])] = rng.choice([None, 1, "descend-checkpoint-1", "descend-checkpoint-9", [], "x"])
        text = json.dumps(meta)
    elif kind < 0.8:
        text = rng.choice(["", "{", "[]", "null", "[" * 5000 + "]" * 5000, '{"format": "descend-checkpoint-2"}'])
    else:
        text = json.dumps(meta)
        i = rng.randrange(len(text))
        text = text[:i] + rng.choice(["", "}", "\"", "0", "NaN", "\\u0000"]) + text[i + 1:]
    if rng.random() < 0.8:
        return resign(data, text)
    header["__metadata__"]["descend"] = text  # not re-signed: the digest must catch it
    return join_safetensors(header, split_safetensors(data)[1])


def _mutate_header(data: bytes, rng: random.Random) -> bytes:
    header, body = split_safetensors(data)
    names = [k for k in header if k != "__metadata__"]
    name = rng.choice(names)
    kind = rng.randrange(7)
    if kind == 0:
        header[name]["dtype"] = rng.choice(["F16", "I64", "U8", "BOOL", "F64", "XX", 3])
    elif kind == 1:
        header[name]["shape"] = rng.choice([[], [0], [1, 1], [2**40], [-1], ["a"], [10**30]])
    elif kind == 2:
        a, b = header[name]["data_offsets"]
        header[name]["data_offsets"] = rng.choice([[b, a], [a, b + 8], [a + 1, b], [0, len(body) + 1], [a, "x"]])
    elif kind == 3:
        del header[name]
    elif kind == 4:
        header["__metadata__"] = rng.choice([{}, {"descend_sha256": "0" * 64}, None, {"descend": 3},
                                             {**header["__metadata__"], "extra": "1"}])
    elif kind == 5:
        header[name + "_copy"] = dict(header[name])
    else:
        header = rng.choice([[], {}, None, "x"])
    raw = join_safetensors(header, body) if isinstance(header, dict) else (
        struct.pack("<Q", len(json.dumps(header))) + json.dumps(header).encode() + body)
    return raw


def _mutate_length(data: bytes, rng: random.Random) -> bytes:
    n = struct.unpack("<Q", data[:8])[0]
    new = rng.choice([0, 1, n - 1, n + 1, n + 8, len(data), len(data) + 1, 2**63, 2**64 - 1, 100_000_000])
    return struct.pack("<Q", new) + data[8:]


def _flip_tensor_byte(data: bytes, rng: random.Random) -> bytes:
    n = struct.unpack("<Q", data[:8])[0]
    b = bytearray(data)
    i = rng.randrange(8 + n, len(b))
    b[i] ^= 1 << rng.randrange(8)
    return bytes(b)


def _flip_any_byte(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    i = rng.randrange(len(b))
    b[i] ^= 1 << rng.randrange(8)
    return bytes(b)


def _truncate_file(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.choice([0, 4, 8, 9, rng.randrange(len(data)), len(data) - 1])]


def _append(data: bytes, rng: random.Random) -> bytes:
    return data + rng.choice([b"\x00", b"junk", bytes(64)])


_CHECKPOINT_MUTATIONS = [_mutate_skeleton, _mutate_skeleton, _mutate_skeleton, _mutate_header, _mutate_length,
                         _flip_tensor_byte, _flip_any_byte, _truncate_file, _append]


def mutate_checkpoint(data: bytes, rng: random.Random) -> bytes:
    """One random edit of a checkpoint file: header length, header JSON, skeleton (re-signed or
    not), metadata, tensor bytes, truncation or trailing bytes."""
    return rng.choice(_CHECKPOINT_MUTATIONS)(data, rng)


def try_checkpoint(data: bytes, directory: str | Path) -> str:
    """Load ``data`` as a Trainer checkpoint (digest, skeleton, TRAINING_STATE and template checks)."""
    from descend.train.checkpoint import TRAINING_STATE, load_state

    path = Path(directory) / "checkpoint.safetensors"
    path.write_bytes(data)
    try:
        state = load_state(path, schema=TRAINING_STATE, template=_template())
    except DescendError as exc:
        return "parse" if "not a readable safetensors" in str(exc) else "check"
    assert isinstance(state, dict)
    return "valid"


# ------------------------------------------------------------------ first checks
def idx_header_ok(data: bytes) -> bool:
    """Whether ``data`` passes the IDX reader's first check: gzip framing and the header."""
    from descend.data.idx import read_idx_header

    try:
        read_idx_header(io.BytesIO(data))
        return True
    except DescendError:
        return False


def pickle_opcodes_ok(data: bytes) -> bool:
    """Whether ``data`` (gzip-compressed or not) is a well-formed pickle opcode stream: the
    first check a fuzzed pickle must pass before the unpickler's own checks see it."""
    try:
        raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in pickletools.genops(raw):
                pass
        return True
    except Exception:
        return False


def check_most_get_past_the_parser(outcomes: Mapping[str, int], label: str) -> None:
    """After a fuzz test counted its ``outcomes`` (``check``: refused past the parser's first
    check; ``valid``: loaded), assert that most damaged inputs got past the first check, so the
    fuzzing exercised the deeper checks; nothing to say if the fuzz test did not run."""
    total = sum(outcomes.values())
    if total < 50:  # the fuzz test did not run (deselected)
        return
    past = (outcomes["check"] + outcomes["valid"]) / total
    print(f"\n{label} fuzz: {dict(outcomes)}; past the first check: {past:.0%}")
    assert past > 0.3
