"""NumPy oracles for descend.train.curriculum: pacing, pools and sampling probabilities,
written from the descriptions (Bengio et al. 2009; Zaremba & Sutskever 2014; CS189)."""

import math

import numpy as np


def pace(epoch, start, ramp_epochs):
    """Fraction of the data (easiest first) in use at ``epoch``: linear from start to 1."""
    if ramp_epochs <= 1:
        return 1.0
    return start + (1 - start) * min(1.0, (epoch - 1) / (ramp_epochs - 1))


def easiest(scores, fraction):
    """Indices of the ceil(fraction n) lowest scores (ties: lower index first)."""
    k = max(1, math.ceil(fraction * len(scores)))
    return set(np.argsort(scores, kind="stable")[:k].tolist())


def emphasis_probabilities(scores, floor):
    """p_i proportional to floor + (1 - floor) s_i / mean(s)."""
    scores = np.asarray(scores, dtype=float)
    w = np.ones_like(scores) if scores.mean() <= 0 else floor + (1 - floor) * scores / scores.mean()
    return w / w.sum()


def class_balanced_probabilities(labels, power):
    counts = {c: int((labels == c).sum()) for c in set(labels.tolist())}
    w = np.array([counts[c] ** (-power) for c in labels.tolist()], dtype=float)
    return w / w.sum()
