"""Truncated BPTT as the Trainer's batch_step (Deep Learning sec. 10.2.2).

Oracles: the Trainer's own full-BPTT step (chunk length = sequence length), and updates
computed by hand with torch.autograd.grad on chunks whose incoming state is detached.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from descend.data.tensors import TensorPair
from descend.errors import ConfigError, ShapeError
from descend.nn import LSTM, RNN, SequenceToOne, SequenceToSequence
from descend.optim import register_grad_clipping
from descend.train import Trainer
from descend.train.tbptt import TruncatedBPTT, detach_state

D = torch.float64


class Tagger(nn.Module):
    """Sequence-to-sequence model for the Trainer: logits (N, K, T) so the default
    cross-entropy and the Trainer's argmax over dim 1 work per time step."""

    def __init__(self, layer, K):
        super().__init__()
        self.net = SequenceToSequence(layer, K)

    def forward_chunk(self, x, state=None):
        o, state = self.net(x, state)
        return o.transpose(1, 2), state

    def forward(self, x):
        return self.forward_chunk(x)[0]


class Reader(nn.Module):
    """Sequence-to-one model (fig. 10.5): logits (N, K) from the final state."""

    def __init__(self, layer, K):
        super().__init__()
        self.net = SequenceToOne(layer, K)

    def forward_chunk(self, x, state=None):
        return self.net(x, state)

    def forward(self, x):
        return self.net(x)[0]


def data(N=12, T=10, F_=3, K=4, per_step=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, T, F_, generator=g, dtype=D)
    y = torch.randint(0, K, (N, T) if per_step else (N,), generator=g)
    return TensorPair(x, y)


def fit(model, pair, batch_step, lr=0.1, epochs=1, batch_size=4, clip=None, optimizer=None):
    opt = optimizer(model.parameters()) if optimizer else torch.optim.SGD(model.parameters(), lr=lr)
    if clip is not None:
        register_grad_clipping(opt, max_norm=clip)
    trainer = Trainer(model, opt, (pair,), epochs=epochs, batch_size=batch_size, batch_step=batch_step,
                      quiet=True, shuffle=False, checkpoint=False, evaluate_test=False)
    history = trainer.fit()
    return [p.detach().clone() for p in model.parameters()], history


def make(kind, per_step=True, seed=0):
    torch.manual_seed(seed)
    layer = RNN(3, 5, dtype=D) if kind == "rnn" else LSTM(3, 5, dtype=D)
    return Tagger(layer, 4) if per_step else Reader(layer, 4)


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
@pytest.mark.parametrize("per_step", [True, False])
def test_chunk_length_equal_to_sequence_length_is_full_bptt(kind, per_step):
    pair = data(per_step=per_step)
    full, h_full = fit(make(kind, per_step), pair, None)
    tbptt, h_tbptt = fit(make(kind, per_step), pair, TruncatedBPTT(10))
    for a, b in zip(full, tbptt):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert h_full[0]["train_loss"] == pytest.approx(h_tbptt[0]["train_loss"], rel=1e-12)


def manual_tbptt_step(model, x, y, chunk, lr, per_step):
    """The truncated-BPTT updates by hand: per chunk, the state from the previous chunk
    (computed before this chunk's update) enters detached; one SGD step per loss."""
    state = None
    T = x.shape[1]
    for start in range(0, T, chunk):
        xc = x[:, start : start + chunk]
        is_last = start + chunk >= T
        if not per_step and not is_last:
            with torch.no_grad():
                state = model.forward_chunk(xc, state)[1]
            continue
        if state is not None:
            state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
        out, new_state = model.forward_chunk(xc, state)
        target = y[:, start : start + chunk] if per_step else y
        loss = F.cross_entropy(out, target)
        grads = torch.autograd.grad(loss, list(model.parameters()))
        with torch.no_grad():
            for p, g in zip(model.parameters(), grads):
                p -= lr * g
        state = new_state


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
@pytest.mark.parametrize("per_step", [True, False])
def test_truncated_updates_match_a_hand_computation(kind, per_step):
    pair = data(N=4, T=10, per_step=per_step, seed=3)
    got, _ = fit(make(kind, per_step, seed=1), pair, TruncatedBPTT(3), lr=0.2, batch_size=4)
    model = make(kind, per_step, seed=1)
    manual_tbptt_step(model, pair.x, pair.y, 3, 0.2, per_step)
    for a, b in zip(got, model.parameters()):
        torch.testing.assert_close(a, b.detach(), rtol=1e-12, atol=1e-14)
    # ...and truncation matters: the update differs from full BPTT.
    full, _ = fit(make(kind, per_step, seed=1), pair, None, lr=0.2, batch_size=4)
    assert any(not torch.allclose(a, b) for a, b in zip(got, full))


