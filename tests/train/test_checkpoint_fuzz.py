"""Fuzzing the checkpoint reader: every mutated checkpoint file ends in a CheckpointError or
a load that passed the digest, the skeleton and the Trainer's schema and template.

The mutators live in ``tests/fuzz_inputs.py`` (long runs reuse them). The share of inputs
past the first check (safetensors could parse the file) is printed with ``-s``.
"""

from __future__ import annotations

import collections
import logging
import random

from hypothesis import given, settings
from hypothesis import strategies as st

import fuzz_inputs as fi

OUTCOMES: collections.Counter = collections.Counter()


def test_the_base_checkpoint_loads(tmp_path):
    assert fi.try_checkpoint(fi.valid_checkpoint(), tmp_path) == "valid"


@given(seed=st.integers(0, 2**32 - 1))
@settings(max_examples=200, deadline=None, database=None, derandomize=True)
def test_mutated_checkpoints_end_in_a_checkpoint_error_or_a_checked_load(tmp_path_factory, seed):
    logging.getLogger("descend.train.checkpoint").setLevel(logging.ERROR)  # old-format warnings
    mutated = fi.mutate_checkpoint(fi.valid_checkpoint(), random.Random(seed))
    OUTCOMES[fi.try_checkpoint(mutated, tmp_path_factory.mktemp("c"))] += 1


def test_most_mutated_checkpoints_get_past_the_parser():
    fi.check_most_get_past_the_parser(OUTCOMES, "checkpoint")
