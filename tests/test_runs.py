"""The life of a run directory: the lock, failed starts, signals, and kills at every write point.

Runs are small (scikit-learn's 8x8 digits, a tiny network) and run in subprocesses, so a
kill is a real ``os._exit`` / signal, and resuming is the real ``descend train --resume``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from descend import config as cfg
from descend import runs
from descend.errors import ConfigError, Diverged

SMALL = ["--set", "data.dataset=digits", "--set", "data.augment=none", "--set", "model.conv=[8]",
         "--set", "model.hidden=[32]", "--set", "train.batch_size=64", "--set", "optimizer.lr=0.05",
         "--quiet"]
TIMEOUT = 300

# Runs descend's CLI in this process after arming a "kill" (os._exit(9), as abrupt as kill -9)
# at the N-th call of one write point.
DRIVER = r'''
import os, sys
point, nth = sys.argv[1], int(sys.argv[2])
calls = {"n": 0}

def arm(module, name, before=True):
    original = getattr(module, name)
    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == nth and before:
            os._exit(9)
        result = original(*args, **kwargs)
        if calls["n"] == nth and not before:
            os._exit(9)
        return result
    setattr(module, name, wrapper)

import contextlib
import descend.io as io
import descend.train.trainer as trainer
if point == "metrics-line":            # before an epoch's metrics line is appended
    arm(trainer, "append_line")
elif point == "after-metrics-line":    # between the metrics line and the checkpoint
    arm(trainer, "append_line", before=False)
elif point == "checkpoint-temp":       # the checkpoint's temporary file written, not yet renamed
    original = io.atomic_path
    @contextlib.contextmanager
    def atomic_path(path):
        with original(path) as tmp:
            yield tmp
            if str(path).endswith("checkpoint.safetensors"):
                calls["n"] += 1
                if calls["n"] == nth:
                    os._exit(9)
    import descend.train.checkpoint as checkpoint
    io.atomic_path = checkpoint.atomic_path = atomic_path
elif point == "final-weights":         # while the final weights are written
    arm(trainer, "save_weights")
from descend.cli import main
raise SystemExit(main(sys.argv[3:]))
'''


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "descend", *map(str, args)], capture_output=True, text=True,
                          timeout=TIMEOUT, env=dict(os.environ, OMP_NUM_THREADS="1", **(env or {})))


def metrics_epochs(run_dir: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "whole"
    result = run_cli("train", *SMALL, "--epochs", 3, "--run-dir", run_dir)
    assert result.returncode == 0, result.stderr
    return run_dir


@pytest.mark.parametrize("point,nth", [("metrics-line", 2), ("after-metrics-line", 2), ("checkpoint-temp", 2),
                                       ("final-weights", 1)])
def test_a_kill_at_any_write_point_resumes_bit_identically(tmp_path, uninterrupted, point, nth):
    run_dir = tmp_path / "run"
    killed = subprocess.run([sys.executable, "-c", DRIVER, point, str(nth), "train", *SMALL, "--epochs", "3",
                             "--run-dir", str(run_dir)], capture_output=True, text=True, timeout=TIMEOUT,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert killed.returncode == 9, killed.stderr
    resumed = run_cli("train", "--resume", run_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert metrics_epochs(run_dir) == [1, 2, 3]  # each epoch exactly once
    assert not list(run_dir.glob(".*.tmp"))  # no temporary file left behind
    whole, part = load_file(uninterrupted / "model.safetensors"), load_file(run_dir / "model.safetensors")
    assert whole.keys() == part.keys()
    assert all(torch.equal(whole[k], part[k]) for k in whole)
    expected = [json.loads(x) for x in (uninterrupted / "metrics.jsonl").read_text().splitlines()]
    got = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e["train_loss"] for e in expected] == [g["train_loss"] for g in got]


def test_two_runs_on_one_directory_exactly_one_is_refused(tmp_path):
    run_dir = tmp_path / "shared"
    procs = [subprocess.Popen([sys.executable, "-m", "descend", "train", *SMALL, "--epochs", "3", "--seed", str(seed),
                               "--run-dir", str(run_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ, OMP_NUM_THREADS="1")) for seed in (0, 1)]
    outcomes = [(p.wait(timeout=TIMEOUT), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in outcomes)
    assert codes == [0, 2], outcomes
    refused = next(err for code, err in outcomes if code == 2)
    assert "in use by a run" in refused or "already holds a run" in refused
    assert "Traceback" not in refused
    assert len(metrics_epochs(run_dir)) == 3  # one run's epochs, not two interleaved


def test_resume_of_a_live_run_is_refused_and_sigterm_ends_it_truthfully(tmp_path):
    run_dir = tmp_path / "live"
    live = subprocess.Popen([sys.executable, "-m", "descend", "train", *SMALL, "--epochs", "200", "--run-dir",
                             str(run_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (run_dir / "checkpoint.safetensors").exists():
            assert live.poll() is None, live.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.2)
        second = run_cli("train", "--resume", run_dir)
        assert second.returncode == 2
        assert "in use by a run that is still training" in second.stderr and f"pid {live.pid}" in second.stderr
        live.send_signal(signal.SIGTERM)
        code = live.wait(timeout=TIMEOUT)
        message = live.stderr.read()
    finally:
        live.kill()
    assert code == 143
    assert "interrupted by SIGTERM" in message and "checkpoint is kept" in message and str(run_dir) in message
    assert "RUN_DIR" not in message
    resumed = run_cli("train", "--resume", run_dir, "--epochs", len(metrics_epochs(run_dir)) + 1)
    assert resumed.returncode == 0, resumed.stderr


def test_a_failed_start_leaves_nothing_behind(tmp_path, monkeypatch):
    """A model that cannot take the first training step: a clear ConfigError, and the run
    directory the run would have created does not exist."""
    import descend.models.nielsen as nielsen

    def broken_forward(self, x):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (64x10 and 12x3)")

    monkeypatch.setattr(nielsen.NielsenNet, "forward", broken_forward)
    config = cfg.load(overrides=["data.dataset=digits", "data.augment=none", "model.conv=[8]", "quiet=true"])
    run_dir = tmp_path / "never"
    with pytest.raises(ConfigError, match="cannot take a training step.*mat1 and mat2"):
        runs.train(config, run_dir)
    assert not run_dir.exists()


def test_divergence_on_the_first_batch_is_caught_before_the_run_starts(tmp_path):
    config = cfg.load(overrides=["data.dataset=digits", "data.augment=none", "model.conv=[8]", "quiet=true",
                                 "optimizer.lr=1e30", "schedule=constant"])
    run_dir = tmp_path / "diverges"
    with pytest.raises(Diverged) as info:
        runs.train(config, run_dir)
    message = str(info.value)
    assert "checkpoint is kept" not in message or (run_dir / "checkpoint.safetensors").exists()


def test_checkpoint_status_is_true_of_the_directory(tmp_path):
    assert "nothing was written" in runs.checkpoint_status(tmp_path / "missing")
    (tmp_path / runs.CONFIG).write_text("seed = 0\n")
    assert "no checkpoint" in runs.checkpoint_status(tmp_path)
    (tmp_path / "checkpoint.safetensors").write_bytes(b"")
    assert "checkpoint is kept" in runs.checkpoint_status(tmp_path)


def test_a_lenet5_run_of_descend_layers_draws_its_filters_and_goes_channels_last(tmp_path):
    """LeNet-5 is built from descend.nn layers (Conv2d, PartiallyConnectedConv2d): it gets the
    filter picture and channels-last like a network of torch.nn.Conv2d."""
    from descend import build

    config = cfg.load(overrides=["model=lenet5", "data.limit=200", "data.eval_limit=100", "data.augment=none", "quiet=true"])
    splits = build.load_data(config)
    trainer = build.build_trainer(config, splits, None, 0, data_parallel=False)
    assert trainer.channels_last
    runs._write_pictures(trainer, splits, tmp_path)
    assert (tmp_path / "filters.png").stat().st_size > 0


def test_resuming_a_directory_that_holds_no_run_leaves_nothing_behind(tmp_path):
    from descend.errors import CheckpointError

    config = cfg.load(overrides=["data.dataset=digits", "data.augment=none", "model.conv=[8]", "quiet=true"])
    run_dir = tmp_path / "nothing-here"
    with pytest.raises(CheckpointError, match="holds no run to resume"):
        runs.train(config, run_dir, resume=True)
    assert not run_dir.exists()
