"""metrics.csv and TensorBoard events: each epoch exactly once after a kill and --resume,
with the numbers of the Trainer's history and metrics.jsonl."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from torch import nn

from descend.data import Splits, TensorPair
from descend.errors import ConfigError
from descend.train import Trainer
from descend.train.loggers import CSVLogger, TensorBoardLogger, columns, flat_hparams, tag


def tiny_data(n=96):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = (x[:, 0, :4].sum((1, 2)) > 0).long()
    return Splits(TensorPair(x[:64], y[:64]), TensorPair(x[64:80], y[64:80]), TensorPair(x[80:], y[80:]))


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))


class KillAt:
    """Interrupts training at the end of an epoch, after the loggers before it have written
    but before the Trainer appends to metrics.jsonl and saves the checkpoint."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, trainer, epoch, metrics):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def train_killed_then_resumed(run_dir, make_callbacks, kill=3, epochs=5):
    model = tiny_model()
    first = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), tiny_data(), epochs=epochs, batch_size=16,
                    run_dir=run_dir, quiet=True, callbacks=[*make_callbacks(), KillAt(kill)])
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    model = tiny_model()
    second = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), tiny_data(), epochs=epochs, batch_size=16,
                     run_dir=run_dir, quiet=True, callbacks=make_callbacks())
    second.resume()
    second.fit()
    return second


def read_jsonl(path):
    by_epoch = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        by_epoch[row["epoch"]] = row  # a re-trained epoch's line replaces the earlier one
    return [by_epoch[e] for e in sorted(by_epoch)]


def test_columns_are_the_union_in_order_of_first_appearance():
    assert columns([{"epoch": 1, "a": 1}, {"b": 2, "epoch": 2, "a": 3}]) == ["epoch", "a", "b"]


def test_csv_has_each_epoch_once_and_equals_the_history_after_kill_and_resume(tmp_path):
    trainer = train_killed_then_resumed(tmp_path, lambda: [CSVLogger(tmp_path / "metrics.csv")])
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5]
    assert list(rows[0]) == columns(trainer.history)
    for row, expected, logged in zip(rows, trainer.history, read_jsonl(tmp_path / "metrics.jsonl")):
        assert expected == logged
        for key, value in expected.items():
            assert float(row[key]) == value  # repr round-trips floats exactly


def test_csv_leaves_a_cell_empty_for_a_metric_an_epoch_lacks(tmp_path):
    from descend.train.loggers import write_csv

    write_csv(tmp_path / "m.csv", [{"epoch": 1, "a": 0.5}, {"epoch": 2, "b": 1}])
    assert (tmp_path / "m.csv").read_text() == "epoch,a,b\n1,0.5,\n2,,1\n"


def test_tags_group_losses_and_accuracies_by_split():
    assert [tag(k) for k in ("train_loss", "val_accuracy", "lr", "images_per_s")] == [
        "loss/train", "accuracy/val", "lr", "images_per_s"]


def test_flat_hparams_flattens_nested_tables():
    assert flat_hparams({"seed": 1, "optimizer": {"name": "sgd", "lr": 0.1}, "m": [1, 2], "x": None}) == {
        "seed": 1, "optimizer.name": "sgd", "optimizer.lr": 0.1, "m": "[1, 2]", "x": "None"}


def test_tensorboard_events_equal_the_history_once_per_epoch_after_kill_and_resume(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    log_dir = tmp_path / "tensorboard"
    hparams = {"optimizer.lr": 0.1, "model.name": "tiny"}
    trainer = train_killed_then_resumed(tmp_path, lambda: [TensorBoardLogger(log_dir, hparams=hparams)])
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    history = read_jsonl(tmp_path / "metrics.jsonl")
    assert history == trainer.history
    for key in ("train_loss", "val_loss", "test_loss", "val_accuracy", "test_accuracy", "lr", "images_per_s"):
        scalars = events.Scalars(tag(key))
        assert [s.step for s in scalars] == [1, 2, 3, 4, 5], key
        assert [s.value for s in scalars] == pytest.approx([h[key] for h in history], rel=1e-6), key
    assert set(events.Tags()["images"]) == {"learning_curves", "filters"}
    image = events.Images("filters")[-1]
    assert image.width > 100 and image.height > 50
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    assert start.hparams["optimizer.lr"].number_value == 0.1
    assert start.hparams["model.name"].string_value == "tiny"
    assert events.Scalars("hparam/test_accuracy")[-1].value == pytest.approx(history[-1]["test_accuracy"])


def test_tensorboard_missing_is_a_config_error_naming_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(ConfigError, match=r'pip install "descend\[tensorboard\]"'):
        TensorBoardLogger("unused")
