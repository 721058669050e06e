from __future__ import annotations

from descend.experiments import regularization as exp
from experiments._tiny import outputs, tiny_args


def test_regularization_experiment_compares_every_regularizer(tmp_path):
    assert exp.run(tiny_args(tmp_path, epochs=2, lr=0.01, weight_decay=5e-3)) == 0
    runs = outputs(tmp_path, "regularization")["runs"]
    assert len(runs) == 7 and "dropout 0.5 hidden, 0.2 input" in runs
    assert all(set(r["accuracy"]) == {"train", "val", "test"} for r in runs.values())
