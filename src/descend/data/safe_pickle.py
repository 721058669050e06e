"""Reading Nielsen's ``mnist.pkl.gz`` without trusting it.

``pickle.load`` can run arbitrary code: a pickle names functions to call while it is
read. The file that "Neural Networks and Deep Learning" ships is a pickled tuple of
NumPy arrays, so the restricted unpickler below admits exactly the globals a
NumPy array needs (``_reconstruct``, ``ndarray``, ``dtype``, plus ``scalar``, protocol 5's
``_frombuffer`` and the ``_codecs.encode`` that protocol-2 pickles use for bytes) and refuses anything else
with an UnsafePickleError naming what the file asked for. Object arrays are refused
too, since they would smuggle arbitrary Python objects through.
"""

from __future__ import annotations

import codecs
import gzip
import io
import os
import pickle
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from descend.errors import DataError, UnsafePickleError

try:  # NumPy >= 2 moved the implementation to numpy._core
    from numpy._core.multiarray import _reconstruct, scalar
    from numpy._core.numeric import _frombuffer
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core.multiarray import _reconstruct, scalar
    from numpy.core.numeric import _frombuffer

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): scalar,
    ("numpy._core.multiarray", "scalar"): scalar,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,  # protocol 5
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # Protocol-2 pickles written by Python 3 spell array bytes as _codecs.encode(str, "latin1").
    ("_codecs", "encode"): codecs.encode,
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that builds NumPy arrays, tuples, lists, numbers and strings only."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refused to unpickle {module}.{name}: only NumPy arrays are admitted. "
                "The file is not a plain pickle of arrays (it may be malicious); "
                "use the IDX files of the data set instead"
            ) from None


def _check_arrays(obj: Any, name: str) -> None:
    if isinstance(obj, (tuple, list)):
        for item in obj:
            _check_arrays(item, name)
    elif isinstance(obj, np.ndarray) and obj.dtype.hasobject:
        raise UnsafePickleError(f"{name} holds an object array; only numeric arrays are admitted")


def load_numpy_pickle(path: str | os.PathLike) -> Any:
    """Load a (possibly gzip-compressed) pickle that may contain only NumPy arrays.

    Pickles written by Python 2 (as Nielsen's is) are read with ``encoding="latin1"``,
    which is how NumPy array bytes survive the Python 2 to 3 move.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    except (EOFError, zlib.error) as exc:
        raise DataError(f"{path} is not a valid gzip file ({exc}); download it again") from None
    try:
        obj = NumpyOnlyUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except UnsafePickleError:
        raise
    except Exception as exc:  # any malformed stream: truncated, wrong opcodes, ...
        raise DataError(f"{path} is not a readable pickle ({type(exc).__name__}: {exc})") from None
    _check_arrays(obj, str(path))
    return obj
