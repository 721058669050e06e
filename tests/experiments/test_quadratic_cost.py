from __future__ import annotations

import math

import pytest

from descend.experiments import quadratic_cost as exp
from experiments._tiny import outputs, tiny_args


def test_the_saturated_neuron_learns_slowly_only_under_the_quadratic_cost():
    quad = exp.neuron(2.0, 2.0, "quadratic", 300)
    ce = exp.neuron(2.0, 2.0, "cross-entropy", 300)
    a = lambda c, cost: math.sqrt(2 * c) if cost == "quadratic" else 1 - math.exp(-c)  # noqa: E731
    assert a(quad[0], "quadratic") > 0.97 and a(ce[0], "cross-entropy") > 0.97  # same saturated start
    assert a(quad[99], "quadratic") > 0.9  # still on the plateau after 100 steps
    assert a(ce[99], "cross-entropy") < 0.1  # cross-entropy is long past it


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_quadratic_cost_network_is_behind_after_one_epoch(tmp_path, seed):
    """The claim on the saturating MLP of part 2 (300 digits, one epoch), over three seeds."""
    assert exp.run(tiny_args(tmp_path, lr=0.5, seed=seed)) == 0
    result = outputs(tmp_path, "results")
    assert len(result["neuron"]) == 4 and len(result["mnist"]) == 3
    first = {name.split(" (")[0]: h[0]["val_accuracy"] for name, h in result["mnist"].items()}
    assert first["quadratic"] + 0.1 < min(first["cross-entropy"], first["log-likelihood"])
    assert result["verdict"] == "reproduced" and result["claim"] == exp.CLAIM
    for png in ("quadratic_cost.png", "quadratic_cost_mnist.png"):
        assert 1000 < (tmp_path / png).stat().st_size < 250_000


def _given(quadratic_steps, ce_steps, quadratic_acc, ce_acc):
    neuron = {exp.SATURATED + "quadratic": {"curve": [0.0] * 300, "epochs_to_output_below_0.2": quadratic_steps},
              exp.SATURATED + "cross-entropy": {"curve": [0.0] * 300, "epochs_to_output_below_0.2": ce_steps}}
    mnist = {"quadratic (sigmoid outputs)": [{"val_accuracy": quadratic_acc}],
             "cross-entropy (sigmoid outputs)": [{"val_accuracy": ce_acc}],
             "log-likelihood (softmax outputs)": [{"val_accuracy": ce_acc}]}
    return {"neuron": neuron, "mnist": mnist}


def test_verdict_on_given_numbers():
    status, evidence = exp.verdict(_given(None, 32, 0.15, 0.45))
    assert status == "reproduced" and "> 300 steps (quadratic) vs 32" in evidence
    assert exp.verdict(_given(None, 32, 0.50, 0.45))[0] == "partly reproduced"
    assert exp.verdict(_given(40, 32, 0.50, 0.45))[0] == "not reproduced"
