from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from descend.data import RandomShift, Splits, TensorPair, load_dataset
from descend.errors import CheckpointError, ConfigError, Diverged
from descend.train import Callback, EarlyStopping, Trainer
from descend.train.trainer import CHECKPOINT, METRICS, WEIGHTS


def digits():
    pytest.importorskip("sklearn")
    return load_dataset("digits")


def small_cnn(dropout=0.3):
    return nn.Sequential(
        nn.Conv2d(1, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(), nn.Dropout(dropout),
        nn.Linear(6 * 6 * 6, 32), nn.ReLU(), nn.Dropout(dropout), nn.Linear(32, 10),
    )


def make_trainer(data, run_dir=None, epochs=2, seed=0, augment=RandomShift(1), **kw):
    torch.manual_seed(123)
    model = small_cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)
    steps = epochs * -(-len(data.train) // 32)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=steps)
    return Trainer(model, opt, data, epochs=epochs, batch_size=32, scheduler=sched, run_dir=run_dir, seed=seed,
                   augment=augment, quiet=True, **kw)


def test_training_learns_the_digits():
    data = digits()
    history = make_trainer(data, epochs=5, augment=None).fit()
    assert len(history) == 5
    assert history[-1]["val_accuracy"] > 0.9 and history[-1]["test_accuracy"] > 0.9
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    for key in ("epoch", "train_loss", "val_loss", "val_accuracy", "test_loss", "test_accuracy", "lr", "seconds", "images_per_s"):
        assert key in history[-1]


def test_resume_continues_bit_for_bit(tmp_path):
    """2 epochs straight == 1 epoch, checkpoint, a new process-like Trainer, resume, 1 epoch."""
    data = digits().limited(400, 100)
    straight = make_trainer(data, tmp_path / "a", epochs=2)
    h_straight = straight.fit()

    first = make_trainer(data, tmp_path / "b", epochs=2)
    first.epochs = 1
    first.fit()
    torch.manual_seed(999)  # scramble the global RNG: the checkpoint must restore it
    second = make_trainer(data, tmp_path / "b", epochs=2)
    second.resume()
    h_resumed = second.fit()

    assert [h["train_loss"] for h in h_resumed] == [h["train_loss"] for h in h_straight]
    assert [h["val_loss"] for h in h_resumed] == [h["val_loss"] for h in h_straight]
    for (k, a), (_, b) in zip(straight.model.state_dict().items(), second.model.state_dict().items()):
        assert torch.equal(a, b), k
    lines = (tmp_path / "b" / METRICS).read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in lines] == [1, 2]


def test_plain_loop_oracle_same_numbers_as_a_hand_written_loop():
    """The Trainer's training step is exactly a hand-written PyTorch loop (no augmentation)."""
    data = digits().limited(256, 64)
    trainer = Trainer(*_pair_model(), data, epochs=1, batch_size=64, seed=5, quiet=True)
    trainer.fit()
    model, opt = _pair_model()
    order = torch.randperm(256, generator=torch.Generator().manual_seed((5 * 1_000_003 + 1) * 7))
    for idx in order.split(64):
        opt.zero_grad()
        F.cross_entropy(model(data.train.x[idx]), data.train.y[idx]).backward()
        opt.step()
    for a, b in zip(trainer.model.parameters(), model.parameters()):
        assert torch.equal(a, b)


def _pair_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def test_nan_loss_raises_diverged_and_keeps_the_last_good_checkpoint(tmp_path):
    data = digits().limited(256, 64)

    class Explode(Callback):
        def on_epoch_start(self, trainer, epoch):
            if epoch == 2:
                with torch.no_grad():
                    trainer.model[-1].weight.fill_(float("nan"))

    trainer = make_trainer(data, tmp_path, epochs=3, callbacks=[Explode()])
    with pytest.raises(Diverged, match=r"epoch 2, batch 1/.*smaller learning rate"):
        trainer.fit()
    from descend.train import load_state

    assert load_state(tmp_path / CHECKPOINT)["epoch"] == 1


def test_callbacks_are_called_in_order_and_can_stop():
    data = digits().limited(128, 32)
    calls = []

    class Spy(Callback):
        def on_fit_start(self, t): calls.append("fit_start")
        def on_epoch_start(self, t, e): calls.append(f"epoch_start {e}")
        def on_batch_end(self, t, i, loss): calls.append("batch")
        def on_validation_start(self, t): calls.append("val_start")
        def on_validation_end(self, t): calls.append("val_end")
        def on_epoch_end(self, t, e, m):
            calls.append(f"epoch_end {e}")
            t.should_stop = e == 2
        def on_fit_end(self, t): calls.append("fit_end")

    history = make_trainer(data, epochs=5, callbacks=[Spy()]).fit()
    assert len(history) == 2
    assert calls[:2] == ["fit_start", "epoch_start 1"] and calls[-1] == "fit_end"
    assert calls.count("batch") == 2 * 4 and calls.count("val_start") == 2


