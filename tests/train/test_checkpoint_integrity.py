"""Checkpoint and weights files: digests, old formats and the checks of the skeleton."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import struct

import pytest
import torch
from safetensors.torch import save_file

import fuzz_inputs as fi
from descend.errors import CheckpointError
from descend.train import checkpoint
from descend.train.checkpoint import (
    DIGEST_KEY, FORMAT, META_KEY, TRAINING_STATE, check_template, digest, flatten, load_state, load_weights,
    save_state, save_weights,
)


def data_start(raw: bytes) -> int:
    return 8 + struct.unpack("<Q", raw[:8])[0]


def flipped(raw: bytes, i: int, bit: int) -> bytes:
    b = bytearray(raw)
    b[i] ^= 1 << bit
    return bytes(b)


def test_the_digest_is_sha256_of_the_documented_byte_stream():
    """Transcription of the docstring: length-prefixed metadata, then per tensor in name order a
    length-prefixed JSON [name, dtype, shape] and the raw bytes."""
    tensors = {"b": torch.tensor([1.5, -2.0]), "a": torch.tensor([[1, 2], [3, 4]], dtype=torch.int64)}
    h = hashlib.sha256()
    h.update(struct.pack("<Q", 2) + b"{}")
    for name, dtype, t in (("a", "int64", tensors["a"]), ("b", "float32", tensors["b"])):
        head = json.dumps([name, dtype, list(t.shape)]).encode()
        h.update(struct.pack("<Q", len(head)) + head + t.numpy().tobytes())
    assert digest(tensors, "{}") == h.hexdigest()


def test_the_digest_sees_names_dtypes_shapes_and_bytes_but_not_order():
    x = torch.arange(6, dtype=torch.float32)
    base = digest({"x": x.reshape(2, 3), "y": torch.ones(1)}, "m")
    assert digest({"y": torch.ones(1), "x": x.reshape(2, 3)}, "m") == base
    others = [
        digest({"x": x.reshape(3, 2), "y": torch.ones(1)}, "m"),
        digest({"x": x.reshape(2, 3).view(torch.int32), "y": torch.ones(1)}, "m"),  # same bytes, other dtype
        digest({"z": x.reshape(2, 3), "y": torch.ones(1)}, "m"),
        digest({"x": x.reshape(2, 3), "y": torch.ones(1)}, "n"),
        digest({"x": x.reshape(2, 3), "y": torch.full((1,), 1.0 + 2**-23)}, "m"),
    ]
    assert len(set(others + [base])) == len(others) + 1
    assert digest({"e": torch.zeros(0, 3), "s": torch.tensor(True), "h": torch.ones(2, dtype=torch.bfloat16)}, "")


@pytest.mark.parametrize("writer", ["state", "weights"])
def test_every_flipped_bit_in_the_tensor_data_is_caught(tmp_path, writer):
    path = tmp_path / "c.safetensors"
    model = torch.nn.Linear(2, 2)
    if writer == "state":
        save_state(path, {"w": torch.arange(6, dtype=torch.float32), "n": torch.tensor([7], dtype=torch.int64)})
    else:
        save_weights(path, model, {"epoch": 3})
    raw = path.read_bytes()
    rng = random.Random(0)
    for i in range(data_start(raw), len(raw)):
        path.write_bytes(flipped(raw, i, rng.randrange(8)))
        with pytest.raises(CheckpointError, match="corrupted: tensor data does not match its digest") as info:
            load_state(path) if writer == "state" else load_weights(path, model)
        assert str(path) in str(info.value)


@pytest.mark.parametrize("writer", ["state", "weights"])
def test_every_flipped_byte_of_the_header_is_caught(tmp_path, writer):
    path = tmp_path / "c.safetensors"
    model = torch.nn.Linear(2, 2)
    if writer == "state":
        save_state(path, {"epoch": 3, "w": torch.ones(2), "t": (1, "a")})
    else:
        save_weights(path, model, {"epoch": 3})
    raw = path.read_bytes()
    rng = random.Random(1)
    for i in range(data_start(raw)):
        path.write_bytes(flipped(raw, i, rng.randrange(8)))
        with pytest.raises(CheckpointError):
            load_state(path) if writer == "state" else load_weights(path, model)


def write_format_1(path, state):
    """A checkpoint as descend wrote it before digests (the old save_state, verbatim)."""
    tensors = {}
    skeleton = flatten(state, tensors)
    save_file(tensors, str(path), metadata={"descend": json.dumps({"format": "descend-checkpoint-1", "state": skeleton})})


def test_old_checkpoints_without_a_digest_load_with_a_warning(tmp_path, caplog):
    path = tmp_path / "old.safetensors"
    write_format_1(path, {"epoch": 2, "w": torch.arange(3.0), "opt": {0: {"step": 5}}})
    with caplog.at_level(logging.WARNING, logger="descend.train.checkpoint"):
        state = load_state(path)
    assert torch.equal(state["w"], torch.arange(3.0)) and state["opt"] == {0: {"step": 5}} and state["epoch"] == 2
    assert "before checkpoints carried a digest" in caplog.text
    write_format_1(path, {"epoch": "2"})
    with pytest.raises(CheckpointError, match="'epoch' must be a non-negative integer"):
        load_state(path, schema={"epoch": (checkpoint.COUNT, True)})


def test_a_current_checkpoint_stripped_of_its_digest_is_refused(tmp_path):
    path = tmp_path / "c.safetensors"
    tensors = {"w": torch.ones(2)}
    meta = json.dumps({"format": FORMAT, "state": flatten({"w": torch.ones(2)}, {})})
    save_file(tensors, str(path), metadata={META_KEY: meta})
    with pytest.raises(CheckpointError, match="no digest"):
        load_state(path)
    save_file(tensors, str(path), metadata={META_KEY: meta, DIGEST_KEY: digest(tensors, meta), "descend_sha25": "x"})
    with pytest.raises(CheckpointError, match="metadata keys descend does not write"):
        load_state(path)


def trainer_state() -> dict:
    trainer = fi.small_trainer()
    trainer.fit()
    return trainer.state_dict()


def test_a_real_trainer_state_passes_the_schema_and_its_own_template(tmp_path):
    state = trainer_state()
    save_state(tmp_path / "c.safetensors", state)
    back = load_state(tmp_path / "c.safetensors", schema=TRAINING_STATE, template=fi.small_trainer().state_dict())
    assert back["epoch"] == 2 and back["global_step"] == 6 and torch.equal(back["rng_cpu"], state["rng_cpu"])
    resumed = fi.small_trainer(epochs=3)
    resumed.load_state_dict(back)
    assert resumed.epoch == 2


def crafted(tmp_path, edit) -> str:
    """Edit a real checkpoint's skeleton and re-sign it (a valid digest); return the CheckpointError text."""
    raw = fi.valid_checkpoint()
    header, _ = fi.split_safetensors(raw)
    meta = json.loads(header["__metadata__"][META_KEY])
    edit(meta["state"])
    path = tmp_path / "checkpoint.safetensors"
    path.write_bytes(fi.resign(raw, json.dumps(meta)))
    with pytest.raises(CheckpointError) as info:
        load_state(path, schema=TRAINING_STATE, template=fi.small_trainer().state_dict())
    assert str(path) in str(info.value)
    return str(info.value)


