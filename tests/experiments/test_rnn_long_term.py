"""`descend experiment rnn-long-term` at a tiny size, and its gradient-vs-lag measurement.

Oracle for the measurement: the explicit BPTT recursion of eqs. 10.19-10.21
(``descend.nn.bptt.tanh_rnn_backward``), which gives dL/dh(t) for every t directly.
"""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from torch import nn

from descend.data.sequences import adding_problem
from descend.errors import ConfigError
from descend.experiments import rnn_long_term as exp
from descend.nn import RNN
from descend.nn.bptt import tanh_rnn_backward


def test_gradient_norm_vs_lag_equals_explicit_bptt():
    torch.manual_seed(0)
    rnn, head = RNN(2, 6), nn.Linear(6, 1)
    x = adding_problem(5, 9, generator=1).x
    norms = exp.gradient_norm_vs_lag(rnn, head, x)
    with torch.no_grad():
        h, _ = rnn(x)
    h = h.transpose(0, 1).contiguous()  # (T, N, H)
    direct = torch.zeros_like(h)
    direct[-1] = head.weight.detach().expand(5, 6)  # d sum(head(h(tau))) / d h(tau)
    _, _, grad_h = tanh_rnn_backward(direct, h, rnn.W.detach(), return_h_grad=True)
    expected = grad_h.norm(dim=2).mean(dim=1).flip(0)  # index = lag tau - t
    assert norms == pytest.approx(expected.tolist(), rel=1e-5)


def test_sticky_symbols_task():
    pair = exp.sticky_symbols(400, 30, 5, torch.Generator().manual_seed(0))
    assert pair.x.shape == (400, 30, 5) and pair.y.shape == (400, 30)
    changes = (pair.y[:, 1:] != pair.y[:, :-1]).float().mean().item()
    seen = (pair.x.argmax(2) == pair.y).float().mean().item()
    assert changes == pytest.approx(0.1, abs=0.02)  # the symbol changes with probability 0.1
    assert seen == pytest.approx(0.6 + 0.4 / 5, abs=0.02)  # shown correctly w.p. 0.6, else uniform


def _args(tmp_path, **kw):
    ns = argparse.Namespace(run_dir=tmp_path, data_dir=None, seed=0, quiet=True, budget="cpu", task="adding",
                            lengths=[4, 6], steps=3, hidden=4, batch_size=8, lr=0.01, clip=1.0, parts="123")
    for k, v in kw.items():
        setattr(ns, k, v)
    return ns


@pytest.mark.parametrize("task", ["adding", "copy"])
def test_tiny_run_writes_tables_plot_and_json(tmp_path, task, monkeypatch):
    monkeypatch.setitem(exp.BUDGETS, "cpu", {**exp.BUDGETS["cpu"], "lag": 8, "tf_steps": 3})
    parts = "123" if task == "adding" else "12"
    assert exp.run(_args(tmp_path, task=task, parts=parts)) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert {(r["model"], r["length"]) for r in results["part1"]} == {(m, n) for m in exp.MODELS for n in (4, 6)}
    assert "Part 1" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "gradient_norm_vs_lag.png").stat().st_size > 0
    curves = results["part2_gradient_norm_vs_lag"]
    assert len(curves) == 5 + len(exp.MODELS)  # 3 RNN radii, 2 LSTM inits, the trained networks
    for name, values in curves.items():  # lags 0..8 (copy: its shortest sequence, 2 * 5 + 1 steps)
        assert len(values) == (11 if task == "copy" and "trained" in name else 9)
    if task == "adding":
        assert [r["training"] for r in results["part3_teacher_forcing"]] == ["teacher forcing", "scheduled sampling"]
        assert 1000 < (tmp_path / "teacher_forcing.png").stat().st_size < 250_000
    assert results["claim"] == exp.CLAIM and (results["verdict"], results["verdict_evidence"]) == exp.verdict(results)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradients_vanish_below_spectral_radius_1_and_explode_above(tmp_path, seed):
    """Part 2 at the cpu budget's lag (60) and width (32), over three seeds: eq. 8.11's diag(lambda)^t."""
    assert exp.run(_args(tmp_path, seed=seed, lengths=None, steps=None, hidden=None, parts="2")) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    curves = results["part2_gradient_norm_vs_lag"]
    low, high = curves["RNN init, W orthogonal x 0.8"], curves["RNN init, W orthogonal x 1.2"]
    assert len(low) == 61
    assert low[-1] < 1e-4 * low[0]  # 0.8^60 ~ 1.5e-6
    assert high[-1] > 2 * high[0]
    assert results["verdict"] == "reproduced"
    assert 1000 < (tmp_path / "gradient_norm_vs_lag.png").stat().st_size < 250_000


def test_verdict_on_given_numbers():
    """Parts 1 and 3 need minutes of training to show the claim; their checks on given numbers."""
    curves = {"RNN init, W orthogonal x 0.8": [1.0, 1e-6], "RNN init, W orthogonal x 1.2": [1.0, 5.0]}
    part1 = [{"model": "rnn", "length": 60, "test_mse": 0.17, "solved": False},
             {"model": "rnn+clip", "length": 60, "test_mse": 0.17, "solved": False},
             {"model": "lstm", "length": 60, "test_mse": 0.001, "solved": True},
             {"model": "rnn", "length": 10, "test_mse": 0.005, "solved": True}]
    part3 = [{"training": "teacher forcing", "teacher_forced_accuracy": 0.89, "free_running_accuracy": 0.38}]
    good = {"part1": part1, "part2_gradient_norm_vs_lag": curves, "part3_teacher_forcing": part3}
    status, evidence = exp.verdict(good)
    assert status == "reproduced" and "T = 60" in evidence and "lstm 0.0010 (solved)" in evidence
    rnn_solves = [{**r, "solved": True} for r in part1]
    assert exp.verdict({**good, "part1": rnn_solves})[0] == "partly reproduced"
    no_gap = [{**part3[0], "free_running_accuracy": 0.88}]
    flat = {k: [1.0, 1.0] for k in curves}
    assert exp.verdict({"part1": rnn_solves, "part2_gradient_norm_vs_lag": flat,
                        "part3_teacher_forcing": no_gap})[0] == "not reproduced"


def test_bad_options_raise_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="parts"):
        exp.run(_args(tmp_path, parts="4"))
    with pytest.raises(ConfigError, match="length"):
        exp.run(_args(tmp_path, lengths=[1]))
