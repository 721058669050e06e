from __future__ import annotations

import pytest
import torch

from descend.data import TensorPair
from descend.errors import ConfigError
from descend.experiments import emphasis as exp
from experiments._tiny import outputs, tiny_args


def test_imbalanced_keeps_every_common_example_and_a_share_of_the_rare_ones():
    y = torch.arange(10).repeat(40)
    pair = exp.imbalanced(TensorPair(torch.zeros(400, 1), y), 0.1, seed=0)
    counts = torch.bincount(pair.y, minlength=10).tolist()
    assert counts == [40] * 5 + [4] * 5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_presenting_rare_classes_more_often_raises_their_accuracy(tmp_path, seed):
    # 300 digits with 5-9 cut to 10% (2 or 3 examples each): uniform sampling leaves the rare
    # digits nearly unlearned in 4 epochs; class-balanced sampling learns a good part of them.
    args = tiny_args(tmp_path, seed=seed, epochs=4, seeds=1, lr=0.1, floor=0.2, rare_share=0.1)
    assert exp.run(args) == 0
    result = outputs(tmp_path, "emphasis")
    assert set(result["part1"]) == {"uniform", "emphasis: loss", "emphasis: misclassified"}
    assert set(result["part2"]) == {"uniform", "class-balanced", "emphasis: misclassified"}
    assert all(1 <= c <= 3 for c in result["class_counts"][5:])
    rare_uniform, _ = exp.rare_accuracy(result["part2"]["uniform"])
    rare_balanced, _ = exp.rare_accuracy(result["part2"]["class-balanced"])
    assert rare_balanced > rare_uniform + 0.2
    assert result["claim"] == exp.CLAIM and result["verdict"] == "reproduced"
    assert (tmp_path / "emphasis.png").stat().st_size > 10_000


def _part2(uniform, balanced, overall_uniform=0.9, overall_balanced=0.9):
    run = lambda rare, overall: [{"val_per_class": [0.95] * 5 + [rare] * 5,  # noqa: E731
                                  "history": [{"val_accuracy": overall}]}]
    return {"part2": {"uniform": run(uniform, overall_uniform), "class-balanced": run(balanced, overall_balanced),
                      "emphasis: misclassified": run(uniform, overall_uniform)}}


def test_verdict_reproduced_partly_and_not():
    assert exp.verdict(_part2(0.5, 0.8))[0] == "reproduced"
    assert exp.verdict(_part2(0.5, 0.8, overall_balanced=0.8))[0] == "partly reproduced"  # rare up, all down
    status, evidence = exp.verdict(_part2(0.5, 0.51))
    assert status == "not reproduced" and "uniform 50.00%, class-balanced 51.00%" in evidence


def test_rare_share_must_be_a_fraction(tmp_path):
    with pytest.raises(ConfigError, match="rare-share"):
        exp.run(tiny_args(tmp_path, rare_share=1.5))