def test_early_stopping_restores_the_best_weights():
    data = digits().limited(300, 100)
    stopper = EarlyStopping(monitor="val_loss", patience=0)

    class Worsen(Callback):  # from epoch 3 on, the weights are scrambled and frozen
        def on_epoch_start(self, t, e):
            if e >= 3:
                with torch.no_grad():
                    for p in t.model.parameters():
                        p.add_(torch.randn_like(p) * 3.0)
                for g in t.optimizer.param_groups:
                    g["lr"] = 0.0

    worsen = Worsen()
    trainer = make_trainer(data, epochs=10, callbacks=[worsen, stopper])
    trainer.scheduler = None
    history = trainer.fit()
    assert len(history) == 3
    best = min(range(len(history)), key=lambda i: history[i]["val_loss"]) + 1
    assert stopper.best_epoch == best
    assert trainer.evaluate(data.val)["loss"] == pytest.approx(history[best - 1]["val_loss"], rel=1e-6)


def test_closure_optimizers_get_a_closure():
    data = digits().limited(64, 32)

    class ClosureSGD(torch.optim.SGD):
        needs_closure = True
        calls = 0

        def step(self, closure=None):
            assert closure is not None
            ClosureSGD.calls += 1
            loss = closure()
            super().step()
            return loss

    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    Trainer(model, ClosureSGD(model.parameters(), lr=0.1), data, epochs=1, batch_size=16, quiet=True).fit()
    assert ClosureSGD.calls == 4


def test_sampler_controls_the_order_and_evaluate_is_exact():
    x = torch.randn(10, 3)
    y = torch.arange(10) % 2
    data = Splits(TensorPair(x, y), TensorPair(x, y))
    seen = []

    def sampler(trainer, epoch, generator):
        return torch.arange(9, -1, -1)

    class Record(Callback):
        def on_batch_end(self, t, i, loss):
            seen.append(t.batch[1].clone())

    model = nn.Linear(3, 2)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.0), data, epochs=1, batch_size=4,
                      sampler=sampler, callbacks=[Record()], quiet=True)
    trainer.fit()
    assert torch.equal(torch.cat(seen), y.flip(0))
    result = trainer.evaluate(x, y)
    with torch.no_grad():
        logits = model(x)
    assert result["accuracy"] == float((logits.argmax(1) == y).double().mean())
    assert result["loss"] == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-6)


def test_resume_with_a_different_model_is_a_checkpoint_error(tmp_path):
    data = digits().limited(64, 32)
    make_trainer(data, tmp_path, epochs=1).fit()
    assert (tmp_path / WEIGHTS).exists()
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    other = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), data, run_dir=tmp_path, quiet=True)
    with pytest.raises(CheckpointError, match="does not match"):
        other.resume()


def test_exact_newton_gets_the_gradient_graph_it_needs():
    """Newton (Alg. 8.8) differentiates the gradient again: the Trainer's closure keeps its graph."""
    from descend.optim import Newton

    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 4, generator=g, dtype=torch.float64)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    torch.manual_seed(0)
    model = nn.Linear(4, 3).double()
    data = Splits(TensorPair(x, y), TensorPair(x, y))
    before = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.0), data, quiet=True).evaluate(data.val)["loss"]
    trainer = Trainer(model, Newton(model.parameters(), damping=1e-2), data, epochs=3, batch_size=128, quiet=True)
    history = trainer.fit()
    assert history[-1]["val_loss"] < 0.5 * before


def test_regression_targets_report_loss_without_accuracy():
    x = torch.randn(32, 3)
    y = x.sum(1, keepdim=True)
    model = nn.Linear(3, 1)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), (TensorPair(x, y), TensorPair(x, y)),
                      loss=F.mse_loss, epochs=2, batch_size=8, quiet=True)
    history = trainer.fit()
    assert "val_loss" in history[-1] and "val_accuracy" not in history[-1]
    assert history[-1]["val_loss"] < history[0]["val_loss"]


def test_eval_every_evaluates_only_the_chosen_epochs_and_the_last_without_changing_training(tmp_path):
    from descend.train.callbacks import BestWeights

    data = digits().limited(256, 64)
    every = make_trainer(data, epochs=5).fit()
    best = BestWeights(tmp_path / "best.safetensors")
    trainer = make_trainer(data, epochs=5, eval_every=2, callbacks=[best])
    sparse = trainer.fit()
    assert [("val_accuracy" in h, "test_accuracy" in h) for h in sparse] == \
        [(False, False), (True, True), (False, False), (True, True), (True, True)]
    for a, b in zip(every, sparse):  # evaluation reads no random numbers and changes no weights
        assert a["train_loss"] == b["train_loss"]
        for key in ("val_accuracy", "test_loss"):
            if key in b:
                assert a[key] == b[key]
    assert best.best_epoch in (2, 4, 5)
    assert best.best == max(sparse[e - 1]["val_accuracy"] for e in (2, 4, 5))
    last_only = make_trainer(data, epochs=3, eval_every=0).fit()
    assert ["val_accuracy" in h for h in last_only] == [False, False, True]
    with pytest.raises(ConfigError, match="eval_every"):
        make_trainer(data, eval_every=-1)
