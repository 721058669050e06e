"""`descend experiment saddle-point` at a tiny size: its end-point classification against the
analytic critical points of f(x, y) = x^2/2 + y^4/4 - y^2/2, and its reports."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from descend.errors import ConfigError
from descend.experiments import saddle_point as exp


def _args(tmp_path, **kw):
    ns = argparse.Namespace(run_dir=tmp_path, data_dir=None, seed=0, quiet=True, budget="cpu", seeds=1,
                            init_scale=0.01, lr=0.1)
    for k, v in kw.items():
        setattr(ns, k, v)
    return ns


@pytest.mark.parametrize("point,kind", [((0.0, 0.0), "saddle (index 1/2)"), ((0.0, 1.0), "minimum"),
                                        ((0.0, -1.0), "minimum"), ((0.5, 0.5), "not converged")])
def test_classify_matches_the_analytic_critical_points(point, kind):
    theta = torch.nn.Parameter(torch.tensor(point, dtype=torch.float64))
    r = exp.classify([theta], lambda: exp.toy_loss(theta))
    assert r["end"] == kind


def test_linear_network_reference_losses():
    params, loss, ref = exp.linear_network(0, 0.0)
    assert float(loss().detach()) == pytest.approx(ref["at_saddle_W0"], rel=1e-10)  # W = 0
    # the global minimum is the rank-2 truncated SVD of A (whitened inputs)
    assert ref["global_min"] < ref["at_saddle_W0"]


def test_run_reproduces_the_claim_and_writes_reports(tmp_path):
    cfg = {"seeds": 2, "newton_iters": 25, "gd_steps": 400, "lr": 0.1, "init_scale": 0.01}
    for method in exp.METHODS:
        theta = torch.nn.Parameter(torch.tensor([1.0, 0.3], dtype=torch.float64))
        exp.optimize(method, [theta], lambda: exp.toy_loss(theta), cfg)
        end = exp.classify([theta], lambda: exp.toy_loss(theta))["end"]
        assert end == ("saddle (index 1/2)" if method == "newton" else "minimum"), method
    assert exp.run(_args(tmp_path)) == 0
    results = json.loads((tmp_path / "saddle_point.json").read_text())
    s = results["network_summary"]
    assert s["newton"]["saddle"] == 1 and s["saddle-free"]["minimum"] == 1 and s["gd"]["minimum"] == 1
    assert s["newton-lm"]["minimum"] == 1
    assert (tmp_path / "saddle_paths.png").stat().st_size > 1000
    assert "Part 2" in (tmp_path / "saddle_point.md").read_text()


def test_bad_settings_raise(tmp_path):
    with pytest.raises(ConfigError):
        exp.run(_args(tmp_path, budget="huge"))
    with pytest.raises(ConfigError):
        exp.run(_args(tmp_path, lr=-1.0))
    with pytest.raises(ConfigError):
        exp.run(_args(tmp_path, seeds=0))
