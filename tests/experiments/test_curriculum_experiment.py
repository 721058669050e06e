from __future__ import annotations

from descend.experiments import curriculum as exp
from experiments._tiny import outputs, tiny_args


def test_curriculum_compares_every_strategy_on_the_same_budget(tmp_path):
    assert exp.run(tiny_args(tmp_path, epochs=2, seeds=1, lr=0.05)) == 0
    result = outputs(tmp_path, "curriculum")
    assert set(result["summary"]) == {"baseline", "deterministic", "deterministic, sorted", "stochastic"}
    for runs in result["runs"].values():
        assert len(runs) == 1 and len(runs[0]["history"]) == 2
        assert all(0 <= h["val_accuracy"] <= 1 for h in runs[0]["history"])