def setter(key, value):
    def edit(state):
        state[key] = value
    return edit


@pytest.mark.parametrize("key, value", [
    ("epoch", "3"), ("epoch", -1), ("epoch", 1.5), ("epoch", True), ("epoch", None), ("global_step", 2**63),
    ("epochs", [2]), ("seed", 0.5), ("history", {"a": 1}), ("history", [1, 2]), ("model", []),
    ("optimizer", 3), ("callbacks", "x"), ("rng_cpu", 5), ("scheduler", [1]),
])
def test_crafted_values_name_the_key(tmp_path, key, value):
    message = crafted(tmp_path, setter(key, value))
    assert f"checkpoint key '{key}" in message and "must be" in message


@pytest.mark.parametrize("key", ["epoch", "epochs", "global_step", "seed", "history", "model", "optimizer",
                                 "rng_cpu", "callbacks"])
def test_a_missing_key_is_named(tmp_path, key):
    assert f"checkpoint key {key!r} is missing" in crafted(tmp_path, lambda s: s.pop(key))


def test_crafted_nested_values_name_their_place(tmp_path):
    def small_rng(s):
        s["rng_cpu"] = {"__tensor__": "model.1.bias"}  # a float tensor where the RNG's bytes belong
    assert "'rng_cpu' must be a byte tensor" in crafted(tmp_path, small_rng)

    def bad_group(s):
        s["optimizer"]["param_groups"][0]["params"] = ["a"]
    assert "'optimizer.param_groups.0.params' must be a list of integers" in crafted(tmp_path, bad_group)

    def param_state(s):
        s["optimizer"]["state"]["__int__0"] = 1.5
    assert "'optimizer.state.0' must be a table" in crafted(tmp_path, param_state)

    def scheduler_type(s):
        s["scheduler"]["total_steps"] = "six"
    assert "'scheduler.total_steps' must be a number" in crafted(tmp_path, scheduler_type)

    def missing_group_key(s):
        del s["optimizer"]["param_groups"][0]["lr"]
    assert "'optimizer.param_groups.0.lr' is missing" in crafted(tmp_path, missing_group_key)

    keys = []

    def callback(s):
        keys.append(next(iter(s["callbacks"])))  # a callback's state, keyed by its class and rank
        s["callbacks"][keys[0]] = 0.5
    message = crafted(tmp_path, callback)
    assert "#" in keys[0] and f"'callbacks.{keys[0]}' must be a table" in message

    def dangling(s):
        s["model"]["1.weight"] = {"__tensor__": "nope"}
    assert "missing tensor 'nope'" in crafted(tmp_path, dangling)

    def int_key(s):
        s["optimizer"]["state"]["__int__1e3"] = s["optimizer"]["state"].pop("__int__0")
    assert "is not an integer key" in crafted(tmp_path, int_key)

    def tuple_(s):
        s["model"]["x"] = {"__tuple__": 3}
    assert "a tuple must be stored as a list" in crafted(tmp_path, tuple_)


