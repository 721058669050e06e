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


def test_each_method_ends_where_the_text_says_on_the_2d_saddle():
    cfg = {"seeds": 1, "newton_iters": 25, "gd_steps": 400, "lr": 0.1, "init_scale": 0.01}
    for method in exp.METHODS:
        theta = torch.nn.Parameter(torch.tensor([1.0, 0.3], dtype=torch.float64))
        exp.optimize(method, [theta], lambda: exp.toy_loss(theta), cfg)
        end = exp.classify([theta], lambda: exp.toy_loss(theta))["end"]
        assert end == ("saddle (index 1/2)" if method == "newton" else "minimum"), method


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_newton_is_attracted_to_the_saddle_and_saddle_free_newton_escapes(tmp_path, seed, monkeypatch):
    """The claim over three initializations of the linear network (gradient descent cut short:
    the claim is about the two Newton methods)."""
    monkeypatch.setitem(exp.BUDGETS, "cpu", {"seeds": 1, "newton_iters": 40, "gd_steps": 20})
    assert exp.run(_args(tmp_path, seed=seed)) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["verdict"] == "reproduced" and results["claim"] == exp.CLAIM
    net = {r["method"]: r for r in results["network"]}
    gap = net["newton"]["at_saddle_W0"] - net["newton"]["global_min"]
    assert net["newton"]["end"].startswith("saddle")
    assert net["newton"]["loss"] > net["newton"]["global_min"] + 0.5 * gap  # stuck at a high-cost saddle
    assert net["saddle-free"]["end"] == "minimum"
    assert net["saddle-free"]["loss"] < net["saddle-free"]["global_min"] + 1e-6 * gap
    toy = {(tuple(r["start"]), r["method"]): r["end"] for r in results["toy"]}
    for start in exp.TOY_STARTS:
        assert toy[(start, "newton")].startswith("saddle") and toy[(start, "saddle-free")] == "minimum"
    for png in ("saddle_paths.png", "saddle_network.png"):
        assert 1000 < (tmp_path / png).stat().st_size < 250_000
    assert "Part 2" in (tmp_path / "saddle_point.md").read_text()


def _fake(newton_end: str, free_end: str) -> dict:
    run = lambda method, end: {"method": method, "end": end, "loss": 1.0, "global_min": 0.5}  # noqa: E731
    return {"toy": [run("newton", newton_end), run("saddle-free", free_end)],
            "network": [run("newton", newton_end), run("saddle-free", free_end)]}


def test_verdict_on_given_numbers():
    assert exp.verdict(_fake("saddle (index 1/2)", "minimum"))[0] == "reproduced"
    assert exp.verdict(_fake("minimum", "minimum"))[0] == "partly reproduced"
    status, evidence = exp.verdict(_fake("minimum", "saddle (index 2/16)"))
    assert status == "not reproduced" and "0/2" in evidence


def test_bad_settings_raise(tmp_path):
    with pytest.raises(ConfigError):
        exp.run(_args(tmp_path, budget="huge"))
    with pytest.raises(ConfigError):
        exp.run(_args(tmp_path, lr=-1.0))
    with pytest.raises(ConfigError):
        exp.run(_args(tmp_path, seeds=0))
