"""Small-scale versions of the chapter-6 ladder: every step builds, trains and beats chance.

The accuracies of the real ladder come from running the experiment
(``descend experiment nielsen-ch6``), not from these tests.
"""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from descend.experiments import nielsen_ch6
from descend.network3 import Network


@pytest.fixture(scope="module")
def small_mnist(mnist_dir):
    from descend.data import load_dataset

    s = load_dataset("mnist", split="nndl", data_dir=mnist_dir, limit=1000, eval_limit=500)
    return (s.train.x.reshape(1000, -1), s.train.y), (s.val.x.reshape(500, -1), s.val.y)


@pytest.mark.parametrize("number", range(1, len(nielsen_ch6.STEPS) + 1))
def test_each_step_builds_and_trains_with_the_books_settings(small_mnist, number):
    """Every parameter gets a gradient and the training loss falls. The ReLU steps also beat
    chance within 200 mini-batches; the sigmoid steps (1-3) and the 1000-unit dropout step
    start on a plateau (the book's N(0, 1/n_out) weights and N(0, 1) biases saturate sigmoid
    units), which takes thousands of mini-batches to leave, so for them the small-scale
    check is the falling loss; the experiment itself shows them learning."""
    step = nielsen_ch6.STEPS[number - 1]
    train, val = small_mnist
    torch.manual_seed(0)
    net = Network(step.layers(), nielsen_ch6.MBS)
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    result = net.SGD(train, 2, nielsen_ch6.MBS, step.eta, val, None, lmbda=step.lmbda, quiet=True)
    for name, p in net.named_parameters():
        assert not torch.equal(p, before[name]), f"{name} never changed"
    assert net.history[-1]["train_loss"] < net.history[0]["train_loss"]
    if number in (4, 5, 6):
        assert result["best_validation_accuracy"] > 0.3  # chance is 0.1


def test_run_writes_the_table_json_and_pictures(mnist_dir, tmp_path, capsys):
    args = argparse.Namespace(steps="1,2", limit=300, eval_limit=500, run_dir=tmp_path, data_dir=str(mnist_dir), seed=0,
                              quiet=True, budget="cpu")
    assert nielsen_ch6.run(args) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert [r["step"] for r in results["steps"]] == [1, 2] and results["budget"] == "cpu"
    assert results["steps"][0]["book"] == 0.9780 and 0.0 <= results["steps"][0]["measured"] <= 1.0
    table = (tmp_path / "results.md").read_text()
    assert "CPU budget" in table and "97.80%" in table and "98.78%" in table
    assert (tmp_path / "step1_learning_curves.png").is_file() and (tmp_path / "step2_learning_curves.png").is_file()
    assert 1000 < (tmp_path / "ladder.png").stat().st_size < 250_000
    assert results["claim"] == nielsen_ch6.CLAIM and results["train_limit"] == 300
    assert (results["verdict"], results["verdict_evidence"]) == nielsen_ch6.verdict(results)
    out = capsys.readouterr().out
    assert "| 1 shallow |" in out and f"verdict: {results['verdict']} - " in out


def _given(*measured, limit=None):
    books = [s.book for s in nielsen_ch6.STEPS] + [nielsen_ch6.ENSEMBLE_BOOK]
    return {"train_limit": limit,
            "steps": [{"step": n, "book": books[n - 1], "measured": m} for n, m in enumerate(measured, start=1)]}


def test_verdict_on_given_numbers():
    """The ladder's accuracies need the CPU budget's 40 minutes; the verdict's logic on given numbers."""
    status, evidence = nielsen_ch6.verdict(_given(0.9775, 0.9870, 0.9900, 0.9921))
    assert status == "reproduced" and "4/3" not in evidence and "3/3 steps improve" in evidence
    status, evidence = nielsen_ch6.verdict(_given(0.9700, 0.9810, 0.9840, 0.9870))  # in order, 0.7 points short
    assert status == "reproduced" and "largest shortfall 0.80 points (step 1)" in evidence
    status, evidence = nielsen_ch6.verdict(_given(0.93, 0.96, 0.95, 0.97, limit=5000))  # small data: far below
    assert status == "partly reproduced" and "2/3 steps improve" in evidence and "5,000 images" in evidence
    assert nielsen_ch6.verdict(_given(0.97, 0.96, 0.95))[0] == "not reproduced"


def test_steps_option():
    assert nielsen_ch6._parse_steps("1-3,8") == [1, 2, 3, 7, 8]  # the ensemble needs step 7
    from descend.errors import ConfigError

    with pytest.raises(ConfigError):
        nielsen_ch6._parse_steps("0-9")
