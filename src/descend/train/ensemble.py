"""Combining the predictions of several networks (NNDL ch. 6; CS189 "ensembles").

Nielsen's final system is "an ensemble of 5 such nets by majority vote" (99.67%);
Deep Learning sec. 7.11 (model averaging) and CS189 average the members' predicted
probabilities instead. Both are here, on stacked member outputs of shape
(members, n, classes).
"""

from __future__ import annotations

import torch

from descend.errors import ConfigError, ShapeError


def _check(logits: torch.Tensor) -> None:
    if logits.ndim != 3 or logits.shape[0] < 1:
        raise ShapeError(f"expected member outputs of shape (members, n, classes), got {tuple(logits.shape)}")


def average_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """The mean over members of softmax(logits): shape (n, classes)."""
    _check(logits)
    return logits.softmax(dim=-1).mean(dim=0)


def majority_vote(logits: torch.Tensor) -> torch.Tensor:
    """The class most members predict (shape (n,)).

    Ties are broken by the averaged probabilities (the tied class that the members,
    on average, find most probable), so the vote is deterministic.
    """
    _check(logits)
    members, n, classes = logits.shape
    votes = torch.zeros(n, classes, dtype=torch.float64)
    votes.scatter_add_(1, logits.argmax(-1).T, torch.ones(n, members, dtype=torch.float64))
    # Probabilities are < 1, so they only decide between classes with equal vote counts.
    score = votes + average_probabilities(logits).double() * 0.5
    return score.argmax(dim=1)


def combine(logits: torch.Tensor, method: str = "average") -> torch.Tensor:
    """Predicted classes of the ensemble, by ``"average"`` (of probabilities) or ``"vote"``."""
    if method == "average":
        return average_probabilities(logits).argmax(dim=1)
    if method == "vote":
        return majority_vote(logits)
    raise ConfigError(f"unknown ensemble combination {method!r}; use 'average' or 'vote'")
