"""Recurrent networks of Deep Learning sec. 10.1-10.2 and the LSTM of sec. 10.10.

Oracles: the NumPy transcriptions in tests/reference/rnn.py (eqs. 10.8-10.14, fig. 10.4
with teacher forcing, the LSTM equations), torch.nn.LSTM / LSTMCell with copied
weights, and gradcheck in float64.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from descend.errors import ConfigError, ShapeError
from descend.nn import (
    LSTM,
    RNN,
    LSTMCell,
    OutputRecurrentRNN,
    SequenceToOne,
    SequenceToSequence,
    inverse_sigmoid_decay,
    sequence_nll,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for the NumPy oracles
from reference import rnn as ref  # noqa: E402

D = torch.float64


def rand(*shape, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=D) * scale


def fig_10_3_network(F, H, K, explicit_bptt=True, seed=0):
    torch.manual_seed(seed)
    net = SequenceToSequence(RNN(F, H, explicit_bptt=explicit_bptt, dtype=D), K)
    with torch.no_grad():  # nonzero biases so that b and c are exercised
        net.recurrent.b.copy_(rand(H, seed=seed + 1, scale=0.3))
        net.c.copy_(rand(K, seed=seed + 2, scale=0.3))
    return net


# ------------------------------------------------------------------ eqs. 10.8-10.14


@pytest.mark.parametrize("explicit_bptt", [True, False])
def test_rnn_outputs_and_loss_match_numpy_transcription_of_eqs_10_8_to_10_14(explicit_bptt):
    N, T, F, H, K = 3, 5, 4, 6, 3
    net = fig_10_3_network(F, H, K, explicit_bptt)
    x, h0 = rand(N, T, F, seed=3), rand(N, H, seed=4, scale=0.5)
    y = torch.randint(0, K, (N, T), generator=torch.Generator().manual_seed(5))
    o, hT = net(x, h0)
    h_seq, _ = net.recurrent(x, h0)
    params = [p.detach().numpy() for p in (net.recurrent.U, net.recurrent.W, net.recurrent.b, net.V, net.c)]
    losses = []
    for n in range(N):
        h_ref, o_ref, y_hat = ref.rnn_forward(x[n].numpy(), *params, h0=h0[n].numpy())
        np.testing.assert_allclose(h_seq[n].detach().numpy(), h_ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(o[n].detach().numpy(), o_ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(torch.softmax(o[n], 1).detach().numpy(), y_hat, rtol=1e-12, atol=1e-12)
        losses.append(ref.rnn_loss(y_hat, y[n].numpy()))
    np.testing.assert_allclose(hT.detach().numpy(), h_seq[:, -1].detach().numpy())
    np.testing.assert_allclose(sequence_nll(o, y, "none").detach().numpy(), losses, rtol=1e-12)
    np.testing.assert_allclose(sequence_nll(o, y, "sum").item(), sum(losses), rtol=1e-12)
    np.testing.assert_allclose(sequence_nll(o, y).item(), np.mean(losses), rtol=1e-12)


def test_explicit_bptt_backward_equals_autograd_through_the_loop():
    N, T, F, H, K = 4, 7, 3, 5, 4
    x = rand(N, T, F, seed=1)
    y = torch.randint(0, K, (N, T), generator=torch.Generator().manual_seed(2))
    grads = []
    for explicit in (True, False):
        net = fig_10_3_network(F, H, K, explicit, seed=9)
        xx = x.clone().requires_grad_()
        h0 = rand(N, H, seed=3).requires_grad_()
        sequence_nll(net(xx, h0)[0], y).backward()
        grads.append([xx.grad, h0.grad] + [p.grad for p in net.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_rnn_and_lstm_functions_pass_gradcheck():
    torch.manual_seed(0)
    rnn = RNN(3, 4, dtype=D)
    lstm = LSTM(3, 4, dtype=D)
    x = rand(2, 5, 3).requires_grad_()
    h0, s0 = rand(2, 4, seed=1).requires_grad_(), rand(2, 4, seed=2).requires_grad_()
    # Gradients w.r.t. inputs, initial states and (through the hidden sequence and the
    # final cell state) every path of the explicit backward passes.
    assert torch.autograd.gradcheck(lambda x, h0: rnn(x, h0)[0], (x, h0))
    assert torch.autograd.gradcheck(lambda x, h0, s0: (lstm(x, (h0, s0))[0], lstm(x, (h0, s0))[1][1]), (x, h0, s0))
    # Gradients w.r.t. the weights: gradcheck on a functional view of the parameters.
    from descend.nn.recurrent import _LSTMFunction, _TanhRNNFunction

    U, W, b = (rand(*p.shape, seed=i + 5, scale=0.5).requires_grad_() for i, p in enumerate(rnn.parameters()))
    assert torch.autograd.gradcheck(lambda U, W, b: _TanhRNNFunction.apply(x, h0, U, W, b), (U, W, b))
    U, W, b = (rand(*p.shape, seed=i + 8, scale=0.5).requires_grad_() for i, p in enumerate(lstm.parameters()))
    assert torch.autograd.gradcheck(lambda U, W, b: _LSTMFunction.apply(x, h0, s0, U, W, b), (U, W, b))


@settings(max_examples=25, deadline=None)
@given(
    N=st.integers(1, 4),
    T=st.integers(1, 6),
    F=st.integers(1, 4),
    H=st.integers(1, 5),
    K=st.integers(1, 4),
    kind=st.sampled_from(["rnn", "lstm"]),
)
def test_shapes_and_final_state(N, T, F, H, K, kind):
    layer = RNN(F, H) if kind == "rnn" else LSTM(F, H)
    x = torch.randn(N, T, F)
    h, state = layer(x)
    assert h.shape == (N, T, H)
    hT = state if kind == "rnn" else state[0]
    torch.testing.assert_close(hT, h[:, -1])
    o, _ = SequenceToSequence(layer, K)(x)
    assert o.shape == (N, T, K)
    o1, _ = SequenceToOne(layer, K)(x)
    assert o1.shape == (N, K)


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_unfolding_in_chunks_with_carried_state_equals_one_pass(kind):
    """Sec. 10.1: the unfolded graph is the same however the sequence is cut."""
    torch.manual_seed(0)
    layer = RNN(3, 5, dtype=D) if kind == "rnn" else LSTM(3, 5, dtype=D)
    x = rand(2, 9, 3)
    full, state_full = layer(x)
    parts, state = [], None
    for chunk in x.split(4, dim=1):
        h, state = layer(chunk, state)
        parts.append(h)
    torch.testing.assert_close(torch.cat(parts, 1), full)
    for a, b in zip(state if kind == "lstm" else [state], state_full if kind == "lstm" else [state_full]):
        torch.testing.assert_close(a, b)


def test_sequence_to_one_reads_the_final_state():
    """Fig. 10.5: the single output equals eq. 10.10 applied to h(tau)."""
    torch.manual_seed(0)
    layer = RNN(3, 4, dtype=D)
    s2s, s21 = SequenceToSequence(layer, 2), SequenceToOne(layer, 2)
    with torch.no_grad():
        s21.V.copy_(s2s.V)
        s21.c.copy_(rand(2, seed=1))
        s2s.c.copy_(s21.c)
    x = rand(5, 6, 3)
    torch.testing.assert_close(s21(x)[0], s2s(x)[0][:, -1])


# ------------------------------------------------------------------ LSTM, sec. 10.10 and 8.4


@pytest.mark.parametrize("explicit_bptt", [True, False])
def test_lstm_equals_torch_lstm_with_copied_weights(explicit_bptt):
    torch.manual_seed(0)
    ref_lstm = torch.nn.LSTM(4, 6, batch_first=True).double()
    ours = LSTM.from_torch(ref_lstm, explicit_bptt=explicit_bptt)
    x = rand(3, 8, 4).requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    h0, s0 = rand(3, 6, seed=1), rand(3, 6, seed=2)
    out, (hT, sT) = ours(x, (h0, s0))
    out_ref, (hT_ref, sT_ref) = ref_lstm(x2, (h0[None], s0[None]))
    torch.testing.assert_close(out, out_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(hT, hT_ref[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sT, sT_ref[0], rtol=1e-12, atol=1e-12)
    # Same gradients: a loss on the outputs and on the final cell state.
    w = rand(3, 8, 6, seed=3)
    ((out * w).sum() + sT.sum()).backward()
    ((out_ref * w).sum() + sT_ref.sum()).backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ours.cell.U.grad, ref_lstm.weight_ih_l0.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ours.cell.W.grad, ref_lstm.weight_hh_l0.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ours.cell.b.grad, ref_lstm.bias_ih_l0.grad, rtol=1e-10, atol=1e-12)


def test_lstm_cell_equals_torch_lstm_cell_and_numpy_equations():
    torch.manual_seed(1)
    ref_cell = torch.nn.LSTMCell(3, 5).double()
    cell = LSTMCell.from_torch(ref_cell)
    x, h, s = rand(4, 3), rand(4, 5, seed=1), rand(4, 5, seed=2)
    for a, b in zip(cell(x, (h, s)), ref_cell(x, (h, s))):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # The whole-sequence layer against the NumPy transcription of the gate equations.
    lstm = LSTM(3, 5, dtype=D)
    xs = rand(2, 6, 3, seed=7)
    out, (_, sT) = lstm(xs, (h[:2], s[:2]))
    U, W, b = (p.detach().numpy() for p in (lstm.cell.U, lstm.cell.W, lstm.cell.b))
    for n in range(2):
        hs, s_last = ref.lstm_forward(xs[n].numpy(), U, W, b, h[n].numpy(), s[n].numpy())
        np.testing.assert_allclose(out[n].detach().numpy(), hs, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(sT[n].detach().numpy(), s_last, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("forget_bias", [1.0, 2.5])
def test_lstm_forget_gate_bias_initialization(forget_bias):
    """Sec. 8.4 (Jozefowicz et al. 2015): forget-gate bias 1 by default, other biases 0."""
    H = 7
    b = LSTM(3, H, forget_bias=forget_bias).cell.b.detach()
    torch.testing.assert_close(b[H : 2 * H], torch.full((H,), forget_bias))
    assert torch.count_nonzero(b[:H]) == 0 and torch.count_nonzero(b[2 * H :]) == 0
    # With zero input and state, the forget gate starts at sigmoid(forget_bias).
    cell = LSTMCell(3, H, forget_bias=forget_bias)
    pre = cell.b.detach()
    assert torch.allclose(torch.sigmoid(pre[H : 2 * H]), torch.sigmoid(torch.tensor(forget_bias)))


def test_lstm_from_torch_rejects_unsupported_modules():
    with pytest.raises(ConfigError, match="single-layer"):
        LSTM.from_torch(torch.nn.LSTM(2, 3, num_layers=2))
    with pytest.raises(ConfigError, match="expected torch.nn.LSTM"):
        LSTMCell.from_torch(torch.nn.GRU(2, 3))


# ------------------------------------------------------------------ fig. 10.4, teacher forcing


def _wrong_output_model(F, H, K):
    """A fig. 10.4 network whose output is always symbol 0 (huge c_0), never the target."""
    torch.manual_seed(3)
    m = OutputRecurrentRNN(F, H, K, dtype=D)
    with torch.no_grad():
        m.W.mul_(4.0)  # make the fed-back symbol matter for h(t)
        m.c.zero_()
        m.c[0] = 100.0
    return m


def test_teacher_forcing_feeds_the_ground_truth_not_the_models_output():
    N, T, F, H, K = 3, 6, 2, 5, 4
    m = _wrong_output_model(F, H, K)
    x = rand(N, T, F, seed=1)
    y = torch.randint(1, K, (N, T), generator=torch.Generator().manual_seed(2))  # never 0
    o_tf, _ = m(x, y=y)  # teacher forcing
    assert (o_tf.argmax(2) == 0).all()  # the model's own outputs are all wrong...
    params = [p.detach().numpy() for p in (m.U, m.W, m.b, m.V, m.c)]
    for n in range(N):  # ...yet what entered h(t) was onehot(y(t-1)) (fig. 10.6, left)
        fed = ref.teacher_forced_inputs(y[n].numpy(), K)
        np.testing.assert_allclose(o_tf[n].detach().numpy(), ref.output_recurrent_forward(x[n].numpy(), fed, *params), rtol=1e-12)
    # Free running feeds the model's own (wrong) symbol 0 back (fig. 10.6, right).
    o_free, _ = m(x)
    for n in range(N):
        fed = np.zeros((T, K))
        fed[1:, 0] = 1.0
        np.testing.assert_allclose(o_free[n].detach().numpy(), ref.output_recurrent_forward(x[n].numpy(), fed, *params), rtol=1e-12)
    assert not torch.allclose(o_tf, o_free)
    torch.testing.assert_close(m(x, y=y, teacher_forcing=0.0)[0], o_free)
    assert (m.generate(x) == 0).all()


def test_scheduled_sampling_feeds_either_the_truth_or_the_own_output():
    N, T, F, H, K = 200, 5, 2, 5, 4
    m = _wrong_output_model(F, H, K)
    x = rand(N, T, F, seed=1)
    y = torch.randint(1, K, (N, T), generator=torch.Generator().manual_seed(2))
    o, _ = m(x, y=y, teacher_forcing=0.5, generator=torch.Generator().manual_seed(0))
    params = [p.detach().numpy() for p in (m.U, m.W, m.b, m.V, m.c)]
    truth_fed = 0
    for n in range(N):
        xn = x[n].numpy()
        for t in range(1, T):
            # Step t of the network given each candidate input, from the oracle.
            candidates = {}
            for name, symbol in (("truth", int(y[n, t - 1])), ("own", 0)):
                fed = np.zeros((T, K))
                fed[t, symbol] = 1.0
                candidates[name] = ref.output_recurrent_forward(xn, fed, *params)[t]
            got = o[n, t].detach().numpy()
            matches = [k for k, v in candidates.items() if np.allclose(got, v, rtol=1e-10)]
            assert matches, f"sequence {n} step {t} was fed neither the truth nor the model's output"
            truth_fed += matches == ["truth"]
    # 800 fair coin flips: the share of ground-truth inputs is 1/2 within 5 sigma.
    assert abs(truth_fed / (N * (T - 1)) - 0.5) < 5 * 0.5 / np.sqrt(N * (T - 1))


def test_teacher_forced_training_step_has_no_time_dependence_in_its_gradient():
    """Sec. 10.2.1: with teacher forcing the time steps are decoupled, so the loss at step t
    does not depend on the inputs at earlier steps (no back-propagation through time)."""
    m = OutputRecurrentRNN(3, 4, 5, dtype=D)
    x = rand(2, 6, 3).requires_grad_()
    y = torch.randint(0, 5, (2, 6), generator=torch.Generator().manual_seed(1))
    o, _ = m(x, y=y)
    o[:, -1].sum().backward()
    assert torch.count_nonzero(x.grad[:, :-1]) == 0 and torch.count_nonzero(x.grad[:, -1]) > 0


def test_inverse_sigmoid_decay_goes_from_one_towards_zero():
    k = 10.0
    values = [inverse_sigmoid_decay(i, k) for i in range(0, 200, 10)]
    assert values[0] == pytest.approx(k / (k + 1))
    assert all(a > b for a, b in zip(values, values[1:])) and values[-1] < 0.01
    with pytest.raises(ConfigError, match="k must be >= 1"):
        inverse_sigmoid_decay(3, 0.5)


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "x,match",
    [
        (torch.randn(5, 3), "single sequence"),
        (torch.randn(2, 1, 28, 28), "sequential_mnist"),
        (torch.randn(2, 0, 3), "no time steps"),
        (torch.randn(2, 4, 5), "build it with input_size=5"),
        (torch.ones(2, 4, 3, dtype=torch.int64), "floating point"),
        (torch.randn(2, 4, 3, dtype=D), "parameters are torch.float32"),
    ],
)
@pytest.mark.parametrize("module", [lambda: RNN(3, 4), lambda: LSTM(3, 4), lambda: OutputRecurrentRNN(3, 4, 2)])
def test_bad_sequences_raise_shape_errors(x, match, module):
    with pytest.raises(ShapeError, match=match):
        module()(x)


def test_bad_states_targets_and_options_raise_clear_errors():
    x = torch.randn(2, 4, 3)
    with pytest.raises(ShapeError, match="initial state h0"):
        RNN(3, 4)(x, torch.zeros(3, 4))
    with pytest.raises(ShapeError, match="pair"):
        LSTM(3, 4)(x, torch.zeros(2, 4))
    with pytest.raises(ShapeError, match="cell state"):
        LSTM(3, 4)(x, (torch.zeros(2, 4), torch.zeros(2, 5)))
    with pytest.raises(ShapeError, match="to match the outputs"):
        sequence_nll(torch.randn(2, 4, 3), torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ShapeError, match="integer"):
        sequence_nll(torch.randn(2, 4, 3), torch.zeros(2, 4))
    with pytest.raises(ConfigError, match="reduction"):
        sequence_nll(torch.randn(2, 4, 3), torch.zeros(2, 4, dtype=torch.long), "avg")
    m = OutputRecurrentRNN(3, 4, 2)
    with pytest.raises(ShapeError, match=r"lie in \[0, 2\)"):
        m(x, y=torch.full((2, 4), 2))
    with pytest.raises(ShapeError, match="targets y"):
        m(x, y=torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ConfigError, match="teacher_forcing"):
        m(x, y=torch.zeros(2, 4, dtype=torch.long), teacher_forcing=1.5)
    with pytest.raises(ConfigError, match="feedback"):
        OutputRecurrentRNN(3, 4, 2, feedback="mean")
    with pytest.raises(ConfigError, match="hidden_size"):
        RNN(3, 0)
    with pytest.raises(ShapeError, match="one LSTM step"):
        LSTMCell(3, 4)(torch.randn(2, 5, 3))
