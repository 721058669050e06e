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


@pytest.mark.parametrize("data,seed", [("synthetic", 0), ("synthetic", 1), ("synthetic", 2), ("digits", 0)])
def test_block_coordinate_descent_never_increases_the_objective(tmp_path, data, seed):
    """The claim over three seeds (and the digits): J never rises, falls by a margin, and the
    coordinate-descent sweeps of part 2 grow as alpha shrinks."""
    if data == "digits":
        pytest.importorskip("sklearn")
    assert exp.run(_args(tmp_path, data=data, seed=seed)) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    J = results["objective"]
    assert results["monotone"] and len(J) == 9
    assert all(b <= a * (1 + 1e-12) for a, b in zip(J, J[1:]))
    assert J[-1] < 0.9 * J[0]
    sweeps = [r["cd_sweeps"] for r in sorted(results["coupled_quadratic"], key=lambda r: -r["alpha"])]
    assert all(b > 3 * a for a, b in zip(sweeps, sweeps[1:]))  # ~10x per decade of alpha
    assert results["verdict"] == "reproduced" and results["claim"] == exp.CLAIM
    for png in ("sparse_coding.png", "coordinate_descent_sweeps.png"):
        assert 1000 < (tmp_path / png).stat().st_size < 250_000


def test_verdict_on_given_numbers():
    part2 = [{"alpha": 1.0, "cd_sweeps": 7, "newton_steps": 1}, {"alpha": 0.1, "cd_sweeps": 39, "newton_steps": 1}]
    good = {"objective": [10.0, 6.0, 5.0], "monotone": True, "increases": [], "coupled_quadratic": part2}
    assert exp.verdict(good)[0] == "reproduced"
    rose = {**good, "objective": [10.0, 6.0, 7.0], "monotone": False, "increases": [2]}
    status, evidence = exp.verdict(rose)
    assert status == "partly reproduced" and "increased at 1 half-steps" in evidence
    flat = [{**r, "cd_sweeps": 7} for r in part2]
    assert exp.verdict({**rose, "coupled_quadratic": flat})[0] == "not reproduced"


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
