"""Reading Nielsen's ``mnist.pkl.gz`` without trusting it.

``pickle.load`` can run arbitrary code: a pickle names functions to call while it is
read. The file that "Neural Networks and Deep Learning" ships is a pickled tuple of
NumPy arrays, so the restricted unpickler below admits exactly the globals a NumPy
array needs (``_reconstruct``, ``ndarray``, ``dtype``, plus ``scalar``, protocol 5's
``_frombuffer`` and the ``_codecs.encode(str, "latin1")`` that protocol-2 pickles use
for bytes) and refuses anything else with an UnsafePickleError naming what the file
asked for. Object arrays are refused too, since they would smuggle arbitrary Python
objects through.

Admitted globals are still dangerous as NumPy defines them: ``_reconstruct(ndarray,
shape, dtype)`` and an array's ``__setstate__`` allocate whatever shape the file
names (a 100-byte pickle could ask for 58 GiB), and ``dtype.__setstate__`` crashes
the interpreter on some states. So each admitted name maps to a stand-in that checks
its arguments first and then calls NumPy with values NumPy itself would write:

* dtypes are plain numeric types (bool, integers, floats, complex) built from a
  type code; their pickled state may set the byte order and nothing else;
* every array is checked against ``max_elements`` (per array) and ``max_bytes``
  (per array and for the whole file) before anything is allocated, and its data
  must have exactly the announced size;
* the stream is read by Python's pure-Python unpickler (``pickle._Unpickler``), not
  the C one, which sizes its memo table by the largest index a file names (a
  12-byte pickle makes it clear 23 GB) and, reading from a file, fails with a
  MemoryError after freeing a buffer still in use when an array's bytes cross a
  frame boundary; for the few large strings of an array pickle it is as fast;
* a gzip-compressed file is decompressed in a stream that stops at ``max_bytes``.
"""

from __future__ import annotations

import codecs
import gzip
import io
import math
import os
import pickle
import struct
import warnings
import weakref
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from descend.errors import DataError, DescendError, UnsafePickleError

try:  # NumPy >= 2 moved the implementation to numpy._core
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core.multiarray import _reconstruct

MAX_ELEMENTS = 1 << 28  # per array; MNIST's largest array (50,000 x 784) has 39.2 million
MAX_BYTES = 1 << 30  # per array, for all arrays of one file, and for the decompressed pickle


NUMERIC_KINDS = "biufc"  # bool, signed and unsigned integers, floats, complex


def _simple_dtype(spec: Any) -> np.dtype:
    """A plain numeric dtype from a type code (``'f4'``, ``'<i8'``, ``b'b'``) or a dtype the unpickler built."""
    if isinstance(spec, _Dtype):
        return spec.dtype
    if isinstance(spec, bytes):
        spec = spec.decode("latin1")
    if not isinstance(spec, str) or len(spec) > 8:
        raise DataError(f"an array's dtype {spec!r:.40} is not a type code such as 'f4'")
    try:
        dtype = np.dtype(spec)
    except (TypeError, ValueError, SyntaxError) as exc:
        raise DataError(f"an array's dtype {spec!r} is not valid ({exc})") from None
    if dtype.kind == "O":
        raise UnsafePickleError("the file holds an object array; only numeric arrays are admitted")
    if dtype.kind not in NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise DataError(f"dtype {dtype} is not a plain numeric type; only numeric arrays are admitted")
    return dtype


def _as_bytes(data: Any) -> bytes:
    """Array bytes as pickled: bytes, or (Python 2 pickles read with latin1) a str."""
    if isinstance(data, str):
        return data.encode("latin1")
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    raise DataError(f"an array's data is a {type(data).__name__}, not bytes")


class _Dtype:
    """What ``numpy.dtype(code, align, copy)`` gives inside a pickle: a plain numeric
    dtype whose pickled state may set its byte order and nothing else.

    NumPy's own ``dtype.__setstate__`` accepts states it then mishandles (NumPy 2.4
    crashes the interpreter on ``(3, 'N', None, -1, -1, 0)``), so states never reach it.
    """

    __slots__ = ("dtype",)

    def __init__(self, dtype: np.dtype):
        self.dtype = dtype

    def __setstate__(self, state: Any) -> None:
        # NumPy pickles a plain dtype's state as (3, byteorder, None, None, None, -1, -1, 0).
        if not (
            isinstance(state, tuple) and len(state) == 8 and type(state[0]) is int and state[0] in (3, 4)
            and isinstance(state[1], str) and state[1] in ("<", ">", "|", "=")
            and all(s is None for s in state[2:5]) and all(type(s) is int for s in state[5:8])
        ):
            raise DataError("a dtype's pickled state is not that of a plain numeric type")
        if state[1] in "<>":
            self.dtype = self.dtype.newbyteorder(state[1])


