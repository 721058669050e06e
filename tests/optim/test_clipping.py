"""Gradient clipping (sec. 8.2.4 / 10.11.1) and the non-finite guard."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from descend.errors import ConfigError, Diverged
from descend.optim import (
    SGD,
    Adam,
    NesterovMomentum,
    clip_grad_norm_,
    clip_grad_value_,
    register_grad_clipping,
    register_nonfinite_guard,
)
from reference import first_order as ref


def _params_with_grads(arrays):
    params = []
    for a in arrays:
        p = torch.nn.Parameter(torch.zeros(a.shape, dtype=torch.float64))
        p.grad = torch.from_numpy(a.copy())
        params.append(p)
    return params


@settings(max_examples=40, deadline=None)
@given(
    shapes=st.lists(st.tuples(st.integers(1, 4), st.integers(1, 3)), min_size=1, max_size=4),
    scale=st.floats(1e-3, 1e3),
    max_norm=st.floats(1e-2, 10.0),
    seed=st.integers(0, 2**16),
)
def test_clip_by_global_norm_matches_the_rule(shapes, scale, max_norm, seed):
    rng = np.random.default_rng(seed)
    grads = [scale * rng.normal(size=s) for s in shapes]
    expected, expected_norm = ref.clip_by_global_norm(grads, max_norm)
    params = _params_with_grads(grads)
    norm = clip_grad_norm_(params, max_norm)
    np.testing.assert_allclose(float(norm), expected_norm, rtol=1e-12)
    for p, e in zip(params, expected):
        np.testing.assert_allclose(p.grad.numpy(), e, rtol=1e-12, atol=1e-300)
    clipped_norm = np.sqrt(sum(float((p.grad**2).sum()) for p in params))
    assert clipped_norm <= max_norm * (1 + 1e-12) or clipped_norm == pytest.approx(expected_norm)


def test_clip_by_norm_agrees_with_torch_up_to_its_1e6_guard():
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=(3, 4)) * 50, rng.normal(size=5) * 50]
    ours, theirs = _params_with_grads(grads), _params_with_grads(grads)
    n1 = clip_grad_norm_(ours, 1.0)
    n2 = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    assert float(n1) == pytest.approx(float(n2), rel=1e-12)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-6)


def test_clip_by_norm_leaves_non_finite_gradients_for_the_guard():
    p = _params_with_grads([np.array([1.0, np.nan]), np.array([3.0])])
    norm = clip_grad_norm_(p, 0.5)
    assert not torch.isfinite(norm)
    assert float(p[0].grad[0]) == 1.0 and float(p[1].grad[0]) == 3.0


@pytest.mark.parametrize("norm_type", [1.0, float("inf")])
def test_clip_by_other_norms(norm_type):
    p = _params_with_grads([np.array([3.0, -4.0]), np.array([12.0])])
    total = clip_grad_norm_(p, 2.0, norm_type=norm_type)
    expected = 19.0 if norm_type == 1.0 else 12.0
    assert float(total) == expected
    np.testing.assert_allclose(p[1].grad.numpy(), [12.0 * 2.0 / expected])


@settings(max_examples=30, deadline=None)
@given(max_value=st.floats(1e-3, 5.0), seed=st.integers(0, 2**16))
def test_clip_by_value_matches_the_rule(max_value, seed):
    rng = np.random.default_rng(seed)
    grads = [rng.normal(size=(4, 3)) * 3, rng.normal(size=7) * 3]
    params = _params_with_grads(grads)
    clip_grad_value_(params, max_value)
    for p, e in zip(params, ref.clip_by_value(grads, max_value)):
        np.testing.assert_array_equal(p.grad.numpy(), e)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_invalid_thresholds(bad):
    p = _params_with_grads([np.ones(2)])
    with pytest.raises(ConfigError):
        clip_grad_norm_(p, bad)
    with pytest.raises(ConfigError):
        clip_grad_value_(p, bad)
    with pytest.raises(ConfigError):
        register_grad_clipping(SGD(p, lr=0.1), max_norm=bad)
    with pytest.raises(ConfigError, match="max_norm .* or max_value"):
        register_grad_clipping(SGD(p, lr=0.1))


def test_clipping_hook_on_a_torch_optimizer_keeps_its_class_and_scheduler():
    p = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    handle = register_grad_clipping(opt, max_norm=1.0)
    assert type(opt) is torch.optim.SGD
    p.grad = torch.tensor([30.0, 40.0], dtype=torch.float64)
    opt.step()
    sched.step()
    np.testing.assert_allclose(p.detach().numpy(), [-0.6, -0.8])
    handle.remove()
    p.grad = torch.tensor([30.0, 40.0], dtype=torch.float64)
    opt.step()  # lr 0.5, unclipped
    np.testing.assert_allclose(p.detach().numpy(), [-15.6, -20.8])


def test_clipping_hook_clips_gradients_computed_inside_a_closure():
    """Book-form Nesterov computes the gradient inside step(closure); the hook must clip it."""
    p = torch.nn.Parameter(torch.tensor([10.0, 0.0], dtype=torch.float64))
    opt = NesterovMomentum([p], lr=0.1, momentum=0.5)
    register_grad_clipping(opt, max_norm=1.0)
    seen = []

    def closure():
        opt.zero_grad()
        loss = 50 * (p**2).sum()  # gradient 100 * p: norm 1000
        loss.backward()
        return loss

    opt.step(closure)
    seen.append(p.detach().clone())
    np.testing.assert_allclose(seen[0].numpy(), [9.9, 0.0])  # step of length lr * 1


def test_value_then_norm_when_both_given():
    p = _params_with_grads([np.array([10.0, 0.5])])
    opt = SGD(p, lr=1.0)
    register_grad_clipping(opt, max_norm=1.0, max_value=1.0)
    opt.step()
    g = np.array([1.0, 0.5]) / np.linalg.norm([1.0, 0.5])
    np.testing.assert_allclose(p[0].detach().numpy(), -g)


def _two_param_problem():
    a = torch.nn.Parameter(torch.ones(2))
    b = torch.nn.Parameter(torch.ones(3))
    return a, b


def test_guard_skip_leaves_parameters_and_state_untouched():
    a, b = _two_param_problem()
    opt = Adam([a, b], lr=0.1)
    skipped = []
    register_nonfinite_guard(opt, "skip", names={"layer.a": a, "layer.b": b}, on_skip=skipped.append)
    a.grad, b.grad = torch.ones(2), torch.ones(3)
    opt.step()
    before = [a.detach().clone(), b.detach().clone(), opt.state[a]["second_moment"].clone()]
    a.grad, b.grad = torch.ones(2), torch.tensor([1.0, float("inf"), 0.0])
    opt.step()
    assert skipped == [["layer.b"]]
    assert torch.equal(a, before[0]) and torch.equal(b, before[1])
    assert torch.equal(opt.state[a]["second_moment"], before[2])
    assert float(opt.state[a]["step"]) == 1.0
    a.grad, b.grad = torch.ones(2), torch.ones(3)
    opt.step()  # training continues
    assert float(opt.state[a]["step"]) == 2.0


def test_guard_raise_names_the_parameter():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    register_nonfinite_guard(opt, "raise", names=model)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    model[1].weight.grad[0, 0] = float("nan")
    with pytest.raises(Diverged, match=r"'1\.weight'.*lower the learning rate"):
        opt.step()


def test_guard_with_closure_skips_a_book_nesterov_step():
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0], dtype=torch.float64))
    opt = NesterovMomentum([p], lr=0.1, momentum=0.9)
    register_nonfinite_guard(opt, "skip")

    def closure(scale):
        def run():
            opt.zero_grad()
            loss = scale * (p**2).sum()
            loss.backward()
            return loss
        return run

    opt.step(closure(1.0))
    before, v = p.detach().clone(), opt.state[p]["velocity"].clone()
    loss = opt.step(closure(float("inf")))
    assert not torch.isfinite(loss)
    np.testing.assert_allclose(p.detach().numpy(), before.numpy(), atol=1e-15)
    assert torch.equal(opt.state[p]["velocity"], v)


def test_guard_rejects_unknown_mode():
    with pytest.raises(ConfigError, match="'skip' or 'raise'"):
        register_nonfinite_guard(SGD([torch.nn.Parameter(torch.zeros(1))]), "ignore")
