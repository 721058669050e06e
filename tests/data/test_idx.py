from __future__ import annotations

import gzip
import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from descend.data import read_idx, write_idx
from descend.data.idx import read_bytes
from descend.errors import DataError

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


@given(
    array=st.sampled_from(DTYPES).flatmap(
        lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=1, max_dims=4, max_side=5),
                              elements={"allow_nan": False} if np.dtype(dt).kind == "f" else None)
    ),
    compress=st.booleans(),
)
@settings(max_examples=50, deadline=None)
def test_write_read_round_trip(tmp_path_factory, array, compress):
    path = tmp_path_factory.mktemp("idx") / ("a.idx.gz" if compress else "a.idx")
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == array.dtype.newbyteorder("=") and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def _header(type_code: int, shape: tuple[int, ...]) -> bytes:
    return bytes([0, 0, type_code, len(shape)]) + np.asarray(shape, dtype=">u4").tobytes()


def test_big_endian_layout_follows_the_format_spec(tmp_path):
    # An independent encoding: header by hand, int16 elements big-endian.
    values = np.array([[1, -2, 300], [4, 5, -32768]], dtype=np.int16)
    (tmp_path / "x").write_bytes(_header(0x0B, (2, 3)) + values.astype(">i2").tobytes())
    np.testing.assert_array_equal(read_idx(tmp_path / "x"), values)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x00\x00", "too short"),
        (b"\x01\x00\x08\x01" + b"\x00\x00\x00\x02" + b"ab", "magic number"),
        (b"\x00\x00\x07\x01" + b"\x00\x00\x00\x02" + b"ab", "magic number"),
        (b"\x00\x00\x08\x05" + b"\x00" * 40, "dimensions"),
        (b"\x00\x00\x08\x03\x00\x00", "header"),
        (_header(0x08, (10, 28, 28)) + b"\x00" * 100, "truncated"),
        (_header(0x08, (2,)) + b"\x00" * 3, "longer than its header"),
    ],
)
def test_malformed_files_raise_data_errors_naming_the_problem(tmp_path, content, message):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value) and "delete" in str(info.value)


def test_truncated_gzip_is_reported(tmp_path):
    data = gzip.compress(_header(0x08, (100,)) + bytes(100))
    path = tmp_path / "labels.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="gzip"):
        read_idx(path)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "nope")


def test_real_mnist_files_decompress_to_the_published_checksums(mnist_dir):
    """Oracle: SHA256SUMS.decompressed shipped with the data, and the documented sizes."""
    sums = dict(
        reversed(line.split()) for line in (mnist_dir / "mnist" / "SHA256SUMS.decompressed").read_text().splitlines() if line
    )
    shapes = {"train-images-idx3-ubyte": (60000, 28, 28), "train-labels-idx1-ubyte": (60000,),
              "t10k-images-idx3-ubyte": (10000, 28, 28), "t10k-labels-idx1-ubyte": (10000,)}
    for name, shape in shapes.items():
        raw = read_bytes(mnist_dir / "mnist" / f"{name}.gz")
        assert hashlib.sha256(raw).hexdigest() == sums[name]
        array = read_idx(mnist_dir / "mnist" / f"{name}.gz")
        assert array.shape == shape and array.dtype == np.uint8