class _Array(np.ndarray):
    """An ndarray whose ``__setstate__`` checks the state it is given before NumPy
    allocates anything.

    Only the unpickler creates these; :func:`load_numpy_pickle` returns plain ndarrays.
    As in NumPy's own pickles, a state is set once, on an array fresh from
    ``_reconstruct``; an array built by ``_frombuffer`` already holds its data.
    """

    _fresh = False

    def __setstate__(self, state: Any) -> None:
        unpickler = self._unpickler() if self._fresh else None
        if unpickler is None:
            raise DataError("the file sets the state of an array twice, or of an array built from a buffer")
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise DataError("an array's pickled state is malformed")
        shape, dtype, fortran, data = state[-4:]
        dtype = _simple_dtype(dtype)
        nbytes = unpickler.admit(shape, dtype)
        data = _as_bytes(data)
        if len(data) != nbytes or not isinstance(fortran, (bool, int)):
            raise DataError(f"an array of shape {shape} and dtype {dtype} comes with {len(data)} bytes of data, not {nbytes}")
        self._fresh = False
        super().__setstate__((shape, dtype, bool(fortran), data))


class _Ndarray:
    """Stands for ``numpy.ndarray`` in a pickle: the class ``_reconstruct`` is given.

    Calling it, as ``ndarray(shape, dtype)``, would allocate unchecked; refused.
    """

    __slots__ = ()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise UnsafePickleError("refused to call numpy.ndarray directly; NumPy's own pickles never do")


_NDARRAY = _Ndarray()


