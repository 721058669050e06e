"""One entry point for every data set: ``load_dataset(name, ...) -> Splits``.

* ``mnist``, ``fashion-mnist``, ``kmnist``: IDX files (see :mod:`descend.data.mnist`);
* ``mnist-pkl``: Nielsen's ``mnist.pkl.gz`` through the NumPy-only unpickler;
* ``digits``: scikit-learn's bundled 8x8 digits (1,797 images, works offline), split
  1,197 / 300 / 300 after a fixed shuffle;
* ``npz``: any ``.npz`` holding ``x_train, y_train, x_test, y_test`` (and optionally
  ``x_val, y_val``), read with ``allow_pickle=False``; each array's header is checked
  against the size of its zip entry and ``MAX_BYTES`` before the array is read.

Every loader checks what it returns (:func:`descend.data.tensors.check_splits`):
integer labels within the classes, finite pixels, one input shape across splits.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from descend.data.mnist import IDX_DATASETS, load_idx_dataset, load_mnist_pkl
from descend.data.idx import MAX_DEFLATE_RATIO
from descend.data.tensors import Splits, TensorPair, check_splits
from descend.errors import ConfigError, DataError, DataNotFound

DATASETS = (*IDX_DATASETS, "mnist-pkl", "digits", "npz")
MAX_BYTES = 1 << 30  # the largest array read from a .npz by default


def load_dataset(
    name: str = "mnist",
    split: str = "nndl",
    data_dir: str | os.PathLike | None = None,
    path: str | os.PathLike | None = None,
    limit: int | None = None,
    eval_limit: int | None = None,
    download: bool = True,
    verify: bool = True,
) -> Splits:
    """Load data set ``name`` as in-memory tensors.

    Args:
        name: one of ``DATASETS``.
        split: ``"nndl"`` (50k/10k/10k) or ``"standard"`` (60k/-/10k), for the IDX sets.
        data_dir: a folder searched first (it holds ``mnist/`` etc.).
        path: the file, for ``npz`` (and optionally ``mnist-pkl``).
        limit, eval_limit: keep only the first examples of training / of validation and
            test (quick runs and tests).
        download: fetch a missing IDX set into the user cache.
        verify: check the SHA-256 of MNIST's files against the original content;
            ``False`` (or ``DESCEND_ALLOW_MODIFIED_DATA=1``) accepts deliberately
            modified files. Labels, pixels and shapes are checked either way.
    """
    if name in IDX_DATASETS:
        splits = load_idx_dataset(name, split, data_dir, download, verify)
    elif name == "mnist-pkl":
        splits = load_mnist_pkl(path, data_dir)
    elif name == "digits":
        splits = load_digits()
    elif name == "npz":
        if path is None:
            raise ConfigError("data set 'npz' needs a file: set data.path = \"file.npz\"")
        splits = load_npz(path)
    else:
        raise ConfigError(f"unknown data set {name!r}; available: {', '.join(DATASETS)}")
    return splits.limited(limit, eval_limit)


def load_digits(seed: int = 0) -> Splits:
    """scikit-learn's 8x8 digits as float32 (n, 1, 8, 8) in [0, 1] (pixel values 0-16 / 16).

    The 1,797 images are shuffled once with ``seed`` and split 1,197 / 300 / 300.
    """
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        raise DataNotFound(
            "the 'digits' data set comes with scikit-learn, which is not installed; "
            "fix: pip install scikit-learn (or pip install 'descend[digits]')"
        ) from None
    bunch = sklearn_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    x, y = x[order], y[order]
    data = TensorPair(x, y)
    return check_splits(Splits(data[:1197], data[1197:1497], data[1497:], tuple(str(d) for d in range(10)), "digits"), "digits")


def _as_inputs(a: np.ndarray, key: str, path: Path) -> torch.Tensor:
    if a.dtype == np.uint8:
        t = torch.from_numpy(a.astype(np.float32) / 255.0)
    elif a.dtype.kind == "f":
        t = torch.from_numpy(a.astype(np.float32))
    else:
        raise DataError(f"{path}: {key} has dtype {a.dtype}; use uint8 (0-255) or float pixels")
    if t.ndim == 3:  # (n, rows, cols): one channel
        t = t.unsqueeze(1)
    if t.ndim not in (2, 4):
        raise DataError(f"{path}: {key} has shape {tuple(a.shape)}; use (n, features), (n, rows, cols) or (n, channels, rows, cols)")
    return t


def _as_labels(a: np.ndarray, key: str, path: Path) -> torch.Tensor:
    if a.dtype.kind not in "iu" or a.ndim != 1:
        raise DataError(f"{path}: {key} must be a 1-D integer array of class indices, got {a.dtype} {tuple(a.shape)}")
    if len(a) and a.min() < 0:
        raise DataError(f"{path}: {key} holds negative class indices")
    return torch.from_numpy(a.astype(np.int64))


def _check_npz_sizes(path: Path, max_bytes: int) -> None:
    """Check each array's announced size before NumPy allocates it.

    ``np.load`` allocates the shape an ``.npy`` header announces before reading the
    data, so a small crafted file could ask for gigabytes. The announced size must fit
    the zip entry, the entry's uncompressed size must be possible for its compressed
    size (deflate: at most 1032:1), and both must stay below ``max_bytes``.
    """
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if info.file_size > max(MAX_DEFLATE_RATIO * info.compress_size, info.compress_size + 1024):
                raise DataError(f"{path}: entry {info.filename} claims {info.file_size} bytes from {info.compress_size} compressed; the file is corrupt")
            if info.file_size > max_bytes + (1 << 16):
                raise DataError(f"{path}: entry {info.filename} holds {info.file_size} bytes, more than the limit of {max_bytes}")
            with archive.open(info) as f:
                version = np.lib.format.read_magic(f)
                read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, dtype = read_header(f)
            nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if nbytes > info.file_size or nbytes > max_bytes:
                raise DataError(
                    f"{path}: {info.filename} announces shape {shape} of {dtype} ({nbytes} bytes) but its entry holds "
                    f"{info.file_size} bytes (limit {max_bytes}); the file is corrupt"
                )


def load_npz(path: str | os.PathLike, max_bytes: int = MAX_BYTES) -> Splits:
    """A data set from a ``.npz`` of ``x_train, y_train, x_test, y_test`` (+ ``x_val, y_val``)."""
    path = Path(path)
    try:
        _check_npz_sizes(path, max_bytes)
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise DataNotFound(f"{path} does not exist; check data.path") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{path} is not a readable .npz of numeric arrays ({exc})") from None
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise DataError(f"{path} lacks {', '.join(missing)}; it holds {', '.join(arrays) or 'nothing'}")
    if ("x_val" in arrays) != ("y_val" in arrays):
        raise DataError(f"{path} holds only one of x_val, y_val; give both or neither")
    pairs = {}
    for part in ("train", "val", "test"):
        if f"x_{part}" in arrays:
            pairs[part] = TensorPair(
                _as_inputs(arrays[f"x_{part}"], f"x_{part}", path), _as_labels(arrays[f"y_{part}"], f"y_{part}", path)
            )
    num = 1 + max((int(p.y.max()) for p in pairs.values() if len(p)), default=0)
    splits = Splits(pairs["train"], pairs.get("val"), pairs["test"], tuple(str(c) for c in range(num)), path.stem)
    return check_splits(splits, str(path))
