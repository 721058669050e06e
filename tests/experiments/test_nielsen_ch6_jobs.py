"""The ladder with --jobs 2 (two networks at a time, one thread each) gives the table of --jobs 1."""

from __future__ import annotations

import argparse
import json

import pytest

from descend.errors import ConfigError
from descend.experiments import nielsen_ch6


def _args(tmp_path, mnist_dir, jobs, steps="1,2"):
    return argparse.Namespace(steps=steps, limit=300, eval_limit=300, run_dir=tmp_path, data_dir=str(mnist_dir), seed=0,
                              quiet=True, budget="cpu", jobs=jobs)


def test_two_jobs_train_the_same_networks_as_one(mnist_dir, tmp_path):
    rows = {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        out.mkdir()
        assert nielsen_ch6.run(_args(out, mnist_dir, jobs)) == 0
        rows[jobs] = json.loads((out / "results.json").read_text())["steps"]
        assert (out / "step2_learning_curves.png").is_file()
    assert [r["step"] for r in rows[2]] == [r["step"] for r in rows[1]] == [1, 2]
    for one, two in zip(rows[1], rows[2]):  # same seeds and data; threads change only float rounding
        assert two["best_validation"] == pytest.approx(one["best_validation"], abs=0.01)
        assert two["measured"] == pytest.approx(one["measured"], abs=0.01)


def test_jobs_must_be_positive(mnist_dir, tmp_path):
    with pytest.raises(ConfigError, match="--jobs 0"):
        nielsen_ch6.run(_args(tmp_path, mnist_dir, 0))
