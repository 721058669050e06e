"""Every layer of descend.nn under torch.autocast on CPU, bfloat16 and float16.

Oracle: the same layer, same weights and inputs, in float32 without autocast. Forward
and backward run inside / after an autocast region; outputs and the gradients of the
input and of every parameter must agree with float32 to the precision of the autocast
dtype (relative error of the whole tensor; bfloat16 keeps 8 significant bits, float16
11), the output must come out in a sensible dtype, and gradients in the parameters'
own dtype (float32). Each layer is also fed inputs already in the lower precision, as
it gets them from a previous layer inside the region.
"""

from __future__ import annotations

import pytest
import torch

import descend.nn as dnn

HALF = [torch.bfloat16, torch.float16]
# Relative error of a whole tensor, ||got - want|| / ||want||: a few units of the last
# place of the dtype (2^-8 and 2^-11), accumulated over a handful of products.
TOL = {torch.bfloat16: 4e-2, torch.float16: 8e-3}


def images(c=3, s=8, n=4):
    return torch.randn(n, c, s, s)


def sequences():
    return torch.randn(3, 6, 5)


# name: (module factory, input factory, output dtype under autocast: "lower" for the
# autocast dtype, "float32", or "input" for the dtype of the input).
LAYERS = {
    "Conv1d": (lambda: dnn.Conv1d(3, 4, 3), lambda: torch.randn(4, 3, 10), "lower"),
    "Conv2d": (lambda: dnn.Conv2d(3, 4, 3, padding="same"), images, "lower"),
    "Conv3d": (lambda: dnn.Conv3d(2, 3, 3), lambda: torch.randn(2, 2, 5, 5, 5), "lower"),
    "ConvTranspose2d": (lambda: dnn.ConvTranspose2d(3, 4, 3, stride=2), images, "lower"),
    "FFTConv2d": (lambda: dnn.FFTConv2d(3, 4, 5), images, "lower"),
    "SeparableConv2d": (lambda: dnn.SeparableConv2d(3, 4, 3, rank=2), images, "lower"),
    "LocallyConnected2d": (lambda: dnn.LocallyConnected2d(3, 4, 8, 3), images, "lower"),
    "LocallyConnected1d": (lambda: dnn.LocallyConnected1d(3, 4, 10, 3), lambda: torch.randn(4, 3, 10), "lower"),
    "TiledConv2d (grouped)": (lambda: dnn.TiledConv2d(3, 4, 3, tiles=2), images, "lower"),
    "TiledConv2d (unshared)": (lambda: dnn.TiledConv2d(3, 4, 3, tiles=3), images, "lower"),
    "TiledConv1d": (lambda: dnn.TiledConv1d(3, 4, 3, tiles=2), lambda: torch.randn(4, 3, 10), "lower"),
    "PartiallyConnectedConv2d": (
        lambda: dnn.PartiallyConnectedConv2d(3, 4, 3, connections=torch.rand(4, 3) < 0.7), images, "lower"),
    "MaxoutConv2d": (lambda: dnn.MaxoutConv2d(3, 4, 3, pieces=2), images, "lower"),
    "BatchNorm1d": (lambda: dnn.BatchNorm1d(3), lambda: torch.randn(8, 3), "input"),
    "BatchNorm2d": (lambda: dnn.BatchNorm2d(3), images, "input"),
    "Pool max": (lambda: dnn.Pool("max", 2), images, "input"),
    "Pool L2": (lambda: dnn.Pool("l2", 2), images, "input"),
    "GlobalPool L2": (lambda: dnn.GlobalPool("l2"), images, "input"),
    "AdaptivePool avg": (lambda: dnn.AdaptivePool(3, "avg"), images, None),
    "ChannelPool max": (lambda: dnn.ChannelPool(2, "max"), lambda: images(c=4), "input"),
    "RNN explicit": (lambda: dnn.RNN(5, 7, bptt="explicit"), sequences, "lower"),
    "RNN fused": (lambda: dnn.RNN(5, 7, bptt="fused"), sequences, "lower"),
    "RNN autograd": (lambda: dnn.RNN(5, 7, bptt="autograd"), sequences, "lower"),
    "LSTM explicit": (lambda: dnn.LSTM(5, 7, bptt="explicit"), sequences, "lower"),
    "LSTM fused": (lambda: dnn.LSTM(5, 7, bptt="fused"), sequences, "lower"),
    "LSTM autograd": (lambda: dnn.LSTM(5, 7, bptt="autograd"), sequences, None),  # s(t) sums in float32
    "SequenceToSequence(LSTM)": (lambda: dnn.SequenceToSequence(dnn.LSTM(5, 7), 3), sequences, "lower"),
    "OutputRecurrentRNN": (lambda: dnn.OutputRecurrentRNN(5, 7, 4), sequences, "lower"),
    "RecurrentConvNet": (lambda: dnn.RecurrentConvNet(3, 4, 5, 3, 1), images, "lower"),
}


