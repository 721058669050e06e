"""MNIST ships with the package: a fresh install trains with no network, no
environment variables and an empty cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from descend.data import BUNDLED, load_dataset, search_dirs
from descend.data.mnist import IDX_DATASETS, _read_pair

# Published class frequencies of the MNIST test set (LeCun, Cortes, Burges).
TEST_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def bare_environment(tmp_path, monkeypatch):
    """No DESCEND_DATA, no cache override, HOME and XDG_CACHE_HOME in an empty folder."""
    for var in ("DESCEND_DATA", "DESCEND_CACHE", "DESCEND_ALLOW_MODIFIED_DATA"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("DESCEND_OFFLINE", "1")  # a download attempt would fail the test


def test_the_bundled_digests_are_the_ones_checked():
    listed = dict(reversed(line.split()) for line in (BUNDLED / "mnist" / "SHA256SUMS.decompressed").read_text().splitlines() if line)
    assert {name + ".gz": digest for name, digest in listed.items()} == IDX_DATASETS["mnist"].sha256
    licence = (BUNDLED / "mnist" / "LICENSE").read_text()
    assert "Attribution-Share Alike 3.0" in licence and "LeCun" in licence and "Cortes" in licence and "Burges" in licence


def test_mnist_loads_offline_from_the_package_with_an_empty_cache(tmp_path, monkeypatch):
    bare_environment(tmp_path, monkeypatch)
    _read_pair.cache_clear()
    assert search_dirs("mnist") == [tmp_path / "xdg" / "descend" / "mnist", BUNDLED / "mnist"]
    splits = load_dataset("mnist")  # verify=True: the SHA-256 of every file is checked
    _read_pair.cache_clear()
    assert (len(splits.train), len(splits.val), len(splits.test)) == (50_000, 10_000, 10_000)
    assert torch.bincount(splits.test.y).tolist() == TEST_LABEL_COUNTS
    assert not (tmp_path / "xdg").exists() and not (tmp_path / "home").exists()  # nothing cached or fetched


def test_descend_train_runs_offline_with_no_environment(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DESCEND_DATA", "DESCEND_CACHE", "DESCEND_ALLOW_MODIFIED_DATA")}
    env.update(HOME=str(tmp_path / "home"), XDG_CACHE_HOME=str(tmp_path / "xdg"), DESCEND_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, "-m", "descend", "train", "--set", "data.limit=500", "--set", "data.eval_limit=200",
         "--epochs", "1", "--run-dir", "run"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["epochs"] == 1 and 0.0 <= results["test_accuracy"] <= 1.0
    data = json.loads((tmp_path / "run" / "data.json").read_text())
    assert data["input_shape"] == [1, 28, 28] and data["num_classes"] == 10
    assert not (tmp_path / "xdg" / "descend").exists()  # nothing was cached or downloaded
