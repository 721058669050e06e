from __future__ import annotations

import errno
import json
import math
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from descend.errors import CheckpointError, DiskError
from descend.train import checkpoint
from descend.train.checkpoint import flatten, load_state, save_state, unflatten

leaves = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=False), st.text(max_size=5),
    st.integers(0, 3).map(lambda n: torch.arange(n * 2, dtype=torch.float32).reshape(n, 2)),
)
trees = st.recursive(
    leaves,
    lambda kids: st.one_of(
        st.lists(kids, max_size=3), st.tuples(kids, kids),
        st.dictionaries(st.one_of(st.text(alphabet="abc_", min_size=1, max_size=4), st.integers(0, 9)), kids, max_size=3),
    ),
    max_leaves=12,
)


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


@given(tree=trees)
@settings(max_examples=80, deadline=None)
def test_flatten_unflatten_round_trip(tree):
    tensors = {}
    skeleton = flatten({"root": tree}, tensors)
    text = json.dumps(skeleton)  # the skeleton is plain JSON
    assert same(unflatten(json.loads(text), tensors), {"root": tree})


def test_save_load_round_trip_with_optimizer_state(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.8, 0.95))
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "rng": torch.get_rng_state(), "x": math.inf}
    save_state(tmp_path / "c.safetensors", state)
    back = load_state(tmp_path / "c.safetensors")
    assert same(back["model"], state["model"]) and back["x"] == math.inf
    opt2 = torch.optim.Adam(torch.nn.Linear(3, 2).parameters())
    opt2.load_state_dict(back["optimizer"])
    assert opt2.param_groups[0]["betas"] == (0.8, 0.95)
    assert json.loads((tmp_path / "c.json").read_text())["format"] == checkpoint.FORMAT


def test_a_failed_write_leaves_the_old_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "c.safetensors"
    save_state(path, {"a": torch.ones(3)})
    before = path.read_bytes()
    real_write = os.write

    def full_disk(fd, data):
        real_write(fd, bytes(data[:7]))  # part of the file reaches the disk, then it is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(DiskError, match="disk is full"):
        save_state(path, {"a": torch.zeros(3)})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json", "c.safetensors"]  # no temp files left


def test_bad_checkpoints_raise_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_state(tmp_path / "missing.safetensors")
    save_state(tmp_path / "c.safetensors", {"a": torch.ones(100)})
    data = (tmp_path / "c.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_state(tmp_path / "cut.safetensors")
    save_file({"a": torch.ones(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="not a descend checkpoint"):
        load_state(tmp_path / "plain.safetensors")


def test_unsupported_values_are_refused():
    with pytest.raises(CheckpointError, match="type object"):
        flatten({"f": object()}, {})
