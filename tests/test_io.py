from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from descend import io
from descend.errors import DescendError, DiskError
from descend.io import (
    append_line, atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text, remove_temp_files,
)


@pytest.fixture
def umask():
    """Set the process umask for a test; restore it afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def plain_mode(folder) -> int:
    """The mode ``open(..., "w")`` gives a new file under the current umask: the oracle."""
    p = folder / "plain-oracle"
    p.write_text("x")
    m = mode(p)
    p.unlink()
    return m


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_every_atomic_write_gets_the_mode_of_a_normal_file(tmp_path, umask, mask):
    from descend.train.checkpoint import save_state, save_weights

    umask(mask)
    expected = plain_mode(tmp_path)
    atomic_write_text(tmp_path / "a.txt", "hi")
    atomic_write_json(tmp_path / "a.json", {"a": 1})
    save_state(tmp_path / "c.safetensors", {"w": torch.ones(2)})
    save_weights(tmp_path / "m.safetensors", torch.nn.Linear(2, 2))
    with atomic_path(tmp_path / "st.safetensors") as tmp:  # safetensors renames its own 0600 temp file onto tmp
        save_file({"w": torch.ones(2)}, str(tmp))
    append_line(tmp_path / "log.jsonl", "{}")
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["a.json", "a.txt", "c.json", "c.safetensors", "log.jsonl", "m.safetensors", "st.safetensors"]
    assert {p.name: mode(p) for p in tmp_path.iterdir()} == {name: expected for name in files}
    assert expected == 0o666 & ~mask


def test_an_existing_file_is_replaced_whole(tmp_path):
    p = tmp_path / "x.json"
    atomic_write_json(p, {"a": list(range(100))})
    atomic_write_json(p, {"b": 1})
    assert json.loads(p.read_text()) == {"b": 1}
    assert os.listdir(tmp_path) == ["x.json"]


def oserror(code):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))
    return fail


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "disk is full"), (errno.EDQUOT, "quota"),
                                         (errno.EROFS, "read-only"), (errno.EACCES, "permission")])
@pytest.mark.parametrize("where", ["write", "replace", "mkstemp", "fsync"])
def test_disk_errors_keep_the_old_file_and_leave_no_temp(tmp_path, monkeypatch, code, words, where):
    p = tmp_path / "results.json"
    atomic_write_json(p, {"old": True})
    before = p.read_bytes()
    target = {"write": (os, "write"), "replace": (os, "replace"), "mkstemp": (io.tempfile, "mkstemp"),
              "fsync": (os, "fsync")}[where]
    monkeypatch.setattr(*target, oserror(code))
    with pytest.raises(DiskError) as info:
        atomic_write_json(p, {"new": True})
    monkeypatch.undo()
    message = str(info.value)
    assert str(p) in message and words in message and "unchanged" in message
    assert info.value.errno == code and isinstance(info.value, OSError) and isinstance(info.value, DescendError)
    assert p.read_bytes() == before
    assert os.listdir(tmp_path) == ["results.json"]


def test_a_disk_error_creating_the_folder_is_a_disk_error(tmp_path, monkeypatch):
    monkeypatch.setattr(io.Path, "mkdir", oserror(errno.EROFS))
    with pytest.raises(DiskError, match="read-only"):
        atomic_write_text(tmp_path / "sub" / "x.txt", "x")


def test_ensure_dir_reports_disk_errors(tmp_path, monkeypatch):
    assert io.ensure_dir(tmp_path / "a" / "b").is_dir()
    monkeypatch.setattr(io.Path, "mkdir", oserror(errno.EACCES))
    with pytest.raises(DiskError, match="no permission") as info:
        io.ensure_dir(tmp_path / "run")
    assert str(tmp_path / "run") in str(info.value)


def test_a_rust_writer_reporting_a_full_disk_is_a_disk_error(tmp_path):
    """safetensors reports I/O failures as SafetensorError("... (os error 28)")."""
    p = tmp_path / "w.safetensors"
    with pytest.raises(DiskError, match="disk is full"):
        with atomic_path(p) as tmp:
            tmp.write_bytes(b"partial")
            raise SafetensorError("Error while serializing: No space left on device (os error 28)")
    assert os.listdir(tmp_path) == []


def test_other_errors_pass_through_and_clean_up(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "write", oserror(errno.EINVAL))
    with pytest.raises(OSError) as info:
        atomic_write_bytes(tmp_path / "x", b"data")
    assert not isinstance(info.value, DiskError) and info.value.errno == errno.EINVAL
    monkeypatch.undo()
    with pytest.raises(KeyError):
        with atomic_path(tmp_path / "y"):
            raise KeyError("boom")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(tmp_path / "z"):
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_a_failed_append_cuts_the_partial_line(tmp_path, monkeypatch):
    p = tmp_path / "metrics.jsonl"
    append_line(p, '{"epoch": 1}')
    real_write = os.write
    calls = []

    def half_then_full(fd, data):
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[:5]))  # a short write ...
        raise OSError(errno.ENOSPC, "No space left on device")  # ... then the disk is full

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(DiskError, match="disk is full") as info:
        append_line(p, '{"epoch": 2, "loss": 0.25}')
    monkeypatch.undo()
    assert str(p) in str(info.value) and calls == [27, 22]
    assert p.read_text() == '{"epoch": 1}\n'
    append_line(p, '{"epoch": 2}')
    assert p.read_text().splitlines() == ['{"epoch": 1}', '{"epoch": 2}']


def test_append_into_a_read_only_place_is_a_disk_error(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "open", oserror(errno.EROFS))
    with pytest.raises(DiskError, match="read-only"):
        append_line(tmp_path / "m.jsonl", "{}")


def test_remove_temp_files_removes_only_temporary_files(tmp_path):
    keep = ["checkpoint.safetensors", "checkpoint.json", ".hidden", "notes.tmp", ".x.tmp", ".tmp", ".tmpabc",
            ".checkpoint.safetensors.abc.tmp", ".tmpABCDEFG"]
    for name in keep:
        (tmp_path / name).write_text("keep")
    made = []
    for name in ("checkpoint.safetensors", "model.safetensors", "metrics.jsonl"):  # the names atomic_path makes
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=tmp_path)
        os.close(fd)
        made.append(os.path.basename(tmp))
    (tmp_path / "member-1").mkdir()
    fd, deep = tempfile.mkstemp(prefix=".model.safetensors.", suffix=".tmp", dir=tmp_path / "member-1")
    os.close(fd)
    (tmp_path / ".tmpA1b2C3").write_bytes(b"")  # the name safetensors' own temporary files have
    removed = remove_temp_files(tmp_path)
    assert sorted(p.name for p in removed) == sorted(made + [os.path.basename(deep), ".tmpA1b2C3"])
    assert sorted(os.listdir(tmp_path)) == sorted(keep + ["member-1"])
    assert os.listdir(tmp_path / "member-1") == []
    assert remove_temp_files(tmp_path / "absent") == []


STRACE = shutil.which("strace")


def strace_works() -> bool:
    return STRACE is not None and subprocess.run([STRACE, "-o", os.devnull, "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not strace_works(), reason="needs strace (fault injection) with ptrace permission")
@pytest.mark.parametrize("writer", ["safetensors", "descend"])
def test_temp_files_of_writes_killed_before_their_rename_are_found(tmp_path, writer):
    """strace kills the writer at its rename: exactly what a kill during a write leaves."""
    code = {
        "safetensors": "import numpy; from safetensors.numpy import save_file; "  # the same Rust writer, no torch import
                       f"save_file({{'a': numpy.ones(4)}}, {str(tmp_path / 'w.safetensors')!r})",
        "descend": "import torch; from descend.train.checkpoint import save_state; "
                   f"save_state({str(tmp_path / 'checkpoint.safetensors')!r}, {{'a': torch.ones(4)}})",
    }[writer]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run([STRACE, "-f", "-o", os.devnull, "-e", "inject=rename,renameat,renameat2:signal=KILL",
                          sys.executable, "-c", code], env=env, capture_output=True)
    assert run.returncode != 0
    left = os.listdir(tmp_path)
    assert len(left) == 1 and left[0].startswith(".")  # the temporary file, written in full
    assert [p.name for p in remove_temp_files(tmp_path)] == left
    assert os.listdir(tmp_path) == []
