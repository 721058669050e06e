"""Reading Nielsen's ``mnist.pkl.gz`` without trusting it.

``pickle.load`` can run arbitrary code: a pickle names functions to call while it is
read. The file that "Neural Networks and Deep Learning" ships is a pickled tuple of
NumPy arrays, so the restricted unpickler below admits exactly the globals a NumPy
array needs (``_reconstruct``, ``ndarray``, ``dtype``, plus ``scalar``, protocol 5's
``_frombuffer`` and the ``_codecs.encode(str, "latin1")`` that protocol-2 pickles use
for bytes) and refuses anything else with an UnsafePickleError naming what the file
asked for. Object arrays are refused too, since they would smuggle arbitrary Python
objects through.

Admitted globals can still ask for memory: ``_reconstruct(ndarray, shape, dtype)``
and an array's ``__setstate__`` allocate whatever shape the file names, so a
100-byte pickle could ask for 58 GiB. Every such request is checked against
``max_elements`` (per array) and ``max_bytes`` (per array and for the whole file)
before anything is allocated, and a gzip-compressed file is decompressed in a
stream that stops at ``max_bytes``.
"""

from __future__ import annotations

import codecs
import gzip
import io
import math
import os
import pickle
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from descend.errors import DataError, DescendError, UnsafePickleError

try:  # NumPy >= 2 moved the implementation to numpy._core
    from numpy._core.multiarray import _reconstruct, scalar
    from numpy._core.numeric import _frombuffer
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core.multiarray import _reconstruct, scalar
    from numpy.core.numeric import _frombuffer

MAX_ELEMENTS = 1 << 28  # per array; MNIST's largest array (50,000 x 784) has 39.2 million
MAX_BYTES = 1 << 30  # per array, for all arrays of one file, and for the decompressed pickle


class _Array(np.ndarray):
    """An ndarray whose ``__setstate__`` checks the size it is asked for before allocating.

    Only the unpickler creates these; :func:`load_numpy_pickle` returns plain ndarrays.
    """

    _unpickler: "NumpyOnlyUnpickler"

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise DataError("an array's pickled state is malformed")
        shape, dtype = state[-4], state[-3]
        self._unpickler.admit(shape, dtype)
        super().__setstate__(state)


class _Ndarray:
    """Stands for ``numpy.ndarray`` in a pickle: the class ``_reconstruct`` is given.

    Calling it, as ``ndarray(shape, dtype)``, would allocate unchecked; refused.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise UnsafePickleError("refused to call numpy.ndarray directly; NumPy's own pickles never do")


_NDARRAY = _Ndarray()


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that builds NumPy arrays, tuples, lists, numbers and strings only,
    within ``max_elements`` per array and ``max_bytes`` per array and in total."""

    def __init__(self, file: BinaryIO, *, max_elements: int = MAX_ELEMENTS, max_bytes: int = MAX_BYTES, **kwargs: Any):
        super().__init__(file, **kwargs)
        self.max_elements = max_elements
        self.max_bytes = max_bytes
        self.allocated = 0
        self._allowed = {
            ("numpy", "ndarray"): _NDARRAY,
            ("numpy", "dtype"): np.dtype,
            # Protocol-2 pickles written by Python 3 spell array bytes as _codecs.encode(str, "latin1").
            ("_codecs", "encode"): _latin1,
        }
        for core in ("numpy.core", "numpy._core"):
            self._allowed[(f"{core}.multiarray", "_reconstruct")] = self._reconstruct
            self._allowed[(f"{core}.multiarray", "scalar")] = self._scalar
            self._allowed[(f"{core}.numeric", "_frombuffer")] = self._frombuffer  # protocol 5

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refused to unpickle {module}.{name}: only NumPy arrays are admitted. "
                "The file is not a plain pickle of arrays (it may be malicious); "
                "use the IDX files of the data set instead"
            ) from None

    def admit(self, shape: Any, dtype: Any) -> np.dtype:
        """Check an array of ``shape`` and ``dtype`` against the limits, and count it."""
        if not isinstance(dtype, np.dtype):
            raise DataError(f"an array's dtype is {type(dtype).__name__}, not a NumPy dtype")
        if dtype.hasobject:
            raise UnsafePickleError("the file holds an object array; only numeric arrays are admitted")
        if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise DataError(f"an array's shape {shape!r} is not a tuple of non-negative integers")
        elements = math.prod(shape) * math.prod(dtype.shape)
        nbytes = math.prod(shape) * dtype.itemsize
        if elements > self.max_elements or nbytes > self.max_bytes or self.allocated + nbytes > self.max_bytes:
            raise DataError(
                f"the file asks for an array of shape {shape} and dtype {dtype} ({elements} elements, "
                f"{nbytes} bytes), beyond the limits of {self.max_elements} elements per array and "
                f"{self.max_bytes} bytes in all; it is corrupt or crafted (raise max_elements/max_bytes "
                "only for a file you trust)"
            )
        self.allocated += nbytes
        return dtype

    def _reconstruct(self, subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
        if subtype is not _NDARRAY:
            raise UnsafePickleError("refused to reconstruct an array of a class other than numpy.ndarray")
        try:
            dtype = np.dtype(dtype)
        except (TypeError, ValueError) as exc:
            raise DataError(f"an array's dtype {dtype!r} is not valid ({exc})") from None
        array = _reconstruct(_Array, shape, self.admit(shape, dtype))
        array._unpickler = self
        return array

    def _scalar(self, dtype: Any, obj: Any = None) -> Any:
        self.admit((), dtype)
        return scalar(dtype, obj)

    def _frombuffer(self, buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
        if not isinstance(buf, (bytes, bytearray)):
            raise DataError("a protocol-5 array has no in-band data")
        self.admit(shape, dtype)
        array = _frombuffer(buf, dtype, shape, order).view(_Array)
        array._unpickler = self
        return array


def _latin1(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise UnsafePickleError(f"refused _codecs.encode({type(obj).__name__}, {encoding!r}): only latin1 strings are admitted")
    return codecs.encode(obj, "latin1")


def _plain(obj: Any, name: str, depth: int = 0) -> Any:
    """``obj`` with every array a plain ndarray; refuses object arrays and absurd nesting."""
    if depth > 100:
        raise DataError(f"{name} nests containers more than 100 deep; it is not a pickle of arrays")
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise UnsafePickleError(f"{name} holds an object array; only numeric arrays are admitted")
        return obj.view(np.ndarray) if type(obj) is not np.ndarray else obj
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
        obj = unpickler.load()
    except DescendError as exc:
        raise type(exc)(f"{name}: {exc}") from None
    except MemoryError:
        raise
    except Exception as exc:  # any malformed stream: truncated, wrong opcodes, ...
        raise DataError(f"{name} is not a readable pickle ({type(exc).__name__}: {exc})") from None
    return _plain(obj, name)