class NumpyOnlyUnpickler(pickle._Unpickler):  # the pure-Python unpickler, see the module docstring
    """An unpickler that builds NumPy arrays of plain numeric types, tuples, lists,
    dicts, numbers and strings only, within ``max_elements`` per array and
    ``max_bytes`` per array and in total."""

    def __init__(self, file: BinaryIO, *, max_elements: int = MAX_ELEMENTS, max_bytes: int = MAX_BYTES, **kwargs: Any):
        super().__init__(file, **kwargs)
        self.max_elements = max_elements
        self.max_bytes = max_bytes
        self.allocated = 0
        self._allowed = {
            ("numpy", "ndarray"): _NDARRAY,
            ("numpy", "dtype"): self._dtype,
            # Protocol-2 pickles written by Python 3 spell array bytes as _codecs.encode(str, "latin1").
            ("_codecs", "encode"): self._encode,
        }
        for core in ("numpy.core", "numpy._core"):
            self._allowed[(f"{core}.multiarray", "_reconstruct")] = self._reconstruct
            self._allowed[(f"{core}.multiarray", "scalar")] = self._scalar
            self._allowed[(f"{core}.numeric", "_frombuffer")] = self._frombuffer  # protocol 5

    def load_bytearray8(self) -> None:
        # pickle.py allocates the announced length before reading; read the bytes instead
        (n,) = struct.unpack("<Q", self.read(8))
        data = self.read(n) if n <= self.max_bytes else b""
        if len(data) != n:
            raise DataError(f"a BYTEARRAY8 of {n} bytes is truncated or beyond the limit of {self.max_bytes} bytes")
        self.append(bytearray(data))

    dispatch = {**pickle._Unpickler.dispatch, pickle.BYTEARRAY8[0]: load_bytearray8}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refused to unpickle {module}.{name}: only NumPy arrays are admitted. "
                "The file is not a plain pickle of arrays (it may be malicious); "
                "use the IDX files of the data set instead"
            ) from None

    def admit(self, shape: Any, dtype: np.dtype) -> int:
        """Check an array of ``shape`` and ``dtype`` against the limits, count it, return its bytes."""
        if not isinstance(shape, tuple) or not all(type(d) is int and d >= 0 for d in shape):
            raise DataError(f"an array's shape {shape!r:.60} is not a tuple of non-negative integers")
        elements = math.prod(shape)
        nbytes = elements * dtype.itemsize
        if elements > self.max_elements or nbytes > self.max_bytes or self.allocated + nbytes > self.max_bytes:
            raise DataError(
                f"the file asks for an array of shape {shape} and dtype {dtype} ({elements} elements, "
                f"{nbytes} bytes), beyond the limits of {self.max_elements} elements per array and "
                f"{self.max_bytes} bytes in all; it is corrupt or crafted (raise max_elements/max_bytes "
                "only for a file you trust)"
            )
        self.allocated += nbytes
        return nbytes

    def _dtype(self, spec: Any, align: Any = False, copy: Any = False) -> _Dtype:
        return _Dtype(_simple_dtype(spec))

    def _encode(self, obj: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
        if not isinstance(obj, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
            raise UnsafePickleError(f"refused _codecs.encode({type(obj).__name__}, {encoding!r:.20}): only latin1 strings are admitted")
        return codecs.encode(obj, "latin1")

    def _reconstruct(self, subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
        if subtype is not _NDARRAY:
            raise UnsafePickleError("refused to reconstruct an array of a class other than numpy.ndarray")
        dtype = _simple_dtype(dtype)
        self.admit(shape, dtype)
        array = _reconstruct(_Array, shape, dtype)
        array._unpickler = weakref.ref(self)  # a strong reference would keep the raw file alive
        array._fresh = True
        return array

    def _scalar(self, dtype: Any, data: Any = None) -> Any:
        dtype = _simple_dtype(dtype)
        data = _as_bytes(data)
        if len(data) != dtype.itemsize:
            raise DataError(f"a {dtype} scalar comes with {len(data)} bytes, not {dtype.itemsize}")
        return np.frombuffer(data, dtype)[0]

    def _frombuffer(self, buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
        dtype = _simple_dtype(dtype)
        nbytes = self.admit(shape, dtype)
        if not isinstance(buf, (bytes, bytearray)) or len(buf) != nbytes or order not in ("C", "F"):
            raise DataError(f"a protocol-5 array of shape {shape} and dtype {dtype} lacks its {nbytes} bytes of data")
        return np.frombuffer(buf, dtype).reshape(shape, order=order).view(_Array)


def _plain(obj: Any, name: str, depth: int = 0) -> Any:
    """``obj`` with every array a plain ndarray; refuses object arrays and absurd nesting."""
    if depth > 100:
        raise DataError(f"{name} nests containers more than 100 deep; it is not a pickle of arrays")
    if isinstance(obj, np.ndarray):
        return obj.view(np.ndarray) if type(obj) is not np.ndarray else obj
    if isinstance(obj, _Dtype):
        return obj.dtype
    if isinstance(obj, (tuple, list)):
        return type(obj)(_plain(item, name, depth + 1) for item in obj)
    if isinstance(obj, dict):
        return {k: _plain(v, name, depth + 1) for k, v in obj.items()}
    return obj


def _read(source: str | os.PathLike | BinaryIO, name: str, max_bytes: int) -> bytes:
    """The (gunzipped) bytes of ``source``, at most ``max_bytes`` of them."""
    try:
        f = source if hasattr(source, "read") else open(source, "rb")
    except OSError as exc:
        raise DataError(f"cannot read {name}: {exc.strerror or exc}") from None
    try:
        magic = f.read(2)
        f.seek(-len(magic), io.SEEK_CUR)
        stream = gzip.GzipFile(fileobj=f, mode="rb") if magic == b"\x1f\x8b" else f
        chunks, total = [], 0
        while total <= max_bytes:
            chunk = stream.read(min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{name} is not a valid gzip file ({exc}); download it again") from None
    finally:
        if f is not source:
            f.close()
    if total > max_bytes:
        raise DataError(f"{name} decompresses to more than {max_bytes} bytes; it is corrupt or crafted (raise max_bytes only for a file you trust)")
    return b"".join(chunks)


def load_numpy_pickle(
    source: str | os.PathLike | BinaryIO, max_elements: int = MAX_ELEMENTS, max_bytes: int = MAX_BYTES
) -> Any:
    """Load a (possibly gzip-compressed) pickle that may contain only NumPy arrays.

    ``source`` is a path or a binary file object. Pickles written by Python 2 (as
    Nielsen's is) are read with ``encoding="latin1"``, which is how NumPy array bytes
    survive the Python 2 to 3 move. ``max_elements`` bounds each array,
    ``max_bytes`` each array, all arrays together and the decompressed pickle.
    """
    name = str(getattr(source, "name", "<stream>")) if hasattr(source, "read") else str(Path(source))
    raw = _read(source, name, max_bytes)
    unpickler = NumpyOnlyUnpickler(io.BytesIO(raw), max_elements=max_elements, max_bytes=max_bytes, encoding="latin1")
    try:
        with warnings.catch_warnings():  # e.g. invalid escapes in a damaged protocol-0 string
            warnings.simplefilter("ignore")
            obj = unpickler.load()
    except DescendError as exc:
        raise type(exc)(f"{name}: {exc}") from None
    except MemoryError:
        raise
    except Exception as exc:  # any malformed stream: truncated, wrong opcodes, ...
        raise DataError(f"{name} is not a readable pickle ({type(exc).__name__}: {exc})") from None
    return _plain(obj, name)
