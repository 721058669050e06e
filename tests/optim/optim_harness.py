"""Shared drivers for the optimizer tests: run a descend optimizer on the reference problems
(tests/reference/objectives.py) and compare with the NumPy oracles, torch.optim, itself
with foreach on/off, and itself resumed from a state_dict."""

from __future__ import annotations

import io

import numpy as np
import torch

from reference import objectives as obj

STEPS = 25


def rosenbrock_params(seed: int = 0) -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.from_numpy(t.copy())) for t in obj.rosenbrock_init(seed)]


def run_rosenbrock(make_optimizer, steps: int = STEPS, seed: int = 0) -> list[list[np.ndarray]]:
    """Trajectory of ``make_optimizer(params)`` on the chained Rosenbrock function (float64)."""
    params = rosenbrock_params(seed)
    opt = make_optimizer(params)

    def closure():
        opt.zero_grad()
        loss = obj.rosenbrock_torch(params)
        loss.backward()
        return loss

    out = []
    for _ in range(steps):
        opt.step(closure)
        out.append([p.detach().numpy().copy() for p in params])
    return out


def _with_l2(grad, l2: float):
    """Coupled L2: the gradient of the penalty ``(l2 / 2) ||theta||^2``, added in NumPy."""
    if l2 == 0:
        return grad
    return lambda theta: [g + l2 * t for g, t in zip(grad(theta), theta)]


def oracle_rosenbrock(oracle, steps: int = STEPS, seed: int = 0, l2: float = 0.0, **hparams):
    return oracle(obj.rosenbrock_init(seed), _with_l2(obj.rosenbrock_grad, l2), steps, **hparams)


def run_network(make_optimizer, steps: int = STEPS) -> list[list[np.ndarray]]:
    """Trajectory of ``make_optimizer(net.parameters())`` on the small tanh network (float64)."""
    x, y, theta = obj.network_data()
    net = obj.network_torch(theta)
    opt = make_optimizer(net.parameters())

    def closure():
        opt.zero_grad()
        loss = obj.network_loss_torch(net, x, y)
        loss.backward()
        return loss

    out = []
    for _ in range(steps):
        opt.step(closure)
        out.append([p.detach().numpy().copy() for p in net.parameters()])
    return out


def oracle_network(oracle, steps: int = STEPS, l2: float = 0.0, **hparams):
    x, y, theta = obj.network_data()
    return oracle(theta, _with_l2(lambda th: obj.network_grad(th, x, y), l2), steps, **hparams)


def assert_same_trajectory(actual, expected, rtol: float = 1e-6, atol: float = 1e-9) -> None:
    assert len(actual) == len(expected)
    for k, (a_step, e_step) in enumerate(zip(actual, expected)):
        for i, (a, e) in enumerate(zip(a_step, e_step)):
            np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=f"step {k + 1}, tensor {i}")


def assert_moves(trajectory, tol: float = 1e-3) -> None:
    """Guard against vacuous comparisons: the parameters must actually change."""
    first, last = trajectory[0], trajectory[-1]
    assert max(float(np.abs(a - b).max()) for a, b in zip(first, last)) > tol


# ----------------------------------------------------------------------------- float32 model


def model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)
    )


def batches(n: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(12, 6, generator=g), torch.randn(12, 3, generator=g)) for _ in range(n)]


def train(net: torch.nn.Module, opt: torch.optim.Optimizer, data) -> list[float]:
    losses = []
    for x, y in data:
        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(net(x), y)
            loss.backward()
            return loss

        losses.append(float(opt.step(closure).detach()))
    return losses


def flat(net: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()])


def check_foreach_matches_single(cls, steps: int = 12, **kwargs) -> None:
    """The ``torch._foreach_*`` path and the per-tensor loop give bit-identical results."""
    data = batches(steps)
    nets = [model(), model()]
    opts = [cls(nets[0].parameters(), foreach=False, **kwargs), cls(nets[1].parameters(), foreach=True, **kwargs)]
    losses = [train(n, o, data) for n, o in zip(nets, opts)]
    assert losses[0] == losses[1]
    assert torch.equal(flat(nets[0]), flat(nets[1]))
    assert not torch.equal(flat(nets[0]), flat(model()))  # it moved
    for p0, p1 in zip(nets[0].parameters(), nets[1].parameters()):
        s0, s1 = opts[0].state[p0], opts[1].state[p1]
        assert s0.keys() == s1.keys()
        for key in s0:
            assert torch.equal(s0[key], s1[key]), key


def check_state_dict_roundtrip(cls, steps: int = 6, **kwargs) -> None:
    """Save model + optimizer mid-run (through torch.save with weights_only loading), resume
    in fresh objects: the continuation is identical to the uninterrupted run."""
    data = batches(2 * steps)
    net = model()
    opt = cls(net.parameters(), **kwargs)
    train(net, opt, data[:steps])

    buffer = io.BytesIO()
    torch.save({"model": net.state_dict(), "optim": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    for state in saved["optim"]["state"].values():
        assert all(isinstance(v, torch.Tensor) for v in state.values())  # safetensors-ready

    resumed_net = model(seed=123)
    resumed_net.load_state_dict(saved["model"])
    resumed_opt = cls(resumed_net.parameters(), **kwargs)
    resumed_opt.load_state_dict(saved["optim"])

    expected = train(net, opt, data[steps:])
    actual = train(resumed_net, resumed_opt, data[steps:])
    assert actual == expected
    assert torch.equal(flat(net), flat(resumed_net))


def check_matches_torch(make_ours, make_theirs, steps: int = 20, rtol: float = 1e-10, atol: float = 1e-12) -> None:
    """Same trajectory as a torch.optim optimizer on the float64 network."""
    ours = run_network(make_ours, steps)
    theirs = run_network(make_theirs, steps)
    assert_moves(ours)
    assert_same_trajectory(ours, theirs, rtol=rtol, atol=atol)