def test_flags_may_be_missing_from_the_template_but_not_numbers():
    template = {"lr": 0.1, "nesterov": False, "foreach": None, "w": torch.ones(1)}
    check_template({"lr": 0.2, "w": torch.zeros(2)}, template)
    with pytest.raises(CheckpointError, match="'w' must be a tensor"):
        check_template({"lr": 0.2, "w": 1.0}, template)
    with pytest.raises(CheckpointError, match="'lr' is missing"):
        check_template({"w": torch.zeros(2)}, template)


@pytest.mark.parametrize("meta", ["", "{", "[]", '{"format": "descend-checkpoint-2"}', "[" * 100_000,
                                  '{"format": "descend-checkpoint-7", "state": {}}',
                                  '{"format": "descend-checkpoint-2", "state": []}'])
def test_malformed_metadata_is_a_checkpoint_error(tmp_path, meta):
    path = tmp_path / "c.safetensors"
    path.write_bytes(fi.resign(fi.valid_checkpoint(), meta))
    with pytest.raises(CheckpointError):
        load_state(path)


def test_weights_of_older_versions_and_plain_files_still_load(tmp_path):
    model = torch.nn.Linear(3, 2)
    tensors = {k: v.detach().clone() for k, v in model.state_dict().items()}
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata={"descend": json.dumps({"epoch": 4})})
    save_file(tensors, str(tmp_path / "plain.safetensors"))
    for name in ("old.safetensors", "plain.safetensors"):
        other = torch.nn.Linear(3, 2)
        load_weights(tmp_path / name, other)
        assert torch.equal(other.weight, model.weight)
    save_weights(tmp_path / "new.safetensors", model)
    with pytest.raises(CheckpointError, match="do not fit the model"):
        load_weights(tmp_path / "new.safetensors", torch.nn.Linear(4, 2))
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata={"descend": "[1]"})
    with pytest.raises(CheckpointError, match="must be a JSON table"):
        load_weights(tmp_path / "bad.safetensors", model)
