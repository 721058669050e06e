from __future__ import annotations

import pytest

from descend.errors import ConfigError
from descend.experiments import lr_find as exp
from experiments._tiny import outputs, tiny_args


def test_log_grid():
    grid = exp.log_grid(1e-3, 10.0, 5)
    assert grid == pytest.approx([1e-3, 1e-2, 1e-1, 1.0, 10.0])
    with pytest.raises(ConfigError, match="min < max"):
        exp.log_grid(1.0, 0.1, 3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_rate_the_sweep_chooses_trains_best_for_longer(tmp_path, seed):
    assert exp.run(tiny_args(tmp_path, seed=seed, min_lr=1e-3, max_lr=10.0, momentum=0.9,
                             metric="val_accuracy")) == 0
    result = outputs(tmp_path, "lr_find")
    alive = [r for r in result["sweep"] if not r["diverged"]]
    assert result["chosen_lr"] == max(alive, key=lambda r: r["val_accuracy"])["lr"]
    assert [c["factor"] for c in result["checks"]] == [0.1, 1.0, 10.0]
    final = {c["factor"]: c["history"][-1]["val_accuracy"] if c["history"] else 0.0 for c in result["checks"]}
    assert final[1.0] > final[0.1] + 0.05 and final[1.0] > final[10.0] + 0.05
    assert result["claim"] == exp.CLAIM and result["verdict"] == "reproduced"
    assert (tmp_path / "lr_find.png").stat().st_size > 10_000


def _checks(smaller, chosen, larger):
    history = lambda acc: None if acc is None else [{"val_accuracy": acc}]  # noqa: E731
    return {"chosen_lr": 0.1, "checks": [{"factor": 0.1, "history": history(smaller)},
                                         {"factor": 1.0, "history": history(chosen)},
                                         {"factor": 10.0, "history": history(larger)}]}


def test_verdict_reproduced_partly_and_not():
    assert exp.verdict(_checks(0.80, 0.90, None))[0] == "reproduced"  # 10x larger diverged
    assert exp.verdict(_checks(0.80, 0.90, 0.92))[0] == "partly reproduced"
    status, evidence = exp.verdict(_checks(0.95, 0.90, 0.92))
    assert status == "not reproduced" and "10x smaller 95.00%" in evidence
    assert exp.verdict(_checks(0.80, None, 0.92))[0] == "not reproduced"
