from __future__ import annotations

import torch

from descend.data import TensorPair
from descend.experiments import emphasis as exp
from experiments._tiny import outputs, tiny_args


def test_imbalanced_keeps_every_common_example_and_a_share_of_the_rare_ones():
    y = torch.arange(10).repeat(40)
    pair = exp.imbalanced(TensorPair(torch.zeros(400, 1), y), 0.1, seed=0)
    counts = torch.bincount(pair.y, minlength=10).tolist()
    assert counts == [40] * 5 + [4] * 5


def test_emphasis_experiment_reports_both_parts(tmp_path):
    assert exp.run(tiny_args(tmp_path, epochs=2, seeds=1, lr=0.05, floor=0.2)) == 0
    result = outputs(tmp_path, "emphasis")
    assert set(result["part1"]) == {"uniform", "emphasis: loss", "emphasis: misclassified"}
    assert set(result["part2"]) == {"uniform", "class-balanced", "emphasis: misclassified"}
    assert all(len(r[0]["val_per_class"]) == 10 for r in result["part2"].values())
