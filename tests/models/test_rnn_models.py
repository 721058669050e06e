"""The "rnn" and "lstm" image classifiers of ``descend train`` (row-sequential MNIST; Deep Learning sec. 10.2)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from descend.data.sequences import sequential_mnist
from descend.errors import ConfigError, ShapeError
from descend.models import MODELS
from descend.models.rnn_models import LSTMClassifier, RNNClassifier


@pytest.mark.parametrize("cls", [RNNClassifier, LSTMClassifier])
@pytest.mark.parametrize("order", ["rows", "pixels"])
def test_classifier_reads_images_as_sequences_and_classifies_from_the_final_state(cls, order):
    torch.manual_seed(0)
    model = cls(in_channels=1, image_size=6, num_classes=3, hidden_size=5, order=order)
    images = torch.rand(4, 1, 6, 6)
    logits = model(images)
    assert logits.shape == (4, 3)
    # The same as feeding the sequence view to the wrapped sequence-to-one network.
    seq = sequential_mnist(images, order)
    assert seq.shape == ((4, 6, 6) if order == "rows" else (4, 36, 1))
    torch.testing.assert_close(logits, model.net(seq)[0])
    # ...and as running the recurrent layer by hand and applying o = c + V h(tau).
    h, _ = model.net.recurrent(seq)
    torch.testing.assert_close(logits, h[:, -1] @ model.net.V.T + model.net.c)


def test_models_are_registered_for_descend_train():
    assert MODELS["rnn"] is RNNClassifier and MODELS["lstm"] is LSTMClassifier


def test_wrong_images_and_options_raise_clear_errors():
    model = RNNClassifier(in_channels=1, image_size=28)
    with pytest.raises(ShapeError, match=r"expected images \(N, 1, H, 28\)"):
        model(torch.rand(2, 1, 8, 8))
    with pytest.raises(ShapeError, match="expected images"):
        model(torch.rand(2, 28, 28))
    with pytest.raises(ConfigError, match="order"):
        LSTMClassifier(order="columns")
    with pytest.raises(ConfigError, match="hidden_size"):
        RNNClassifier(hidden_size=0)


def _mnist_dir() -> Path | None:
    root = os.environ.get("DESCEND_DATA")
    if root and (Path(root) / "mnist").is_dir():
        return Path(root)
    return None


@pytest.mark.skipif(_mnist_dir() is None, reason="MNIST not found: set DESCEND_DATA to a folder holding mnist/")
def test_descend_train_runs_the_lstm_on_row_sequential_mnist(tmp_path):
    """The whole `descend train` path (config -> model -> Trainer -> checkpoint -> evaluate) with model = "lstm"."""
    from descend import config as cfg
    from descend import runs

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny network: extra threads only contend on a shared machine
    try:
        _train_lstm(cfg, runs, tmp_path)
    finally:
        torch.set_num_threads(threads)


def _train_lstm(cfg, runs, tmp_path):
    config = cfg.load(None, [
        'model="lstm"', "model.hidden_size=32", 'optimizer="adam"', "optimizer.lr=0.01",
        'data.augment="none"', "data.limit=1000", "data.eval_limit=500", "train.epochs=1",
        'schedule="constant"', "train.batch_size=32", "train.clip_norm=1.0", "quiet=true", f'data.data_dir="{_mnist_dir()}"',
    ])
    run_dir, results = runs.train(config, tmp_path / "run")
    assert (run_dir / "model.safetensors").is_file()
    # 32 steps of 32 images reach ~35-40%; chance is 10% +- 1.3% on 500 test images.
    assert results["test_accuracy"] > 0.2
