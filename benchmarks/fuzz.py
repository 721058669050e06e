"""Long fuzz runs of the parsers that read files descend did not write.

Each parser is an entry of ``PARSERS``: ``name -> (make, mutate, parse)``:

  make(rng)          a valid input (bytes), of the kinds the parser meets in practice;
  mutate(data, rng)  that input damaged the way real files are, and the way an attacker
                     would: header fields set to extreme values, bits flipped, bytes
                     inserted or dropped, truncation, gzip framing broken, files spliced;
  parse(data)        the parser's public entry point on those bytes.

Every input must end in a valid load or a ``descend.errors`` exception; anything else
(a raw ``ValueError``, ``MemoryError``, ...) is a bug and is listed with its input.
``FIRST_CHECKS`` optionally names, per parser, the first check an input must pass
(for IDX: gzip framing and the IDX header; for pickles: a well-formed opcode stream);
the share of inputs past it shows how deep the mutations reach. To fuzz another
parser, add an entry.

The process runs under an address-space limit (``--memory-gb``), so an input that
makes a parser allocate gigabytes shows up as a MemoryError instead of swapping.

    python benchmarks/fuzz.py --n 100000 --out bench-results/fuzz.json
    python benchmarks/fuzz.py --n 2000 --parsers idx
"""

from __future__ import annotations

import argparse
import gzip
import io
import logging
import pickle
import pickletools
import random
import resource
import sys
import tempfile
import time
import tomllib
import traceback
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np

from descend.data import BUNDLED
from descend.data.idx import read_idx
from descend.data.safe_pickle import load_numpy_pickle
from descend.errors import DescendError
from descend.io import atomic_write_json

INTERESTING_INTS = (0, 1, 2, 3, 4, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 784, 10_000, 60_000,
                    20_000_000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)


# ------------------------------------------------------------------ generic byte mutations
def _flip(data: bytearray, rng: random.Random) -> None:
    if data:
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)


def _set_byte(data: bytearray, rng: random.Random) -> None:
    if data:
        data[rng.randrange(len(data))] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))


def _set_int(data: bytearray, rng: random.Random, header: int = 64) -> None:
    """Overwrite 1, 2 or 4 bytes, mostly within the first ``header`` bytes, with an extreme value."""
    if not data:
        return
    width = rng.choice((1, 2, 4))
    pos = rng.randrange(min(len(data), header) if rng.random() < 0.8 else len(data))
    value = rng.choice(INTERESTING_INTS) % (1 << (8 * width))
    data[pos : pos + width] = value.to_bytes(width, rng.choice(("big", "little")))


def _insert(data: bytearray, rng: random.Random) -> None:
    pos = rng.randrange(len(data) + 1)
    data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.choice((1, 1, 2, 4, 16))))


def _delete(data: bytearray, rng: random.Random) -> None:
    if data:
        pos = rng.randrange(len(data))
        del data[pos : pos + rng.choice((1, 1, 2, 4, 16))]


def _truncate(data: bytearray, rng: random.Random) -> None:
    if data:
        del data[rng.randrange(len(data)) :]


def _extend(data: bytearray, rng: random.Random) -> None:
    data += rng.choice((b"\x00" * rng.randrange(1, 64), bytes(rng.randrange(256) for _ in range(8)), bytes(data[:32])))


BYTE_MUTATIONS = (_flip, _set_byte, _set_int, _insert, _delete, _truncate, _extend)


def mutate_bytes(data: bytes, rng: random.Random, extra: tuple = ()) -> bytes:
    out = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        rng.choice(BYTE_MUTATIONS + extra)(out, rng)
    return bytes(out)


def mutate_gzipped(data: bytes, rng: random.Random, mutate_content: Callable[[bytes, random.Random], bytes]) -> bytes:
    """Damage gzip input either inside (decompress, mutate, recompress) or in its framing."""
    if data[:2] != b"\x1f\x8b":
        return mutate_content(data, rng)
    choice = rng.random()
    if choice < 0.5:  # content damaged, framing intact: reaches the parser's own checks
        return gzip.compress(mutate_content(gzip.decompress(data), rng), compresslevel=rng.choice((1, 6, 9)), mtime=0)
    out = bytearray(data)
    if choice < 0.6:  # header flags (FTEXT, FHCRC, FEXTRA, FNAME, FCOMMENT) and method
        out[rng.choice((2, 3))] = rng.randrange(256)
    elif choice < 0.7:  # trailer: CRC-32 or ISIZE
        pos = len(out) - rng.choice((8, 4))
        out[pos : pos + 4] = rng.choice(INTERESTING_INTS).to_bytes(4, "little")
    elif choice < 0.8:  # a second gzip member, or garbage, after the first
        out += rng.choice((gzip.compress(out[: rng.randrange(1, 64)]), b"\x00" * 8, bytes(out[:10])))
    else:  # the compressed bytes themselves
        return mutate_bytes(data, rng)
    return bytes(out)


