"""MNIST and the data sets that share its IDX format (Fashion-MNIST, KMNIST).

Two splits are offered:

* ``"nndl"``: the split of "Neural Networks and Deep Learning" (and of its
  ``mnist.pkl.gz``): the first 50,000 training images for training, the last 10,000
  for validation, the 10,000 test images for test;
* ``"standard"``: all 60,000 training images for training, no validation set, the
  10,000 test images for test.

Pixels become float32 in [0, 1] (``uint8 / 255``); labels int64. Nielsen's pickle
stores ``uint8 / 256`` instead; :func:`load_mnist_pkl` returns it unchanged.

MNIST ships with descend (``descend/data/bundled/mnist``, CC BY-SA 3.0, Yann LeCun,
Corinna Cortes, Christopher J. C. Burges), so it loads with no network; the folders
searched before it are listed in :mod:`descend.data.download`. Wherever MNIST's
files come from, the SHA-256 of their decompressed content must be the original's
(``verify=False`` or ``DESCEND_ALLOW_MODIFIED_DATA=1`` accept a deliberately
modified copy), and every set's labels must lie in ``0..num_classes-1``.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from descend.data.download import RemoteFile, locate
from descend.data.idx import read_idx
from descend.data.safe_pickle import load_numpy_pickle
from descend.data.tensors import Splits, TensorPair, check_splits
from descend.errors import ConfigError, DataError


@dataclass(frozen=True)
class IdxDataset:
    """An MNIST-format data set: where its four files live and what they must be."""

    name: str
    folder: str
    mirrors: tuple[str, ...]
    md5: dict[str, str]  # MD5 of each .gz file as distributed (checked on download)
    classes: tuple[str, ...]
    sha256: dict[str, str] = field(default_factory=dict)  # SHA-256 of each file's decompressed content

    def files(self) -> list[RemoteFile]:
        return [RemoteFile(name, md5, self.mirrors) for name, md5 in self.md5.items()]


_DIGITS = tuple(str(d) for d in range(10))

IDX_DATASETS = {
    "mnist": IdxDataset(
        "mnist",
        "mnist",
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        _DIGITS,
        # The original .gz files above decompress to exactly these bytes; so do the
        # recompressed copies bundled with descend. Checked at every load.
        {
            "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
    ),
    "fashion-mnist": IdxDataset(
        "fashion-mnist",
        "fashion-mnist",
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    ),
    "kmnist": IdxDataset(
        "kmnist",
        "kmnist",
        ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        {
            "train-images-idx3-ubyte.gz": "bdb82020997e1d708af4cf47b453dcf7",
            "train-labels-idx1-ubyte.gz": "e144d726b3acfaa3e44228e80efcd344",
            "t10k-images-idx3-ubyte.gz": "5c965bf0a639b31b8f53240b1b52f4d7",
            "t10k-labels-idx1-ubyte.gz": "7320c461ea6c1c855c0b718fb2a4b134",
        },
        ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
    ),
}

SPLITS = ("nndl", "standard")


def verification_enabled(verify: bool = True) -> bool:
    """Whether checksums are checked: ``verify``, unless ``DESCEND_ALLOW_MODIFIED_DATA=1``."""
    return verify and os.environ.get("DESCEND_ALLOW_MODIFIED_DATA", "") in ("", "0")


@functools.lru_cache(maxsize=8)
def _read_pair(
    images: Path, labels: Path, images_sha256: str | None, labels_sha256: str | None, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Parse and check one images/labels pair once per process; later loads are a lookup."""
    x = read_idx(images, sha256=images_sha256)
    y = read_idx(labels, sha256=labels_sha256)
    if x.ndim != 3 or x.dtype != np.uint8:
        raise DataError(f"{images} should hold uint8 images of shape (n, rows, cols), got {x.dtype} {x.shape}")
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DataError(f"{labels} should hold a 1-D array of integer labels, got {y.dtype} {y.shape}")
    if len(y) != len(x):
        raise DataError(f"{labels} holds {y.shape} labels for {len(x)} images in {images}; the files do not belong together")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise DataError(
            f"{labels} holds labels {int(y.min())}..{int(y.max())}, but this data set has classes "
            f"0..{num_classes - 1}; the file is corrupt or belongs to another data set"
        )
    return torch.from_numpy(x.copy()), torch.from_numpy(y.astype(np.int64))


