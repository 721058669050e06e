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


def test_lr_find_chooses_the_best_validation_rate(tmp_path):
    assert exp.run(tiny_args(tmp_path, min_lr=1e-3, max_lr=10.0, momentum=0.9, metric="val_accuracy")) == 0
    result = outputs(tmp_path, "lr_find")
    alive = [r for r in result["sweep"] if not r["diverged"]]
    assert result["chosen_lr"] == max(alive, key=lambda r: r["val_accuracy"])["lr"]
    assert [c["factor"] for c in result["checks"]] == [0.1, 1.0, 10.0]
