"""`descend experiment sparse-coding` at a tiny size: a monotone objective on both data
sets, the coordinate-descent sweep count against the closed-form contraction, reports."""

from __future__ import annotations

import argparse
import json
import math

import pytest

from descend.errors import ConfigError
from descend.experiments import sparse_coding as exp


def _args(tmp_path, **kw):
    ns = argparse.Namespace(run_dir=tmp_path, data_dir=None, seed=0, quiet=True, budget="cpu", data="synthetic",
                            atoms=6, iterations=4, sparsity=1.0, weight_decay=0.0)
    for k, v in kw.items():
        setattr(ns, k, v)
    return ns


@pytest.mark.parametrize("data", ["synthetic", "digits"])
def test_run_writes_a_monotone_objective(tmp_path, data):
    if data == "digits":
        pytest.importorskip("sklearn")
    assert exp.run(_args(tmp_path, data=data)) == 0
    results = json.loads((tmp_path / "sparse_coding.json").read_text())
    J = results["objective"]
    assert results["monotone"] and len(J) == 9
    assert all(b <= a * (1 + 1e-12) for a, b in zip(J, J[1:]))
    assert (tmp_path / "sparse_coding.png").stat().st_size > 1000


def test_coordinate_descent_sweeps_follow_the_contraction():
    """After the first sweep, each Gauss-Seidel sweep on the coupled quadratic multiplies x by
    1/(1+alpha)^2 and f by 1/(1+alpha)^4; so the sweep count grows like 1/alpha."""
    for alpha in (0.1, 0.01):
        r = exp.coupled_sweeps(alpha)
        # f after sweep 1 (x1 = x2 (1 + alpha), x2 = -0.5 / (1 + alpha)^2), then geometric decay
        x2 = -0.5 / (1 + alpha) ** 2
        x1 = x2 * (1 + alpha)
        f1 = (x1 - x2) ** 2 + alpha * (x1**2 + x2**2)
        f0 = 1.5**2 + alpha * 1.25
        expected = 1 + math.ceil(math.log(1e-8 * f0 / f1) / math.log((1 + alpha) ** -4))
        assert abs(r["cd_sweeps"] - expected) <= 1
        assert r["newton_steps"] == 1


def test_bad_settings_raise(tmp_path):
    with pytest.raises(ConfigError):
        exp.run(_args(tmp_path, atoms=0))
    with pytest.raises(ConfigError):
        exp.run(_args(tmp_path, budget="huge"))
