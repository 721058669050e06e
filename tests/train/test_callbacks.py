"""BestWeights (best.safetensors, kept across resume) and what EarlyStopping reports."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from descend.errors import ConfigError
from descend.train import EarlyStopping, Trainer
from descend.train.callbacks import BestWeights

from train.test_loggers import KillAt, tiny_data, tiny_model


class Scripted:
    """Replaces the monitored metric by a fixed sequence and records the weights of each epoch."""

    def __init__(self, values, key="val_accuracy"):
        self.values, self.key, self.weights = values, key, {}

    def on_epoch_end(self, trainer, epoch, metrics):
        metrics[self.key] = self.values[epoch - 1]
        self.weights[epoch] = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def make(run_dir, callbacks, epochs):
    model = tiny_model()
    return Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), tiny_data(), epochs=epochs, batch_size=16,
                   run_dir=run_dir, quiet=True, callbacks=callbacks)


def saved(path):
    with safe_open(str(path), framework="pt") as f:
        return load_file(str(path)), json.loads(f.metadata()["descend"])


@pytest.mark.parametrize("mode, values, best_epoch", [
    ("max", [0.5, 0.7, 0.7, 0.6, 0.8, 0.8], 5),   # the tie at epoch 6 keeps epoch 5
    ("min", [0.5, 0.4, 0.45, 0.4, 0.6, 0.3], 6),
])
def test_best_weights_are_those_of_the_best_epoch(tmp_path, mode, values, best_epoch):
    script = Scripted(values, "val_loss" if mode == "min" else "val_accuracy")
    best = BestWeights(tmp_path / "best.safetensors", monitor=script.key)
    assert best.mode == mode
    make(tmp_path, [script, best], epochs=6).fit()
    tensors, meta = saved(tmp_path / "best.safetensors")
    assert meta == {"epoch": best_epoch, script.key: values[best_epoch - 1]}
    for k, v in script.weights[best_epoch].items():
        assert torch.equal(tensors[k], v)
    assert not torch.equal(tensors["0.weight"], script.weights[6]["0.weight"]) or best_epoch == 6


def test_best_weights_remember_the_best_across_a_resume(tmp_path):
    values = [0.9, 0.5, 0.6, 0.95, 0.7]
    with pytest.raises(KeyboardInterrupt):
        make(tmp_path, [Scripted(values), BestWeights(tmp_path / "best.safetensors"), KillAt(3)], epochs=5).fit()
    script, best = Scripted(values), BestWeights(tmp_path / "best.safetensors")
    trainer = make(tmp_path, [script, best], epochs=5)
    trainer.resume()
    assert (best.best, best.best_epoch) == (0.9, 1)
    trainer.fit()
    tensors, meta = saved(tmp_path / "best.safetensors")
    assert meta["epoch"] == 4 and best.state_dict() == {"monitor": "val_accuracy", "best": 0.95, "best_epoch": 4}
    for k, v in script.weights[4].items():
        assert torch.equal(tensors[k], v)


def test_callback_state_follows_its_callback_when_the_list_changes_on_resume(tmp_path):
    """A resumed run with another stateful callback in front (early stopping switched on at
    the resume) still gives BestWeights its own best, and early stopping starts afresh."""
    values = [0.9, 0.5, 0.6, 0.95, 0.7]
    with pytest.raises(KeyboardInterrupt):
        make(tmp_path, [Scripted(values), BestWeights(tmp_path / "best.safetensors"), KillAt(3)], epochs=5).fit()
    stop, best = EarlyStopping(patience=100), BestWeights(tmp_path / "best.safetensors")
    trainer = make(tmp_path, [Scripted(values), stop, best], epochs=5)
    trainer.resume()
    assert (best.best, best.best_epoch) == (0.9, 1)
    assert (stop.best, stop.best_epoch, stop.bad_epochs) == (-math.inf, 0, 0)
    trainer.fit()
    assert (best.best, best.best_epoch) == (0.95, 4) and (stop.best, stop.best_epoch) == (0.95, 4)


def test_a_checkpoint_keyed_by_position_still_loads_and_is_still_checked(tmp_path):
    """Checkpoints of earlier versions keyed callback states by position: they load by
    position, and a state of the wrong structure is still refused with its place named."""
    import fuzz_inputs as fi
    from descend.errors import CheckpointError
    from descend.train.checkpoint import META_KEY

    values = [0.9, 0.5, 0.6, 0.95, 0.7]
    with pytest.raises(KeyboardInterrupt):
        make(tmp_path, [Scripted(values), BestWeights(tmp_path / "best.safetensors"), KillAt(3)], epochs=5).fit()
    path = tmp_path / "checkpoint.safetensors"
    raw = path.read_bytes()
    meta = json.loads(fi.split_safetensors(raw)[0]["__metadata__"][META_KEY])

    def rewrite(state_of_bestweights):
        meta["state"]["callbacks"] = {"1": state_of_bestweights}  # BestWeights was callback 1
        path.write_bytes(fi.resign(raw, json.dumps(meta)))

    old_state = meta["state"]["callbacks"]["BestWeights#0"]
    rewrite(old_state)
    best = BestWeights(tmp_path / "best.safetensors")
    make(tmp_path, [Scripted(values), best], epochs=5).resume()
    assert (best.best, best.best_epoch) == (0.9, 1)
    rewrite(dict(old_state, best="high"))
    with pytest.raises(CheckpointError, match="'callbacks.1.best' must be a number"):
        make(tmp_path, [Scripted(values), BestWeights(tmp_path / "best.safetensors")], epochs=5).resume()


def test_best_weights_name_the_missing_metric(tmp_path):
    with pytest.raises(ConfigError, match="val_f1"):
        make(tmp_path, [BestWeights(tmp_path / "b.safetensors", monitor="val_f1")], epochs=1).fit()


def test_early_stopping_says_when_and_why_and_that_it_restored(tmp_path, caplog):
    script = Scripted([0.5, 0.6, 0.55, 0.55, 0.9])
    stop = EarlyStopping(patience=1)
    with caplog.at_level(logging.INFO, logger="descend.train.callbacks"):
        history = make(None, [script, stop], epochs=5).fit()
    assert len(history) == 4 and stop.stopped_epoch == 4
    assert "val_accuracy" in stop.reason and "epoch 2" in stop.reason and "patience 1" in stop.reason
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("early stopping at epoch 4: val_accuracy did not improve") for m in messages)
    assert "early stopping: restored the weights of epoch 2 (val_accuracy 0.6)" in messages


def test_early_stopping_that_never_stopped_has_no_reason():
    stop = EarlyStopping(patience=5)
    make(None, [Scripted([0.1, 0.2]), stop], epochs=2).fit()
    assert (stop.stopped_epoch, stop.reason) == (0, "")


@pytest.mark.parametrize("final", [True, False])
def test_under_averaging_the_best_weights_are_the_averaged_ones_that_scored(tmp_path, final):
    """With Polyak averaging (sec. 8.7.3) each epoch is scored with the averaged weights, so the
    best epoch's file and early stopping's restored weights are those averaged weights: loaded
    into a fresh model, they score exactly the best validation loss that was recorded."""
    from descend.optim import PolyakAverage
    from descend.train import AveragedEvaluation, load_weights

    model = tiny_model()
    data = tiny_data()
    averager = PolyakAverage(model, mode="ema", decay=0.5, include_buffers=True)
    best = BestWeights(tmp_path / "best.safetensors", monitor="val_loss")
    stop = EarlyStopping(monitor="val_loss", patience=100)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.3), data, epochs=5, batch_size=16,
                      run_dir=tmp_path, quiet=True, callbacks=[AveragedEvaluation(averager, final=final), best, stop])
    history = trainer.fit()
    losses = [h["val_loss"] for h in history]
    assert best.best == min(losses) and stop.best == min(losses)
    fresh = tiny_model()
    load_weights(tmp_path / "best.safetensors", fresh)
    scorer = Trainer(fresh, torch.optim.SGD(fresh.parameters(), lr=0.0), data, epochs=0, quiet=True)
    assert scorer.evaluate(data.val)["loss"] == pytest.approx(best.best, rel=1e-6)
    fresh.load_state_dict(stop.best_state)
    assert scorer.evaluate(data.val)["loss"] == pytest.approx(stop.best, rel=1e-6)