def load_idx_arrays(
    name: str, data_dir: str | os.PathLike | None = None, download: bool = True, verify: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The raw uint8 images and int64 labels of an MNIST-format set: x_train, y_train, x_test, y_test.

    With ``verify`` (and ``DESCEND_ALLOW_MODIFIED_DATA`` unset), each file whose
    decompressed SHA-256 is known (MNIST's four) must match it.
    """
    spec = IDX_DATASETS[name]
    paths = locate(spec.folder, spec.files(), data_dir, download)
    sums = spec.sha256 if verification_enabled(verify) else {}

    def pair(images: str, labels: str) -> tuple[torch.Tensor, torch.Tensor]:
        return _read_pair(paths[images], paths[labels], sums.get(images), sums.get(labels), len(spec.classes))

    x_train, y_train = pair("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
    x_test, y_test = pair("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"{paths['train-images-idx3-ubyte.gz']} holds images of {tuple(x_train.shape[1:])} pixels but "
            f"{paths['t10k-images-idx3-ubyte.gz']} of {tuple(x_test.shape[1:])}; the files do not belong together"
        )
    return x_train, y_train, x_test, y_test


def to_float_images(x: torch.Tensor) -> torch.Tensor:
    """uint8 (n, rows, cols) -> float32 (n, 1, rows, cols) in [0, 1]."""
    return x.unsqueeze(1).to(torch.float32).div_(255.0)


def load_idx_dataset(
    name: str,
    split: str = "nndl",
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    verify: bool = True,
) -> Splits:
    """MNIST, Fashion-MNIST or KMNIST as float tensors, in the ``nndl`` or ``standard`` split.

    ``verify=False`` (or ``DESCEND_ALLOW_MODIFIED_DATA=1``) accepts MNIST files whose
    content differs from the original, for deliberately modified copies.
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    x_train, y_train, x_test, y_test = load_idx_arrays(name, data_dir, download, verify)
    train = TensorPair(to_float_images(x_train), y_train)
    test = TensorPair(to_float_images(x_test), y_test)
    val = None
    if split == "nndl":
        if len(train) <= 10_000:
            raise DataError(f"the nndl split of {name} needs more than 10,000 training images, got {len(train)}; use split='standard'")
        n_train = len(train) - 10_000
        train, val = train[:n_train], train[n_train:]
    # uint8 / 255 is finite by construction: no pass over the pixels for NaN
    return check_splits(Splits(train, val, test, classes=IDX_DATASETS[name].classes, name=name), name, finite=False)


def load_mnist_pkl(path: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None) -> Splits:
    """Nielsen's ``mnist.pkl.gz``: (training, validation, test), read by a NumPy-only unpickler.

    ``path`` is the file itself; without it the file is looked for like the IDX files
    (``--data-dir``, ``$DESCEND_DATA``, the user cache; it is never downloaded nor bundled).
    Images come back as float32 (n, 1, 28, 28) holding Nielsen's ``pixel / 256``.
    """
    if path is None:
        path = locate("mnist", [RemoteFile("mnist.pkl.gz", "", ())], data_dir, download=False)["mnist.pkl.gz"]
    obj = load_numpy_pickle(path)
    if not (isinstance(obj, tuple) and len(obj) == 3 and all(isinstance(p, tuple) and len(p) == 2 for p in obj)):
        raise DataError(f"{path} should hold (training, validation, test) pairs of arrays")
    parts = []
    for x, y in obj:
        if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray)) or x.ndim != 2 or x.shape[1] != 784 or y.ndim != 1 or len(y) != len(x):
            raise DataError(
                f"{path}: expected pairs (x of shape (n, 784), y of shape (n,)), got "
                f"{getattr(x, 'shape', type(x).__name__)}, {getattr(y, 'shape', type(y).__name__)}"
            )
        if x.dtype.kind != "f" or y.dtype.kind not in "iu":
            raise DataError(f"{path}: expected float pixels and integer labels, got {x.dtype} and {y.dtype}")
        parts.append(TensorPair(torch.from_numpy(x.astype(np.float32)).view(-1, 1, 28, 28), torch.from_numpy(y.astype(np.int64))))
    return check_splits(Splits(*parts, classes=_DIGITS, name="mnist-pkl"), str(path))
