"""The IDX file format of MNIST, Fashion-MNIST and KMNIST, read with bounded memory.

An IDX file is a 4-byte magic number ``00 00 TT DD`` (TT: element type, DD: number
of dimensions), then DD big-endian uint32 sizes, then the elements in C order,
big-endian. This reader checks all of it: the two zero bytes, a known type code, a
plausible rank, and that the file holds exactly the bytes the header announces,
so a truncated download or a file of the wrong kind is reported, never half-read.

Files may be gzip-compressed (detected from the content, not the name). The header
is read first and fixes the size of the whole file, so decompression streams and
stops one byte past that size: a small gzip file that would inflate to gigabytes is
refused after reading its header, without being decompressed. Deflate, the
compression of gzip, cannot shrink data by more than 1032:1 (a 258-byte match
costs at least 2 bits), so a header announcing more than 1032 times the compressed
size is refused before any body is read, and ``max_bytes`` caps what any file may
announce.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import zlib
from pathlib import Path
from typing import BinaryIO

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
MAX_DEFLATE_RATIO = 1032
MAX_BYTES = 1 << 30  # the largest IDX file read by default (MNIST's largest is 47 MB)
_CHUNK = 1 << 20
_GZIP_ERRORS = (OSError, EOFError, zlib.error)  # gzip.BadGzipFile is an OSError


def _fix(name: str) -> str:
    return f"delete {name} (and let descend download it again) or replace it with the original file"


def _read_at_most(stream: BinaryIO, n: int, name: str, digest=None) -> bytes:
    """Up to ``n`` bytes of ``stream``, read in chunks (memory grows only with real data)."""
    chunks, left = [], n
    try:
        while left > 0:
            chunk = stream.read(min(left, _CHUNK))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
            if digest is not None:
                digest.update(chunk)
    except _GZIP_ERRORS as exc:
        raise DataError(f"{name} is not a valid gzip file ({exc}); {_fix(name)}") from None
    return b"".join(chunks)


def _open(source: str | os.PathLike | BinaryIO) -> tuple[BinaryIO, int, str, bool]:
    """(binary stream, size of the file in bytes, name for messages, whether we opened it)."""
    if hasattr(source, "read"):
        name = str(getattr(source, "name", "<stream>"))
        start = source.tell()
        size = source.seek(0, io.SEEK_END) - start
        source.seek(start)
        return source, size, name, False
    path = Path(source)
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    return f, os.fstat(f.fileno()).st_size, str(path), True


def _header(stream: BinaryIO, name: str, digest=None) -> tuple[np.dtype, tuple[int, ...], int]:
    """The element type, shape and header length that an IDX stream announces."""
    magic = _read_at_most(stream, 4, name, digest)
    if len(magic) < 4:
        raise DataError(f"{name} is too short to be an IDX file ({len(magic)} bytes); {_fix(name)}")
    zero0, zero1, type_code, ndim = magic
    if zero0 != 0 or zero1 != 0 or type_code not in IDX_TYPES:
        raise DataError(
            f"{name} does not start with an IDX magic number (got {magic.hex()}, "
            f"expected 0000TTDD with TT in 08/09/0b/0c/0d/0e); it is not an MNIST-format file; {_fix(name)}"
        )
    if not 1 <= ndim <= 4:
        raise DataError(f"{name} claims {ndim} dimensions; MNIST-format files have 1 to 4; {_fix(name)}")
    sizes = _read_at_most(stream, 4 * ndim, name, digest)
    if len(sizes) < 4 * ndim:
        raise DataError(f"{name} is truncated inside its header; {_fix(name)}")
    shape = tuple(int(d) for d in np.frombuffer(sizes, dtype=">u4"))
    return IDX_TYPES[type_code], shape, 4 + 4 * ndim


def _stream(f: BinaryIO) -> tuple[BinaryIO, bool]:
    magic = f.read(2)
    f.seek(-len(magic), io.SEEK_CUR)
    if magic == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=f, mode="rb"), True
    return f, False


def read_idx_header(source: str | os.PathLike | BinaryIO) -> tuple[np.dtype, tuple[int, ...]]:
    """The element type and shape an IDX file (raw or gzip) announces, reading only its header."""
    f, _, name, owned = _open(source)
    try:
        stream, _ = _stream(f)
        dtype, shape, _ = _header(stream, name)
        return dtype.newbyteorder("="), shape
    finally:
        if owned:
            f.close()


def read_idx(
    source: str | os.PathLike | BinaryIO, sha256: str | None = None, max_bytes: int = MAX_BYTES
) -> np.ndarray:
    """Read an IDX file (raw or gzip; a path or a binary file object) into a NumPy array.

    Args:
        source: the file.
        sha256: if given, the SHA-256 the decompressed content must have.
        max_bytes: the largest decompressed size accepted (the header is checked
            against it before the body is read).

    Raises:
        DataError: unreadable file, bad gzip stream, wrong magic number, a size that
            does not match the header or exceeds ``max_bytes``, or a wrong checksum;
            the message says how to recover.
    """
    f, size, name, owned = _open(source)
    try:
        stream, compressed = _stream(f)
        digest = hashlib.sha256() if sha256 else None
        dtype, shape, header = _header(stream, name, digest)
        expected = header + int(np.prod(shape, dtype=object)) * dtype.itemsize
        if compressed and expected > MAX_DEFLATE_RATIO * size:
            raise DataError(
                f"{name} announces shape {shape} ({expected} bytes) but is a gzip file of {size} bytes, "
                f"which cannot hold more than {MAX_DEFLATE_RATIO * size}; it is truncated or its header "
                f"is corrupt; {_fix(name)}"
            )
        if expected > max_bytes or np.prod([max(d, 1) for d in shape], dtype=object) * dtype.itemsize > max_bytes:
            # (the second test: NumPy refuses a shape such as (0, 2**32 - 1, 2**32 - 1) even though it is empty)
            raise DataError(
                f"{name} announces shape {shape} ({expected} bytes), more than the limit of "
                f"{max_bytes} bytes; the header is corrupt ({_fix(name)}), or pass a larger max_bytes"
            )
        if not compressed and expected != size:
            what = "truncated" if size < expected else "longer than its header says"
            raise DataError(
                f"{name} is {what}: the header announces shape {shape} "
                f"({expected} bytes) but the file holds {size} bytes; {_fix(name)}"
            )
        body = _read_at_most(stream, expected - header + 1, name, digest)
    finally:
        if owned:
            f.close()
    if len(body) != expected - header:
        what = "truncated" if len(body) < expected - header else "longer than its header says"
        held = f"{header + len(body)}" if len(body) < expected - header else f"more than {expected}"
        raise DataError(
            f"{name} is {what}: the header announces shape {shape} ({expected} bytes) "
            f"but the {'decompressed ' if compressed else ''}file holds {held} bytes; {_fix(name)}"
        )
    if sha256 and digest.hexdigest() != sha256:
        raise DataError(
            f"{name} is not the original file: the SHA-256 of its "
            f"{'decompressed ' if compressed else ''}content is {digest.hexdigest()}, expected {sha256}. "
            f"Fix: {_fix(name)}; to use a deliberately modified file, pass verify=False to the loader "
            "or set DESCEND_ALLOW_MODIFIED_DATA=1"
        )
    array = np.frombuffer(body, dtype=dtype).reshape(shape)
    if dtype.itemsize > 1:
        array = array.astype(dtype.newbyteorder("="))
    return array


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of an IDX file (raw or gzip) held in memory."""
    stream = io.BytesIO(data)
    stream.name = name  # type: ignore[attr-defined]
    return read_idx(stream)


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
