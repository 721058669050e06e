"""Polyak averaging, sec. 8.7.3 (uniform and eq. 8.39)."""

import numpy as np
import pytest
import torch

from descend.errors import CheckpointError, ConfigError
from descend.optim import SGD, Momentum, PolyakAverage
from optim_harness import rosenbrock_params
from reference import first_order as ref
from reference import objectives as obj


def _trajectory_with_average(average_kwargs, steps=20):
    params = rosenbrock_params()
    opt = Momentum(params, lr=0.005, momentum=0.9)
    avg = PolyakAverage(params, **average_kwargs)
    trajectory = []
    for _ in range(steps):
        opt.zero_grad()
        obj.rosenbrock_torch(params).backward()
        opt.step()
        avg.update()
        trajectory.append([p.detach().numpy().copy() for p in params])
    return params, avg, trajectory


def _assert_average(avg, expected):
    for name, e in zip(avg.names, expected):
        np.testing.assert_allclose(avg.averaged()[name].numpy(), e, rtol=1e-12, atol=1e-14)


def test_uniform_average_of_the_trajectory():
    _, avg, trajectory = _trajectory_with_average({"mode": "uniform"})
    _assert_average(avg, ref.polyak_uniform(trajectory))


def test_exponential_moving_average_eq_8_39():
    _, avg, trajectory = _trajectory_with_average({"mode": "ema", "decay": 0.8})
    _assert_average(avg, ref.polyak_ema(trajectory, 0.8))


@pytest.mark.parametrize("mode", ["uniform", "ema"])
def test_start_step_skips_the_burn_in(mode):
    _, avg, trajectory = _trajectory_with_average({"mode": mode, "decay": 0.7, "start_step": 8})
    tail = trajectory[8:]
    _assert_average(avg, ref.polyak_uniform(tail) if mode == "uniform" else ref.polyak_ema(tail, 0.7))
    assert avg.num_averaged == 12 and avg.num_updates == 20


def test_average_lands_near_the_bottom_of_a_valley_the_iterates_jump_across():
    """The book's motivation: gradient descent leaps back and forth across a valley; the
    average of the points on both sides is close to the bottom."""
    theta = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt = SGD([theta], lr=1.99)  # J = theta^2 / 2: theta_k+1 = -0.99 theta_k
    avg = PolyakAverage([theta], mode="uniform")
    for _ in range(40):
        theta.grad = theta.detach().clone()
        opt.step()
        avg.update()
    assert abs(float(avg.averaged()["0"])) < 0.05 * abs(float(theta.detach()))


def test_swapped_puts_the_average_in_and_restores_on_exit_and_on_error():
    params, avg, trajectory = _trajectory_with_average({"mode": "uniform"})
    trained = [p.detach().clone() for p in params]
    with avg.swapped():
        for p, e in zip(params, ref.polyak_uniform(trajectory)):
            np.testing.assert_allclose(p.detach().numpy(), e, rtol=1e-12)
    assert all(torch.equal(p, t) for p, t in zip(params, trained))
    with pytest.raises(KeyError):
        with avg.swapped():
            raise KeyError("evaluation failed")
    assert all(torch.equal(p, t) for p, t in zip(params, trained))


def test_buffers_are_averaged_and_counters_copied():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    opt = SGD(net.parameters(), lr=0.1)
    avg = PolyakAverage(net, mode="uniform", include_buffers=True)
    means = []
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        x = torch.randn(8, 3, generator=g)
        opt.zero_grad()
        net(x).pow(2).mean().backward()
        opt.step()
        avg.update()
        means.append(net[1].running_mean.clone())
    averaged = avg.averaged()
    np.testing.assert_allclose(averaged["1.running_mean"].numpy(), torch.stack(means).mean(0).numpy(), rtol=1e-6)
    assert int(averaged["1.num_batches_tracked"]) == 5
    with avg.swapped():
        assert torch.allclose(net[1].running_mean, torch.stack(means).mean(0))
    assert torch.equal(net[1].running_mean, means[-1])


def test_state_dict_round_trip_continues_identically():
    params, avg, _ = _trajectory_with_average({"mode": "ema", "decay": 0.9}, steps=5)
    state = avg.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    resumed = PolyakAverage(params, mode="ema", decay=0.9)
    resumed.load_state_dict({k: v.clone() for k, v in state.items()})
    with torch.no_grad():
        for p in params:
            p.add_(0.1)
    avg.update()
    resumed.update()
    for a, b in zip(avg.averaged().values(), resumed.averaged().values()):
        assert torch.equal(a, b)
    assert resumed.num_averaged == avg.num_averaged == 6


def test_load_state_dict_rejects_another_model():
    avg = PolyakAverage(torch.nn.Linear(3, 2))
    other = PolyakAverage(torch.nn.Linear(3, 5)).state_dict()
    with pytest.raises(CheckpointError, match="shape"):
        avg.load_state_dict(other)
    with pytest.raises(CheckpointError, match="missing"):
        avg.load_state_dict({"num_updates": torch.tensor(0)})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mode": "median"}, "'uniform' or 'ema'"),
        ({"decay": 1.0}, r"decay must be in \[0, 1\)"),
        ({"start_step": -1}, "start_step must be"),
    ],
)
def test_invalid_options(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        PolyakAverage(torch.nn.Linear(2, 2), **kwargs)


def test_follows_the_module_when_it_is_converted():
    """module.double() / .to(device) replaces buffers and changes parameters' dtype/device."""
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    avg = PolyakAverage(net, mode="ema", decay=0.5, include_buffers=True)
    net.double()
    net(torch.randn(5, 3, dtype=torch.float64))  # updates the (new) running stats
    avg.update()
    averaged = avg.averaged()
    assert averaged["0.weight"].dtype == torch.float64
    assert torch.equal(averaged["1.running_mean"], net[1].running_mean)  # first point: the average is the point
