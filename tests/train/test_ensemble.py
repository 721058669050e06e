from __future__ import annotations

import pytest
import torch

from descend.errors import ConfigError, ShapeError
from descend.train.ensemble import average_probabilities, combine, majority_vote


def logits_from_probs(p):
    return torch.tensor(p, dtype=torch.float64).log()


def test_majority_vote_and_average_on_hand_made_predictions():
    # 3 members, 2 examples, 3 classes
    members = logits_from_probs([
        [[0.6, 0.3, 0.1], [0.1, 0.2, 0.7]],
        [[0.5, 0.4, 0.1], [0.4, 0.5, 0.1]],
        [[0.1, 0.8, 0.1], [0.1, 0.55, 0.35]],
    ])
    # example 0: votes 0, 0, 1 -> 0;  average (0.4, 0.5, 0.1) -> 1
    # example 1: votes 2, 1, 1 -> 1;  average (0.2, 0.4167, 0.3833) -> 1
    assert majority_vote(members).tolist() == [0, 1]
    assert combine(members, "average").tolist() == [1, 1]
    torch.testing.assert_close(average_probabilities(members)[0], torch.tensor([0.4, 0.5, 0.1], dtype=torch.float64))


def test_ties_are_broken_by_average_probability():
    members = logits_from_probs([[[0.9, 0.1]], [[0.4, 0.6]]])  # one vote each
    assert majority_vote(members).tolist() == [0]  # average (0.65, 0.35)


def test_bad_shapes_and_methods():
    with pytest.raises(ShapeError):
        majority_vote(torch.zeros(3, 4))
    with pytest.raises(ConfigError):
        combine(torch.zeros(2, 3, 4), "median")
