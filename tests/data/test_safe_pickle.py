from __future__ import annotations

import gzip
import os
import pickle

import numpy as np
import pytest

from descend.data import load_mnist_pkl, load_numpy_pickle
from descend.errors import DataError, UnsafePickleError


class Exploit:
    """A pickle payload that would create a file if it were ever unpickled."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_arrays_load_like_pickle_does(tmp_path, protocol):
    data = ((np.random.rand(5, 784).astype(np.float32), np.arange(5)), (np.zeros((2, 784), np.float32), np.ones(2, np.int64)))
    path = tmp_path / "ok.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(data, protocol=protocol)))
    back = load_numpy_pickle(path)
    assert len(back) == 2
    for (x, y), (bx, by) in zip(data, back):
        np.testing.assert_array_equal(x, bx)
        np.testing.assert_array_equal(y, by)


def test_a_malicious_pickle_is_refused_and_never_runs(tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps((np.zeros(3), Exploit(str(target))))))
    with pytest.raises(UnsafePickleError, match="posix.mkdir|os.mkdir|nt.mkdir"):
        load_numpy_pickle(path)
    assert not target.exists()
    with pytest.raises(UnsafePickleError):
        load_mnist_pkl(path)


def test_object_arrays_are_refused(tmp_path):
    path = tmp_path / "objects.pkl"
    path.write_bytes(pickle.dumps(np.array([{"a": 1}], dtype=object)))
    with pytest.raises(UnsafePickleError):
        load_numpy_pickle(path)


def test_garbage_is_a_data_error(tmp_path):
    path = tmp_path / "junk.pkl"
    path.write_bytes(b"\x80\x02this is not a pickle")
    with pytest.raises(DataError):
        load_numpy_pickle(path)


def test_wrong_structure_is_reported(tmp_path):
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps((np.zeros(3), np.zeros(3)))))
    with pytest.raises(DataError, match="training, validation, test"):
        load_mnist_pkl(path)


def test_nielsens_file_loads_with_its_documented_contents(mnist_dir):
    splits = load_mnist_pkl(mnist_dir / "mnist" / "mnist.pkl.gz")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (50_000, 10_000, 10_000)
    # float32 pixels / 256: every value is a multiple of 1/256 below 1
    x = splits.test.x
    assert float(x.max()) < 1.0 and bool(((x * 256) == (x * 256).round()).all())
