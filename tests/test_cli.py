"""The real ``descend`` executable, run in a subprocess: exit codes, messages, outputs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

EXE = Path(sys.executable).parent / "descend"
if not EXE.exists():
    EXE = Path(shutil.which("descend") or "descend")

SMALL_DIGITS = ["--set", "data.dataset=digits", "--set", "data.augment=none", "--set", "model.conv=[8]",
                "--set", "model.hidden=[32]", "--set", "train.batch_size=32", "--set", "optimizer.lr=0.05"]


def descend(*args, cwd=None, check_code=None):
    env = dict(os.environ, DESCEND_OFFLINE="1")
    result = subprocess.run([str(EXE), *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)
    if check_code is not None:
        assert result.returncode == check_code, result.stdout + result.stderr
    return result


def test_version_and_help():
    from descend import __version__

    assert descend("--version", check_code=0).stdout.splitlines()[0] == f"descend {__version__}"
    for cmd in ("train", "evaluate", "predict", "experiment"):
        assert "usage: descend" in descend(cmd, "--help", check_code=0).stdout
    # an experiment's own options are reachable through --help
    assert "--budget" in descend("experiment", "nielsen-ch6", "--help", check_code=0).stdout


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["train", "--set", "train.epochz=2"], "did you mean 'epochs'"),
        (["train", *SMALL_DIGITS, "--set", "optimizer.lr=-1"], "lr must be >= 0"),
        (["train", "--config", "missing.toml"], "does not exist"),
        (["train", "--set", "data.dataset=kmnist", "--data-dir", "empty"], "DESCEND_DATA"),
        (["evaluate", "."], "not a descend run directory"),
        (["experiment", "no-such-experiment"], "unknown experiment"),
    ],
)
def test_bad_input_exits_2_with_a_message_and_no_traceback(tmp_path, args, fragment):
    (tmp_path / "empty").mkdir()
    r = descend(*args, cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert fragment in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists()  # a failed start writes nothing


def test_train_evaluate_predict_resume_on_digits(tmp_path):
    pytest.importorskip("sklearn")
    run = tmp_path / "run"
    r = descend("train", *SMALL_DIGITS, "--epochs", "3", "--run-dir", run, "--quiet", check_code=0)
    assert "test accuracy:" in r.stdout and f"run directory: {run}" in r.stdout
    results = json.loads((run / "results.json").read_text())
    assert results["test_accuracy"] > 0.8
    for name in ("config.toml", "metrics.jsonl", "checkpoint.safetensors", "model.safetensors",
                 "learning_curves.png", "filters.png", "misclassified.png", "confusion_matrix.png"):
        assert (run / name).is_file(), name
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3

    r = descend("evaluate", run, "--json", check_code=0)
    assert json.loads(r.stdout)["test_accuracy"] == pytest.approx(results["test_accuracy"])

    from descend.data import load_dataset

    test = load_dataset("digits").test
    np.save(tmp_path / "x.npy", test.x[:5, 0].numpy())
    r = descend("predict", run, tmp_path / "x.npy", "--json", check_code=0)
    rows = json.loads(r.stdout)
    assert len(rows) == 5 and all(0 <= row["probability"] <= 1 for row in rows)
    r = descend("predict", run, tmp_path / "nothing.png")
    assert r.returncode == 2 and "does not exist" in r.stderr

    # Training again into the same folder is refused; resuming extends it.
    assert descend("train", *SMALL_DIGITS, "--run-dir", run).returncode == 2
    descend("train", "--resume", run, "--epochs", "4", "--quiet", check_code=0)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 4


def test_ensemble_of_two_reports_members_and_combination(tmp_path):
    pytest.importorskip("sklearn")
    run = tmp_path / "ens"
    r = descend("train", *SMALL_DIGITS, "--epochs", "2", "--ensemble", "2", "--run-dir", run, "--quiet", check_code=0)
    assert "member-1" in r.stdout and "member-2" in r.stdout and "vote" in r.stdout
    r = descend("evaluate", run, "--json", check_code=0)
    results = json.loads(r.stdout)
    assert len(results["members"]) == 2 and "test_accuracy_vote" in results
    # the ensemble of the first member alone is that member; of both, the ensemble
    assert results["test_accuracy_by_members"] == [results["members"][0]["test_accuracy"], results["test_accuracy"]]

    # test-time augmentation of an ensemble: each member's softmax averaged over x and its
    # mirror image, then averaged over the members (oracle: the same by hand)
    from descend import build, runs

    tta = runs.evaluate(run, tta="flip")
    config = runs.read_config(run)
    splits = build.load_data(config)
    x, y = splits.test.x, splits.test.y
    probs = []
    for member in ("member-1", "member-2"):
        model = runs.load_trained(config, splits, run / member).model.eval()
        with torch.no_grad():
            p = (model(x).softmax(1) + model(x.flip(-1)).softmax(1)) / 2
        probs.append(p)
        entry = next(m for m in tta["members"] if m["member"] == member)
        assert entry["test_accuracy_tta"] == pytest.approx(float((p.argmax(1) == y).double().mean()))
    expected = float((torch.stack(probs).mean(0).argmax(1) == y).double().mean())
    assert tta["test_accuracy_average_tta"] == pytest.approx(expected)
    assert tta["test_accuracy"] == results["test_accuracy"]  # the plain accuracies are unchanged
    assert "with test-time augmentation" in descend("evaluate", run, "--tta", "flip", check_code=0).stdout


def test_mnist_smoke_2000_digits(tmp_path, mnist_dir):
    """The default network on 2,000 MNIST digits for 2 epochs clears 90% (it reaches ~95%)."""
    run = tmp_path / "mnist"
    descend("train", "--set", "data.limit=2000", "--set", "data.eval_limit=2000", "--set", "model.hidden=[100]",
            "--set", "train.batch_size=32", "--epochs", "2", "--data-dir", mnist_dir, "--run-dir", run, "--quiet", check_code=0)
    assert json.loads((run / "results.json").read_text())["test_accuracy"] > 0.90


def test_nproc_trains_ensemble_members_in_parallel_processes(tmp_path):
    """``--ensemble 2 --nproc 2``: torchrun starts 2 processes, each trains one member alone.
    Oracle: the same two networks trained one after the other in this process."""
    pytest.importorskip("sklearn")
    from safetensors.torch import load_file

    from descend import config as cfg
    from descend import build

    run = tmp_path / "ens"
    r = descend("train", *SMALL_DIGITS, "--epochs", "1", "--ensemble", "2", "--nproc", "2", "--run-dir", run,
                "--quiet", check_code=0)
    assert "test accuracy" in r.stdout and "Traceback" not in r.stderr
    results = json.loads((run / "results.json").read_text())
    assert [m["member"] for m in results["members"]] == ["member-1", "member-2"]
    config = cfg.load(run / "config.toml")
    splits = build.load_data(config)
    for i in (1, 2):
        trainer = build.build_trainer(config, splits, None, config.seed + i - 1, data_parallel=False)
        trainer.fit()
        weights = load_file(str(run / f"member-{i}" / "model.safetensors"))
        for key, value in trainer.model.state_dict().items():
            assert torch.allclose(value.double(), weights[key].double(), atol=1e-5), (i, key)


def test_nproc_is_checked(tmp_path, monkeypatch):
    r = descend("train", "--nproc", "0", cwd=tmp_path)
    assert r.returncode == 2 and "must be >= 1" in r.stderr
    monkeypatch.setenv("WORLD_SIZE", "2")
    r = descend("train", "--nproc", "2", cwd=tmp_path)
    assert r.returncode == 2 and "under torchrun, leave it out" in r.stderr


# ----------------------------------------------------------------------------- conventions
def test_bare_descend_prints_help_and_exits_2():
    r = descend()
    assert r.returncode == 2 and "usage: descend" in r.stderr and "COMMAND" in r.stderr


def test_version_names_descend_torch_and_the_device():
    from descend import __version__

    lines = descend("--version", check_code=0).stdout.splitlines()
    assert lines[0] == f"descend {__version__}" and lines[1] == f"torch {torch.__version__}"
    expected = f"cuda ({torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "cpu (no CUDA GPU)"
    assert lines[2].startswith(f"device: {expected}")


def test_every_positional_argument_has_help():
    import argparse

    from descend.cli import _parser

    parser = _parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert subparsers.help
    checked = []
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            if not action.option_strings:
                assert action.help, f"descend {name} {action.metavar or action.dest} has no help"
                checked.append(name)
    assert {"evaluate", "export", "experiment", "predict"} <= set(checked)


ENSEMBLE_RESULTS = {
    "members": [{"member": "member-1", "test_accuracy": 0.91}, {"member": "member-2", "test_accuracy": 0.92}],
    "test_accuracy": 0.93, "test_accuracy_average": 0.93, "test_accuracy_vote": 0.925,
    "test_accuracy_by_members": [0.91, 0.925, 0.93],
}


@pytest.mark.parametrize("quiet", [False, True])
def test_evaluate_quiet_prints_only_the_final_accuracies(monkeypatch, capsys, quiet):
    from descend import cli, runs

    monkeypatch.setattr(runs, "evaluate", lambda run_dir, data_dir=None, tta=None, weights="last": ENSEMBLE_RESULTS)
    assert cli.main(["evaluate", "somewhere", *(["--quiet"] if quiet else [])]) == 0
    out = capsys.readouterr().out
    final = "test accuracy: 93.00%  (average 93.00%, vote 92.50%)"
    if quiet:
        assert out.splitlines() == [final]
    else:
        assert "member-1: test 91.00%" in out and final in out and "first 1, 2, ... members: 91.00 92.50 93.00" in out


def test_export_writes_an_onnx_file_that_onnxruntime_runs(tmp_path):
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    from test_export import make_run

    last, _ = make_run(tmp_path / "run")
    r = descend("export", tmp_path / "run", "--format", "onnx", "--output", tmp_path / "net.onnx", check_code=0)
    assert r.stdout.strip() == f"wrote {tmp_path / 'net.onnx'}"
    x = torch.rand(3, 1, 8, 8)
    got = ort.InferenceSession(str(tmp_path / "net.onnx")).run(["logits"], {"images": x.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), last(x), atol=1e-4, rtol=0)
    r = descend("export", tmp_path / "run", "--weights", "best")
    assert r.returncode == 2 and "no best.safetensors" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("quiet", [False, True])
def test_library_messages_reach_stderr_unless_quiet(monkeypatch, capsys, quiet):
    import logging

    from descend import cli, runs

    def evaluate(run_dir, data_dir=None, tta=None, weights="last"):
        logging.getLogger("descend.train.callbacks").info("early stopping: restored the weights of epoch 2")
        return {"test_accuracy": 0.5}

    monkeypatch.setattr(runs, "evaluate", evaluate)
    logger = logging.getLogger("descend")
    try:
        assert cli.main(["evaluate", "somewhere", *(["--quiet"] if quiet else [])]) == 0
        err = capsys.readouterr().err
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    assert ("restored the weights of epoch 2" in err) is not quiet
