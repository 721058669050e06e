from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from descend.data import Splits, TensorPair
from descend.errors import ConfigError, ShapeError
from descend.train import Trainer
from descend.train.pretraining import (
    AuxiliaryHeads,
    fitnets,
    freeze,
    greedy_supervised_pretraining,
    transfer,
)


def blobs(n=240, seed=0):
    """Three Gaussian classes in 6 dimensions, with a validation split."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    centres = torch.randn(3, 6, generator=g) * 2
    x = centres[y] + torch.randn(n, 6, generator=g)
    return Splits(TensorPair(x[:180], y[:180]), TensorPair(x[180:], y[180:]))


def sgd(params):
    return torch.optim.SGD(params, lr=0.1)


def test_greedy_pretraining_trains_one_layer_at_a_time_then_fine_tunes():
    torch.manual_seed(0)
    data = blobs()
    blocks = [nn.Sequential(nn.Linear(6, 16), nn.Tanh()), nn.Sequential(nn.Linear(16, 12), nn.Tanh()),
              nn.Sequential(nn.Linear(12, 8), nn.Tanh())]
    snapshots = []

    class Snapshot:
        def on_fit_end(self, trainer):
            snapshots.append([b[0].weight.detach().clone() for b in blocks])

    before = [b[0].weight.detach().clone() for b in blocks]
    model, history = greedy_supervised_pretraining(blocks, data, sgd, epochs_per_stage=2, fine_tune_epochs=2,
                                                   freeze_lower=True, batch_size=16, callbacks=[Snapshot()])
    stages = [h["stage"] for h in history]
    assert stages == ["layer 1"] * 2 + ["layer 2"] * 2 + ["layer 3"] * 2 + ["fine-tune"] * 2
    # Stage k trains block k only (the lower blocks are frozen), higher blocks are untouched.
    s1, s2, s3, fine = snapshots
    assert not torch.equal(s1[0], before[0]) and torch.equal(s1[1], before[1]) and torch.equal(s1[2], before[2])
    assert torch.equal(s2[0], s1[0]) and not torch.equal(s2[1], s1[1]) and torch.equal(s2[2], before[2])
    assert torch.equal(s3[0], s2[0]) and torch.equal(s3[1], s2[1]) and not torch.equal(s3[2], s2[2])
    assert all(not torch.equal(a, b) for a, b in zip(fine, s3))  # joint fine-tuning moves everything
    assert isinstance(model[-1], nn.Linear) and model[-1].in_features == 8
    assert all(p.requires_grad for p in model.parameters())
    assert Trainer(model, sgd(model.parameters()), data, quiet=True).evaluate(data.val)["accuracy"] > 0.8


def test_transfer_copies_and_freezes_the_first_layers():
    source = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    target = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))
    copied = transfer(source, target, 2)
    assert copied == ["0.weight", "0.bias"]
    assert torch.equal(target[0].weight, source[0].weight) and not target[0].weight.requires_grad
    assert target[2].weight.requires_grad
    with pytest.raises(ShapeError, match="layer 2"):
        transfer(source, target, 3)
    with pytest.raises(ConfigError, match="layers"):
        transfer(source, target, 0)


def test_fitnets_student_learns_the_teachers_hint_then_the_task():
    torch.manual_seed(1)
    data = blobs(seed=1)
    teacher = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 3))
    Trainer(teacher, sgd(teacher.parameters()), data, epochs=3, batch_size=16, quiet=True).fit()
    teacher_before = teacher[0].weight.detach().clone()
    student = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(),
                            nn.Linear(4, 3))

    def hint_error():
        with torch.no_grad():
            return float((teacher[:2](data.train.x) - regressor(student[:4](data.train.x))).pow(2).mean())

    regressor = nn.Linear(4, 32)
    start = hint_error()
    momentum = lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9)  # noqa: E731
    student, history = fitnets(teacher, student, hint_layer=1, guided_layer=3, data=data, make_optimizer=momentum,
                               hint_epochs=4, task_epochs=0, regressor=regressor, batch_size=16)
    assert [h["stage"] for h in history] == ["hints"] * 4
    assert hint_error() < 0.7 * start  # the guided layer now predicts the teacher's middle layer
    assert torch.equal(teacher[0].weight, teacher_before)  # the teacher is not trained
    top_before = student[-1].weight.detach().clone()
    assert torch.equal(student[-1].weight, top_before)  # stage 1 leaves the layers above the guided one
    student, history = fitnets(teacher, student, hint_layer=1, guided_layer=3, data=data, make_optimizer=sgd,
                               hint_epochs=1, task_epochs=4, batch_size=16)  # default regressor: Linear(4, 32)
    task = [h for h in history if h["stage"] == "task"]
    assert len(task) == 4 and task[-1]["train_loss"] < task[0]["train_loss"]
    assert not torch.equal(student[-1].weight, top_before)


def test_auxiliary_heads_add_a_decaying_weighted_loss_and_are_discarded():
    torch.manual_seed(2)
    trunk = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))
    head = nn.Linear(8, 3)
    net = AuxiliaryHeads(trunk, {1: head}, weight=0.5, decay_epochs=2)
    x, y = torch.randn(10, 6), torch.randint(0, 3, (10,))
    loss = net.loss()(net(x), y)
    expected = F.cross_entropy(trunk(x), y) + 0.5 * F.cross_entropy(head(trunk[:2](x)), y)
    torch.testing.assert_close(loss, expected)
    assert [net.weight_at(e) for e in (1, 2, 3, 4)] == [0.5, 0.25, 0.0, 0.0]
    net.eval()
    torch.testing.assert_close(net.loss()(net(x), y), F.cross_entropy(trunk(x), y))  # no heads at test time
    net.train()
    data = blobs(seed=2)
    weights = []

    class Watch:
        def on_epoch_end(self, trainer, epoch, metrics):
            weights.append(net.weight)

    Trainer(net, sgd(net.parameters()), data, loss=net.loss(), epochs=3, batch_size=16,
            callbacks=[net.schedule(), Watch()], quiet=True).fit()
    assert weights == [0.5, 0.25, 0.0]
    assert net.discard() is trunk
    with pytest.raises(ConfigError, match="intermediate"):
        AuxiliaryHeads(trunk, {4: head})


def test_freeze_stops_training():
    layer = freeze(nn.Linear(2, 2))
    assert not any(p.requires_grad for p in layer.parameters())
