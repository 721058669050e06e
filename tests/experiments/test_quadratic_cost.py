from __future__ import annotations

import math

from descend.experiments import quadratic_cost as exp
from experiments._tiny import outputs, tiny_args


def test_the_saturated_neuron_learns_slowly_only_under_the_quadratic_cost():
    quad = exp.neuron(2.0, 2.0, "quadratic", 300)
    ce = exp.neuron(2.0, 2.0, "cross-entropy", 300)
    a = lambda c, cost: math.sqrt(2 * c) if cost == "quadratic" else 1 - math.exp(-c)  # noqa: E731
    assert a(quad[0], "quadratic") > 0.97 and a(ce[0], "cross-entropy") > 0.97  # same saturated start
    assert a(quad[99], "quadratic") > 0.9  # still on the plateau after 100 steps
    assert a(ce[99], "cross-entropy") < 0.1  # cross-entropy is long past it


def test_quadratic_cost_experiment_writes_its_report(tmp_path):
    assert exp.run(tiny_args(tmp_path, lr=0.5)) == 0
    result = outputs(tmp_path, "quadratic_cost")
    assert len(result["neuron"]) == 4 and len(result["mnist"]) == 3
    assert (tmp_path / "quadratic_cost.png").stat().st_size > 0
