"""Fuzzing the config loader: every mutated file or ``--set`` ends in a ConfigError or a valid Config.

The mutators live in ``tests/fuzz_inputs.py`` (long runs reuse them). The share of
inputs that get past the first check (decoding and TOML parsing) is printed with ``-s``
and must be substantial, or the fuzzer would only exercise the parser.
"""

from __future__ import annotations

import collections
import random

from hypothesis import given, settings
from hypothesis import strategies as st

import fuzz_inputs as fi

BASES = fi.valid_configs()


def test_the_bases_are_valid(tmp_path):
    assert [fi.try_config(data, tmp_path, saved=name == "saved-default") for name, data in BASES] == ["valid"] * len(BASES)


OUTCOMES: collections.Counter = collections.Counter()


@given(seed=st.integers(0, 2**32 - 1), base=st.integers(0, len(BASES) - 1))
@settings(max_examples=150, deadline=None, database=None, derandomize=True)
def test_mutated_config_files_end_in_a_config_error_or_a_config(tmp_path_factory, seed, base):
    name, data = BASES[base]
    mutated = fi.mutate_config(data, random.Random(seed))
    OUTCOMES[fi.try_config(mutated, tmp_path_factory.mktemp("c"), saved=name == "saved-default")] += 1


def test_most_mutated_files_get_past_the_parser():
    fi.check_most_get_past_the_parser(OUTCOMES, "config")


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 3))
@settings(max_examples=150, deadline=None, database=None, derandomize=True)
def test_odd_overrides_end_in_a_config_error_or_a_config(seed, n):
    rng = random.Random(seed)
    assert fi.try_overrides([fi.random_override(rng) for _ in range(n)]) in ("valid", "check")