def first_tensor(out):
    """The layer's main output: the sequence of a recurrent layer, the last iterate of a list."""
    if isinstance(out, list):
        return out[-1]
    return out[0] if isinstance(out, tuple) else out


def rel_err(got, want):
    got, want = got.detach().float(), want.detach().float()
    return float((got - want).norm() / want.norm().clamp_min(1e-12))


def run(layer, x, dtype=None):
    """Output and gradients (input, then parameters) of a fixed random linear loss."""
    x = x.detach().requires_grad_()
    if dtype is None:
        y = first_tensor(layer(x))
    else:
        with torch.autocast("cpu", dtype=dtype):
            y = first_tensor(layer(x))
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(7))
    params = [p for p in layer.parameters() if p.requires_grad]
    grads = torch.autograd.grad((y.float() * w).sum(), [x, *params], allow_unused=True)
    return y, grads


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "fp16"])
@pytest.mark.parametrize("input_dtype", ["float32", "lower"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_under_cpu_autocast_matches_float32(name, input_dtype, dtype):
    make, make_input, out_kind = LAYERS[name]
    torch.manual_seed(0)
    layer = make()
    x = make_input()
    if input_dtype == "lower":
        # What a previous layer hands over inside the region; the float32 oracle sees the
        # same (rounded) values.
        x = x.to(dtype).float()
    want_y, want_grads = run(layer, x)
    got_y, got_grads = run(layer, x.to(dtype) if input_dtype == "lower" else x, dtype)

    expected_dtype = {"lower": dtype, "float32": torch.float32, "input": x.dtype if input_dtype == "float32" else dtype}
    if out_kind is not None:
        assert got_y.dtype == expected_dtype[out_kind], f"{name}: output {got_y.dtype}"
    else:  # ops that autocast may run in either precision
        assert got_y.dtype in (dtype, torch.float32)
    assert rel_err(got_y, want_y) < TOL[dtype], f"{name} output: {rel_err(got_y, want_y):.2e}"
    for i, (g, e) in enumerate(zip(got_grads, want_grads)):
        assert (g is None) == (e is None)
        if g is None:
            continue
        if i > 0:
            assert g.dtype == torch.float32, f"{name}: a parameter gradient came back in {g.dtype}"
        assert rel_err(g, e) < 2 * TOL[dtype], f"{name} gradient {i}: {rel_err(g, e):.2e}"


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "fp16"])
def test_lstm_paths_agree_under_autocast_over_a_long_sequence(dtype, lstm_forward):
    # 60 steps of the recurrence in the lower precision: the explicit and fused paths
    # still track float32 (the forget gate damps rounding carried through s(t)).
    torch.manual_seed(0)
    ref = dnn.LSTM(4, 16, bptt="autograd")
    x = torch.randn(8, 60, 4)
    want_y, want_grads = run(ref, x)
    for bptt in ("explicit", "fused"):
        layer = dnn.LSTM(4, 16, bptt=bptt)
        layer.load_state_dict(ref.state_dict())
        got_y, got_grads = run(layer, x, dtype)
        assert rel_err(got_y, want_y) < TOL[dtype]
        for g, e in zip(got_grads, want_grads):
            assert rel_err(g, e) < 3 * TOL[dtype]


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "fp16"])
def test_recurrent_conv_net_feeds_float32_label_estimates_back_under_autocast(dtype):
    # From the second iteration on, W reads the softmax of the previous scores (float32
    # under autocast) and its sum with U x (lower precision) feeds V: convolutions of
    # mixed-dtype operands, which autocast resolves.
    torch.manual_seed(0)
    layer = dnn.RecurrentConvNet(3, 4, 5, 3, iterations=3)
    x = images()
    want = layer(x)
    with torch.autocast("cpu", dtype=dtype):
        got = layer(x)
    for g, w in zip(got, want):
        assert g.dtype == dtype
        assert rel_err(g, w) < TOL[dtype]
    sum(g.float().square().sum() for g in got).backward()
    for p in layer.parameters():
        assert p.grad.dtype == torch.float32 and p.grad.isfinite().all()


def test_fft_conv_accepts_half_precision_tensors_outside_autocast():
    # torch.fft has no half-precision kernels on CPU: the layer transforms in float32 and
    # returns the inputs' dtype.
    torch.manual_seed(0)
    layer = dnn.FFTConv2d(3, 4, 5)
    x = images()
    want = layer(x)
    got = layer.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert got.dtype == torch.bfloat16
    assert rel_err(got, want) < TOL[torch.bfloat16]
