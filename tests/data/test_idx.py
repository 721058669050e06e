from __future__ import annotations

import gzip
import hashlib
import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from descend.data import read_idx, write_idx
from descend.data.idx import MAX_DEFLATE_RATIO, parse_idx, read_idx_header
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
        raw = gzip.decompress((mnist_dir / "mnist" / f"{name}.gz").read_bytes())
        assert hashlib.sha256(raw).hexdigest() == sums[name]
        array = read_idx(mnist_dir / "mnist" / f"{name}.gz", sha256=sums[name])
        assert array.shape == shape and array.dtype == np.uint8
        assert read_idx_header(mnist_dir / "mnist" / f"{name}.gz") == (np.dtype(np.uint8), shape)


class CountingReader:
    """A file object that counts the bytes read from it (the compressed side of a gzip file)."""

    def __init__(self, data):
        self.f = io.BytesIO(data)
        self.read_total = 0

    def read(self, n=-1):
        chunk = self.f.read(n)
        self.read_total += len(chunk)
        return chunk

    def __getattr__(self, name):
        return getattr(self.f, name)


def test_a_gzip_bomb_is_refused_without_being_decompressed():
    # ~4.7 MB of zeros behind a header that says 100 bytes: decompression stops at 101.
    bomb = gzip.compress(_header(0x08, (100,)) + bytes(50_000_000), compresslevel=9)
    reader = CountingReader(bomb)
    with pytest.raises(DataError, match="longer than its header says"):
        read_idx(reader)
    assert reader.read_total < len(bomb) // 4  # most of the compressed stream was never read


def test_a_header_larger_than_deflate_can_hold_is_refused_before_the_body():
    # 20,000,000 x 784 bytes announced by a gzip file of a few hundred bytes
    small = gzip.compress(_header(0x08, (20_000_000, 784)) + bytes(1000))
    assert 20_000_000 * 784 > MAX_DEFLATE_RATIO * len(small)
    with pytest.raises(DataError, match="cannot hold"):
        parse_idx(small)
    honest = gzip.compress(_header(0x08, (100_000,)) + bytes(100_000))
    assert parse_idx(honest).shape == (100_000,)
    with pytest.raises(DataError, match="limit of 10000 bytes"):
        read_idx(io.BytesIO(honest), max_bytes=10_000)


def test_a_wrong_checksum_names_the_file_and_the_ways_out(tmp_path):
    path = tmp_path / "labels-idx1-ubyte.gz"
    write_idx(path, np.arange(10, dtype=np.uint8))
    good = hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest()
    np.testing.assert_array_equal(read_idx(path, sha256=good), np.arange(10))
    with pytest.raises(DataError) as info:
        read_idx(path, sha256="0" * 64)
    message = str(info.value)
    assert str(path) in message and good in message and "verify=False" in message and "DESCEND_ALLOW_MODIFIED_DATA" in message