def test_gradient_clipping_hooks_on_the_optimizer_act_on_every_chunk():
    """register_grad_clipping(max_norm=v) makes every chunk's step use a gradient of norm v (sec. 10.11.1)."""
    pair = data(N=4, T=12, seed=5)
    v = 1e-3
    model = make("rnn")
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    register_grad_clipping(opt, max_norm=v)
    seen = []  # global gradient norm at each step, read by a pre-hook registered after the clipping one
    opt.register_step_pre_hook(lambda o, a, k: seen.append(
        torch.sqrt(sum((p.grad**2).sum() for p in model.parameters())).item()))
    trainer = Trainer(model, opt, (pair,), epochs=1, batch_size=4, batch_step=TruncatedBPTT(3),
                      quiet=True, shuffle=False, checkpoint=False, evaluate_test=False)
    trainer.fit()
    assert len(seen) == 4  # one step per chunk of 3 of the 12 steps
    assert seen == pytest.approx([v] * 4, rel=1e-9)


def test_closure_optimizers_get_one_closure_per_chunk():
    class ClosureSGD(torch.optim.SGD):
        needs_closure = True
        calls = 0

        def step(self, closure):
            ClosureSGD.calls += 1
            with torch.enable_grad():
                closure()
            return super().step()

    pair = data(N=4, T=10, seed=2)
    got, _ = fit(make("lstm"), pair, TruncatedBPTT(4), lr=0.1,
                 optimizer=lambda ps: ClosureSGD(ps, lr=0.1))
    plain, _ = fit(make("lstm"), pair, TruncatedBPTT(4), lr=0.1)
    assert ClosureSGD.calls == 3  # chunks of 4, 4, 2 steps
    for a, b in zip(got, plain):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_detach_state_handles_tensors_tuples_and_none():
    h = torch.ones(2, 3, requires_grad=True) * 2
    assert detach_state(None) is None
    assert detach_state(h).grad_fn is None
    a, b = detach_state((h, h + 1))
    assert a.grad_fn is None and b.grad_fn is None
    with pytest.raises(ShapeError, match="tensor or a tuple"):
        detach_state("h")


def test_bad_chunk_lengths_and_models_raise_clear_errors():
    with pytest.raises(ConfigError, match="chunk_length"):
        TruncatedBPTT(0)
    with pytest.raises(ConfigError, match="chunk_length"):
        TruncatedBPTT(2.5)
    plain = nn.Linear(3, 4).double()
    pair = data(N=4, T=6)
    with pytest.raises(ConfigError, match=r"forward\(x, state\)"):
        fit(plain, pair, TruncatedBPTT(2))

    class NoState(nn.Linear):
        def forward(self, x, state=None):
            return super().forward(x)

    with pytest.raises(ConfigError, match=r"\(output, state\)"):
        fit(NoState(3, 4).double(), pair, TruncatedBPTT(2))
    images = TensorPair(torch.randn(4, 1, 5, 5, dtype=D), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ShapeError, match="to_sequence"):
        fit(plain, images, TruncatedBPTT(2))


def test_truncated_bptt_from_the_config():
    """``train.tbptt = k`` gives the Trainer a TruncatedBPTT(k) batch step (digits rows as time)."""
    pytest.importorskip("sklearn")
    from descend import config as cfg
    from descend import build
    from descend.data import load_dataset
    from descend.train import TruncatedBPTT

    config = cfg.load(overrides=["model=rnn", "data.dataset=digits", "data.augment=none", "train.tbptt=4",
                                 "train.epochs=1", "train.batch_size=64", "optimizer=adam", "optimizer.lr=0.01"])
    splits = load_dataset("digits")
    trainer = build.build_trainer(config, splits, None, seed=0)
    assert isinstance(trainer.batch_step, TruncatedBPTT) and trainer.batch_step.chunk_length == 4
    history = trainer.fit()
    assert history[-1]["val_accuracy"] > 0.2  # chance is 0.1
    with pytest.raises(ConfigError, match="train.tbptt"):
        cfg.load(overrides=["train.tbptt=-1"])
