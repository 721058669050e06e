"""Delta-bar-delta (sec. 8.5, Jacobs 1988)."""

import pytest
import torch

from descend.errors import ConfigError
from descend.optim import DeltaBarDelta
from optim_harness import (
    assert_moves,
    assert_same_trajectory,
    check_foreach_matches_single,
    check_state_dict_roundtrip,
    oracle_network,
    oracle_rosenbrock,
    run_network,
    run_rosenbrock,
)
from reference import first_order as ref


@pytest.mark.parametrize("foreach", [False, True])
def test_matches_jacobs_rule_on_rosenbrock(foreach):
    # kappa on the gain = Jacobs' additive kappa / lr
    actual = run_rosenbrock(lambda p: DeltaBarDelta(p, lr=0.005, kappa=0.2, phi=0.3, smoothing=0.7, foreach=foreach))
    assert_moves(actual)
    expected = oracle_rosenbrock(ref.delta_bar_delta, lr0=0.005, kappa=0.2 * 0.005, phi=0.3, smoothing=0.7)
    assert_same_trajectory(actual, expected)


def test_matches_jacobs_rule_on_network():
    actual = run_network(lambda p: DeltaBarDelta(p, lr=0.1, kappa=0.5, phi=0.5, smoothing=0.5, weight_decay=0.1))
    assert_moves(actual)
    expected = oracle_network(ref.delta_bar_delta, lr0=0.1, kappa=0.05, phi=0.5, smoothing=0.5, l2=0.1)
    assert_same_trajectory(actual, expected)
    decoupled = run_network(lambda p: DeltaBarDelta(p, lr=0.1, kappa=0.5, weight_decay=0.1, decoupled_weight_decay=True))
    assert_same_trajectory(
        decoupled, oracle_network(ref.delta_bar_delta, lr0=0.1, kappa=0.05, phi=0.5, smoothing=0.7, decay=0.1)
    )


def test_rates_grow_while_the_sign_holds_and_shrink_when_it_flips():
    theta = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = DeltaBarDelta([theta], lr=0.1, kappa=0.5, phi=0.5, smoothing=0.0)
    # coordinate 0: gradient always +1; coordinate 1: +1, -1, +1, ...
    history = []
    for k in range(6):
        theta.grad = torch.tensor([1.0, (-1.0) ** k], dtype=torch.float64)
        opt.step()
        history.append(opt.learning_rates()[theta].clone())
    steady = [float(h[0]) for h in history]
    flipping = [float(h[1]) for h in history]
    assert steady == pytest.approx([0.1 + 0.05 * k for k in range(6)])  # additive increase from step 2
    assert flipping == pytest.approx([0.1 * 0.5**k for k in range(6)])  # geometric decrease


def test_scheduler_scales_every_rate():
    theta = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = DeltaBarDelta([theta], lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    theta.grad = torch.ones(1, dtype=torch.float64)
    opt.step()
    sched.step()
    assert float(opt.learning_rates()[theta]) == pytest.approx(0.05)


def test_foreach_matches_single_tensor():
    check_foreach_matches_single(DeltaBarDelta, lr=0.02, weight_decay=1e-3)


def test_state_dict_round_trip():
    check_state_dict_roundtrip(DeltaBarDelta, lr=0.02)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lr": -0.1}, "lr must be >= 0"),
        ({"kappa": -0.1}, "kappa must be >= 0"),
        ({"phi": 1.5}, r"phi must be in \[0, 1\]"),
        ({"smoothing": 1.0}, r"smoothing must be in \[0, 1\)"),
    ],
)
def test_invalid_hyperparameters(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        DeltaBarDelta([torch.nn.Parameter(torch.zeros(2))], **kwargs)
