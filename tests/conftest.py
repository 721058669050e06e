"""Shared test set-up.

* ``tests/`` is put on ``sys.path`` so the NumPy oracles import as ``reference.<topic>``.
* Tests never touch the network: DESCEND_OFFLINE=1, and the user cache points into a
  temporary folder, so nothing a developer has cached changes a result.
* ``mnist_dir``: the folder holding ``mnist/`` (from $DESCEND_DATA, else a data folder
  ``shared/data`` beside the checkout); tests that need MNIST skip with the reason when it is absent.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


def _find_mnist() -> Path | None:
    candidates = []
    if os.environ.get("DESCEND_DATA"):
        candidates.append(Path(os.environ["DESCEND_DATA"]))
    candidates.append(REPO.parent / "shared" / "data")
    for root in candidates:
        if (root / "mnist" / "train-images-idx3-ubyte.gz").is_file() or (root / "mnist" / "train-images-idx3-ubyte").is_file():
            return root
    return None


MNIST_ROOT = _find_mnist()
if MNIST_ROOT is not None:
    # Subprocesses (the CLI tests) and code that searches $DESCEND_DATA find it too.
    os.environ["DESCEND_DATA"] = str(MNIST_ROOT)


@pytest.fixture(autouse=True)
def _offline_and_isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DESCEND_OFFLINE", "1")
    monkeypatch.setenv("DESCEND_CACHE", str(tmp_path_factory.getbasetemp() / "descend-cache"))
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The folder holding mnist/; skips the test when MNIST is not available."""
    if MNIST_ROOT is None:
        pytest.skip("MNIST not found: set DESCEND_DATA to the folder holding mnist/")
    return MNIST_ROOT
