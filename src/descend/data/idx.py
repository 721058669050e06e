"""The IDX file format of MNIST, Fashion-MNIST and KMNIST.

An IDX file is a 4-byte magic number ``00 00 TT DD`` (TT: element type, DD: number
of dimensions), then DD big-endian uint32 sizes, then the elements in C order,
big-endian. This reader checks all of it: the two zero bytes, a known type code, a
plausible rank, and that the file holds exactly the bytes the header announces,
so a truncated download or a file of the wrong kind is reported, never half-read.
Files may be gzip-compressed (detected from the content, not the name).
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from descend.errors import DataError

# Type codes of the IDX format (LeCun et al.) and the big-endian NumPy dtype of each.
IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def _fix(path: Path) -> str:
    return (
        f"delete {path} (and let descend download it again) or replace it with the "
        "original file"
    )


def read_bytes(path: str | os.PathLike) -> bytes:
    """The content of ``path``, gunzipped if it is gzip data."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path} is not a valid gzip file ({exc}); {_fix(path)}") from None


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of an IDX file into an array (native byte order, read-only view
    converted to a writable array only for multi-byte types)."""
    if len(data) < 4:
        raise DataError(f"{name} is too short to be an IDX file ({len(data)} bytes)")
    zero0, zero1, type_code, ndim = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0 or type_code not in IDX_TYPES:
        raise DataError(
            f"{name} does not start with an IDX magic number (got {data[:4].hex()}, "
            "expected 0000TTDD with TT in 08/09/0b/0c/0d/0e); it is not an MNIST-format file"
        )
    if not 1 <= ndim <= 4:
        raise DataError(f"{name} claims {ndim} dimensions; MNIST-format files have 1 to 4")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name} is truncated inside its header")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_TYPES[type_code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise DataError(
            f"{name} is {what}: the header announces shape {shape} "
            f"({expected} bytes) but the file holds {len(data)} bytes"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    if dtype.itemsize > 1:
        array = array.astype(dtype.newbyteorder("="))
    return array


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (raw or gzip) into a NumPy array, validating the header.

    Raises:
        DataError: unreadable file, bad gzip stream, wrong magic number, or a size that
            does not match the header; the message says how to recover.
    """
    path = Path(path)
    data = read_bytes(path)
    try:
        return parse_idx(data, str(path))
    except DataError as exc:
        raise DataError(f"{exc}; {_fix(path)}") from None


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> None:
    """Write ``array`` as an IDX file (gzip if ``compress`` or the name ends in .gz).

    Used to export data sets in MNIST format and by the tests; written atomically.
    """
    from descend.io import atomic_write_bytes

    array = np.ascontiguousarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in IDX_TYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise DataError(f"IDX cannot store dtype {array.dtype}; use one of uint8, int8, int16, int32, float32, float64")
    if not 1 <= array.ndim <= 4:
        raise DataError(f"IDX stores 1 to 4 dimensions, got {array.ndim}")
    header = bytes([0, 0, codes[native], array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    body = array.astype(native.newbyteorder(">"), copy=False).tobytes()
    data = header + body
    path = Path(path)
    if compress or (compress is None and path.suffix == ".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    atomic_write_bytes(path, data)
