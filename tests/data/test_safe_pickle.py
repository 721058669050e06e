from __future__ import annotations

import gzip
import os
import pickle
import tracemalloc

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


# Hand-assembled protocol-2 pickles (opcodes of Lib/pickletools.py): what an attacker
# can write with only the admitted globals.
RECONSTRUCT = b"cnumpy.core.multiarray\n_reconstruct\n"
NDARRAY = b"cnumpy\nndarray\n"


def _int(n: int) -> bytes:
    return b"J" + n.to_bytes(4, "little", signed=True)  # BININT


def _huge_reconstruct() -> bytes:
    # _reconstruct(ndarray, (20000000, 784), 'f4'): 58 GiB of float32 from ~80 bytes
    return b"\x80\x02" + RECONSTRUCT + NDARRAY + _int(20_000_000) + _int(784) + b"\x86" + b"U\x02f4" + b"\x87R."


def _huge_setstate(dtype: bytes) -> bytes:
    # _reconstruct(ndarray, (0,), 'b'), then BUILD with state (1, (20000000, 784), dtype(...), False, b'')
    empty = RECONSTRUCT + NDARRAY + _int(0) + b"\x85" + b"U\x01b" + b"\x87R"
    dt = b"cnumpy\ndtype\n" + b"U" + bytes([len(dtype)]) + dtype + b"\x85R"
    state = b"(" + _int(1) + _int(20_000_000) + _int(784) + b"\x86" + dt + b"\x89" + b"U\x00" + b"tb"
    return b"\x80\x02" + empty + state + b"."


def _peak_allocation(call) -> int:
    tracemalloc.start()
    try:
        call()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize(
    "payload, error",
    [(_huge_reconstruct(), DataError), (_huge_setstate(b"f4"), DataError), (_huge_setstate(b"O"), UnsafePickleError)],
    ids=["reconstruct", "setstate", "setstate-object"],
)
def test_huge_arrays_are_refused_before_allocation(tmp_path, payload, error):
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(payload))
    assert path.stat().st_size < 200
    caught = []

    def load():
        with pytest.raises(error) as info:
            load_numpy_pickle(path)
        caught.append(str(info.value))

    # NumPy reports its array allocations to tracemalloc: nothing near 58 GiB was asked for.
    assert _peak_allocation(load) < 16 << 20
    assert str(path) in caught[0]


def test_calling_ndarray_directly_is_refused(tmp_path):
    path = tmp_path / "call.pkl"
    path.write_bytes(b"\x80\x02" + NDARRAY + _int(20_000_000) + _int(784) + b"\x86\x85R.")
    with pytest.raises(UnsafePickleError, match="numpy.ndarray"):
        load_numpy_pickle(path)


def test_codecs_encode_admits_latin1_only(tmp_path):
    path = tmp_path / "codec.pkl"
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x06\x00\x00\x00rot_13\x86R.")
    with pytest.raises(UnsafePickleError, match="latin1"):
        load_numpy_pickle(path)


def test_the_limits_are_configurable(tmp_path):
    path = tmp_path / "a.pkl"
    array = np.arange(1000, dtype=np.float64)
    path.write_bytes(pickle.dumps((array,), protocol=2))
    np.testing.assert_array_equal(load_numpy_pickle(path)[0], array)
    assert type(load_numpy_pickle(path)[0]) is np.ndarray
    with pytest.raises(DataError, match="limits"):
        load_numpy_pickle(path, max_elements=999)
    with pytest.raises(DataError, match="limits"):
        load_numpy_pickle(path, max_bytes=7999)
    with pytest.raises(DataError, match="decompresses to more than"):
        load_numpy_pickle(path, max_bytes=100)


def test_bad_labels_and_pixels_in_nielsens_format_are_reported(tmp_path):
    def write(x, y):
        path = tmp_path / "mnist.pkl.gz"
        part = (x, y)
        path.write_bytes(gzip.compress(pickle.dumps((part, part, part), protocol=2)))
        return path

    x = np.zeros((4, 784), np.float32)
    with pytest.raises(DataError, match="labels range over 0..10"):
        load_mnist_pkl(write(x, np.array([0, 1, 2, 10])))
    with pytest.raises(DataError, match="integer labels"):
        load_mnist_pkl(write(x, np.array([0.0, 1.0, 2.0, 3.0])))
    x[2, 5] = np.nan
    with pytest.raises(DataError, match="NaN or infinite"):
        load_mnist_pkl(write(x, np.array([0, 1, 2, 3])))
