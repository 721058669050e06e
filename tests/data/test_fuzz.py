"""Fuzzing the IDX reader and the restricted unpickler: every input, however damaged,
ends in a valid load or a ``descend.errors`` exception, never another exception.

Inputs are valid files mutated the way real files break and the way an attacker
would write them: header fields set to extreme values, bytes flipped, inserted or
dropped, truncation, gzip framing damaged, names and type codes swapped in a pickle.
A fixed, small number of examples keeps this to seconds; ``benchmarks/fuzz.py`` runs
the long version. Each test also counts the inputs that got past the parser's first
check, so mutations that are all rejected at the first byte would fail the test.
"""

from __future__ import annotations

import gzip
import io
import pickle
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from descend.data.idx import read_idx
from descend.data.safe_pickle import load_numpy_pickle
from descend.errors import DescendError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fuzz_inputs import idx_header_ok, pickle_opcodes_ok  # noqa: E402

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
EXTREMES = [0, 1, 3, 4, 5, 0x7F, 0x80, 0xFF, 784, 60_000, 20_000_000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]
IDX_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding, written out independently of descend.data.idx.write_idx."""
    header = bytes([0, 0, IDX_CODES[array.dtype.type], array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


mutation = st.tuples(
    st.sampled_from(["flip", "byte", "int", "insert", "delete", "truncate", "append"]),
    st.one_of(st.integers(0, 40), st.integers(0, 1 << 16)),  # mostly the header
    st.sampled_from(EXTREMES),
)


def mutate(data: bytes, mutations: list) -> bytes:
    out = bytearray(data)
    for op, position, value in mutations:
        pos = position % (len(out) + 1)
        if op == "flip" and pos < len(out):
            out[pos] ^= 1 << (value % 8)
        elif op == "byte" and pos < len(out):
            out[pos] = value & 0xFF
        elif op == "int":
            out[pos : pos + 4] = value.to_bytes(4, "big")
        elif op == "insert":
            out[pos:pos] = value.to_bytes(4, "big")[: 1 + value % 4]
        elif op == "delete":
            del out[pos : pos + 1 + value % 4]
        elif op == "truncate":
            del out[pos:]
        elif op == "append":
            out += bytes(value % 64)
    return bytes(out)


def damage(raw: bytes, compressed: bool, in_framing: bool, mutations: list) -> bytes:
    """Mutate the content (then gzip it), or gzip it and mutate the gzip framing and stream."""
    if not compressed:
        return mutate(raw, mutations)
    if in_framing:
        return mutate(gzip.compress(raw, mtime=0), mutations)
    return gzip.compress(mutate(raw, mutations), mtime=0)


def run_and_classify(parse, data: bytes, outcomes: Counter) -> None:
    try:
        result = parse(data)
    except DescendError as exc:
        outcomes[type(exc).__name__] += 1
        return
    outcomes["valid"] += 1
    assert result is not None


# ------------------------------------------------------------------ IDX
idx_arrays = st.sampled_from(sorted(IDX_CODES, key=str)).flatmap(
    lambda dtype: st.lists(st.integers(0, 5), min_size=1, max_size=4).flatmap(
        lambda shape: st.binary(min_size=int(np.prod(shape)) * np.dtype(dtype).itemsize,
                                max_size=int(np.prod(shape)) * np.dtype(dtype).itemsize).map(
            lambda b: np.frombuffer(b, dtype).reshape(shape))))


def test_the_idx_reader_survives_damaged_files():
    outcomes, past_first = Counter(), Counter()

    @FUZZ
    @given(array=idx_arrays, compressed=st.booleans(), in_framing=st.booleans(),
           mutations=st.lists(mutation, min_size=1, max_size=3))
    def check(array, compressed, in_framing, mutations):
        data = damage(idx_bytes(array), compressed, in_framing, mutations)
        past_first[idx_header_ok(data)] += 1
        run_and_classify(lambda d: read_idx(io.BytesIO(d)), data, outcomes)

    check()
    total = sum(outcomes.values())
    share = past_first[True] / total
    print(f"\nIDX fuzz: {total} inputs, {share:.0%} past the header check, outcomes {dict(outcomes)}")
    assert share > 0.3 and outcomes["valid"] > 0 and outcomes["DataError"] > 0


# ------------------------------------------------------------------ restricted unpickler
def _pickles() -> list[bytes]:
    rng = np.random.default_rng(0)
    nielsen_like = tuple((rng.random((n, 16), dtype=np.float32), rng.integers(0, 10, n)) for n in (3, 2, 2))
    objects = [nielsen_like, np.arange(6, dtype=">i4").reshape(2, 3), [np.float64(1.5), np.zeros(0, np.uint8)],
               {"a": np.array([True, False])}, np.ones((2, 2), np.complex64)]
    return [pickle.dumps(obj, protocol=p) for obj in objects for p in (0, 2, 4, 5)]


PICKLES = _pickles()
TOKENS = [b"f4", b"i8", b"<", b"O", b"V8", b"U3", b"ndarray", b"dtype", b"_reconstruct", b"scalar", b"system", b"latin1"]


def test_the_restricted_unpickler_survives_damaged_files():
    outcomes, past_first = Counter(), Counter()

    @FUZZ
    @given(sample=st.sampled_from(PICKLES), compressed=st.booleans(), in_framing=st.booleans(),
           swaps=st.lists(st.tuples(st.sampled_from(TOKENS), st.sampled_from(TOKENS)), max_size=2),
           mutations=st.lists(mutation, max_size=3))
    def check(sample, compressed, in_framing, swaps, mutations):
        for old, new in swaps:
            sample = sample.replace(old, new, 1)
        data = damage(sample, compressed, in_framing, mutations)
        past_first[pickle_opcodes_ok(data)] += 1
        run_and_classify(lambda d: load_numpy_pickle(io.BytesIO(d)), data, outcomes)

    check()
    total = sum(outcomes.values())
    share = past_first[True] / total
    print(f"\npickle fuzz: {total} inputs, {share:.0%} with a well-formed opcode stream, outcomes {dict(outcomes)}")
    assert share > 0.2 and outcomes["valid"] > 0 and outcomes["DataError"] > 0 and outcomes["UnsafePickleError"] > 0
