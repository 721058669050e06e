"""Data sets and transforms.

::

    load_dataset(name, split=..., data_dir=..., verify=True)   every data set, one call;
                                                                MNIST ships with the package
    read_idx(path), read_idx_header(path)                       the MNIST file format, bounded
    load_mnist_pkl(path)                                        Nielsen's pickle, NumPy-only unpickler
    check_splits(splits, source)                                labels, pixels, shapes checked
    expand_mnist(pair), RandomShift(k)                          augmentation (NNDL ch. 6)
    RandomCrop, RandomFlip, RandomAffine, ElasticDistortion,    more augmentation, test-time views
    AffineElastic,
    PCAColorJitter, Compose, tta_predict                        (descend.data.transforms)
    Preprocess                                                  centering/standardization/PCA/ZCA
"""

from descend.data.augment import RandomShift, expand_mnist, shift
from descend.data.datasets import DATASETS, load_dataset, load_digits, load_npz
from descend.data.download import BUNDLED, cache_dir, search_dirs
from descend.data.idx import read_idx, read_idx_header, write_idx
from descend.data.mnist import IDX_DATASETS, load_idx_dataset, load_mnist_pkl
from descend.data.preprocessing import Preprocess, fit_preprocessing
from descend.data.safe_pickle import load_numpy_pickle
from descend.data.sequences import adding_problem, copy_task, make_splits, parity, sequential_mnist
from descend.data.tensors import Splits, TensorPair, check_splits
from descend.data.transforms import (
    AffineElastic,
    Compose,
    ElasticDistortion,
    PCAColorJitter,
    RandomAffine,
    RandomCrop,
    RandomFlip,
    ten_crop,
    tta_predict,
)

__all__ = [
    "BUNDLED",
    "DATASETS",
    "IDX_DATASETS",
    "RandomShift",
    "Splits",
    "TensorPair",
    "cache_dir",
    "check_splits",
    "expand_mnist",
    "load_dataset",
    "load_digits",
    "load_idx_dataset",
    "load_mnist_pkl",
    "load_npz",
    "load_numpy_pickle",
    "read_idx",
    "read_idx_header",
    "search_dirs",
    "shift",
    "write_idx",
    "adding_problem",
    "copy_task",
    "make_splits",
    "parity",
    "sequential_mnist",
    "AffineElastic",
    "Compose",
    "ElasticDistortion",
    "PCAColorJitter",
    "Preprocess",
    "RandomAffine",
    "RandomCrop",
    "RandomFlip",
    "fit_preprocessing",
    "ten_crop",
    "tta_predict",
]