# ------------------------------------------------------------------ IDX
IDX_DTYPES = (np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64)
_REAL_IDX = [(BUNDLED / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes()]


def make_idx(rng: random.Random) -> bytes:
    """A small IDX file (an MNIST-like labels or images file, or any type and rank), raw or gzip."""
    if rng.random() < 0.02:
        return rng.choice(_REAL_IDX)
    kind = rng.random()
    if kind < 0.3:
        array = np.array([rng.randrange(10) for _ in range(rng.randrange(1, 40))], np.uint8)
    elif kind < 0.6:
        array = np.frombuffer(rng.randbytes(rng.randrange(1, 4) * 28 * 28), np.uint8).reshape(-1, 28, 28)
    else:
        dtype = np.dtype(rng.choice(IDX_DTYPES))
        shape = tuple(rng.randrange(0, 5) for _ in range(rng.randrange(1, 5)))
        array = np.frombuffer(rng.randbytes(int(np.prod(shape)) * dtype.itemsize), dtype).reshape(shape)
    raw = _idx_bytes(array)
    return gzip.compress(raw, compresslevel=rng.choice((1, 6, 9)), mtime=0) if rng.random() < 0.5 else raw


def _idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding: 00 00 type ndim, big-endian uint32 sizes, big-endian elements."""
    code = {np.dtype(t): c for t, c in zip(IDX_DTYPES, (0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E))}[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def mutate_idx(data: bytes, rng: random.Random) -> bytes:
    return mutate_gzipped(data, rng, lambda raw, r: mutate_bytes(raw, r))


def parse_idx(data: bytes) -> None:
    read_idx(io.BytesIO(data))


# ------------------------------------------------------------------ restricted unpickler
PICKLE_TOKENS = (b"f4", b"<f4", b"f8", b"i8", b"u1", b"b", b"O", b"V9", b"ndarray", b"dtype", b"_reconstruct",
                 b"scalar", b"numpy", b"numpy.core.multiarray", b"os", b"system", b"latin1", b"encode")


def make_pickle(rng: random.Random) -> bytes:
    """A pickle of NumPy arrays like Nielsen's ((x, y), (x, y), (x, y)) or simpler, any protocol."""
    def pair(n: int) -> tuple:
        x = np.frombuffer(rng.randbytes(n * 16 * 4), np.float32).reshape(n, 16)
        return (np.nan_to_num(x), np.array([rng.randrange(10) for _ in range(n)], np.int64))

    kind = rng.random()
    if kind < 0.4:
        obj = (pair(rng.randrange(1, 4)), pair(rng.randrange(1, 3)), pair(rng.randrange(1, 3)))
    elif kind < 0.7:
        dtype = np.dtype(rng.choice(IDX_DTYPES + (np.bool_, np.complex64, ">i4")))
        shape = tuple(rng.randrange(0, 4) for _ in range(rng.randrange(0, 3)))
        obj = np.frombuffer(rng.randbytes(int(np.prod(shape)) * dtype.itemsize), dtype).reshape(shape)
    else:
        obj = [np.float64(rng.random()), (1, "a", b"b"), {"k": np.arange(rng.randrange(5))}]
    data = pickle.dumps(obj, protocol=rng.choice((0, 1, 2, 2, 2, 4, 5)))
    return gzip.compress(data, mtime=0) if rng.random() < 0.3 else data


def _token(data: bytearray, rng: random.Random) -> None:
    """Swap a name or dtype code in the stream for another (a global, 'O', a huge 'V' type, ...)."""
    old = rng.choice(PICKLE_TOKENS)
    pos = data.find(old)
    if pos >= 0:
        data[pos : pos + len(old)] = rng.choice(PICKLE_TOKENS)


def _opcode_arg(data: bytearray, rng: random.Random) -> None:
    """Set the argument of one opcode (an integer of a shape, a length) to an extreme value."""
    try:
        ops = [(pos, op) for op, _, pos in pickletools.genops(bytes(data)) if op.arg is not None]
    except Exception:
        return _set_int(data, rng)
    if ops:
        pos, op = rng.choice(ops)
        width = {1: 1, 2: 2, 4: 4, 8: 8}.get(getattr(op.arg, "n", 0), 4)
        value = rng.choice(INTERESTING_INTS) % (1 << (8 * width))
        data[pos + 1 : pos + 1 + width] = value.to_bytes(width, "little")


def mutate_pickle(data: bytes, rng: random.Random) -> bytes:
    return mutate_gzipped(data, rng, lambda raw, r: mutate_bytes(raw, r, (_token, _opcode_arg, _opcode_arg)))


def parse_pickle(data: bytes) -> None:
    load_numpy_pickle(io.BytesIO(data))


# ------------------------------------------------------------------ config TOML and checkpoints
# The generators and mutators of the test suite's fuzz tests (tests/fuzz_inputs.py), run longer.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import fuzz_inputs  # noqa: E402

_SCRATCH = Path(tempfile.mkdtemp(prefix="descend-fuzz-"))
_CONFIGS = [data for _, data in fuzz_inputs.valid_configs()]
_CHECKPOINT = None


def make_config(rng: random.Random) -> bytes:
    return rng.choice(_CONFIGS)


def parse_config(data: bytes) -> str:
    return fuzz_inputs.try_config(data, _SCRATCH, saved=False)


def toml_ok(data: bytes) -> bool:
    try:
        tomllib.loads(data.decode("utf-8"))
        return True
    except Exception:
        return False


def make_checkpoint(rng: random.Random) -> bytes:
    global _CHECKPOINT
    if _CHECKPOINT is None:
        _CHECKPOINT = fuzz_inputs.valid_checkpoint()
    return _CHECKPOINT


def parse_checkpoint(data: bytes) -> str:
    return fuzz_inputs.try_checkpoint(data, _SCRATCH)


def safetensors_ok(data: bytes) -> bool:
    try:
        fuzz_inputs.split_safetensors(data)
        return True
    except Exception:
        return False


PARSERS: dict[str, tuple[Callable, Callable, Callable]] = {
    "idx": (make_idx, mutate_idx, parse_idx),
    "numpy-pickle": (make_pickle, mutate_pickle, parse_pickle),
    "config-toml": (make_config, fuzz_inputs.mutate_config, parse_config),
    "checkpoint": (make_checkpoint, fuzz_inputs.mutate_checkpoint, parse_checkpoint),
}
FIRST_CHECKS: dict[str, tuple[str, Callable[[bytes], bool]]] = {
    "idx": ("gzip framing + IDX header", fuzz_inputs.idx_header_ok),
    "numpy-pickle": ("well-formed opcode stream", fuzz_inputs.pickle_opcodes_ok),
    "config-toml": ("UTF-8 TOML that parses", toml_ok),
    "checkpoint": ("safetensors header that parses", safetensors_ok),
}


def fuzz(name: str, n: int, seed: int) -> dict:
    make, mutate, parse = PARSERS[name]
    rng = random.Random(seed)
    outcomes: Counter = Counter()
    past_first, bugs = 0, []
    first = FIRST_CHECKS.get(name)
    start = time.perf_counter()
    for i in range(n):
        data = make(rng)
        if rng.random() < 0.95:  # a few valid inputs keep the valid path exercised
            data = mutate(data, rng)
        if first is not None:
            past_first += first[1](data)
        try:
            stage = parse(data)  # None or "valid"; the test suite's try_* report "parse" / "check" refusals
            outcomes["valid load" if stage in (None, "valid") else f"DescendError at {stage}"] += 1
        except DescendError as exc:
            outcomes[type(exc).__name__] += 1
        except BaseException as exc:  # noqa: BLE001 - every other exception is a finding
            if isinstance(exc, KeyboardInterrupt):
                raise
            outcomes[f"BUG {type(exc).__name__}"] += 1
            if len(bugs) < 20:
                bugs.append({"input": data.hex()[:4096], "exception": repr(exc)[:500],
                             "traceback": traceback.format_exc()[-2000:]})
    return {
        "parser": name,
        "inputs": n,
        "seed": seed,
        "first_check": first[0] if first else None,
        "past_first_check": past_first / n if first else None,
        "outcomes": dict(outcomes.most_common()),
        "bugs": bugs,
        "seconds": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="inputs per parser")
    parser.add_argument("--parsers", nargs="*", default=list(PARSERS), choices=list(PARSERS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory-gb", type=float, default=8.0, help="address-space limit of this process")
    parser.add_argument("--out", type=Path, default=Path("bench-results/fuzz.json"))
    args = parser.parse_args(argv)

    logging.getLogger("descend").setLevel(logging.ERROR)  # old-format checkpoints warn once per load
    limit = int(args.memory_gb * (1 << 30))
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    rows = [fuzz(name, args.n, args.seed + i) for i, name in enumerate(args.parsers)]

    print(f"{'parser':<14}{'inputs':>9}  {'past first check':>18}  outcomes")
    for r in rows:
        share = f"{100 * r['past_first_check']:.1f}%" if r["past_first_check"] is not None else "-"
        outcomes = ", ".join(f"{k} {v}" for k, v in r["outcomes"].items())
        print(f"{r['parser']:<14}{r['inputs']:>9}  {share:>18}  {outcomes}")
    atomic_write_json(args.out, {"argv": sys.argv[1:], "results": rows})
    print(f"saved {args.out}")
    return 1 if any(r["bugs"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
