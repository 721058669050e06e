"""The shared first-order base (descend.optim.first_order): validation messages, state,
dispatch by (device, dtype), and decoupled weight decay at the interim point of Alg. 8.3."""

import pytest
import torch

from descend.errors import ConfigError, OptimizationError
from descend.optim import OPTIMIZERS, NesterovMomentum
from descend.optim.first_order import FirstOrderOptimizer

FIRST_ORDER = [name for name, cls in OPTIMIZERS.items() if issubclass(cls, FirstOrderOptimizer)]
CLOSURE_ONLY = {"nesterov", "rmsprop-nesterov"}


def test_every_first_order_method_is_built_on_the_base():
    assert set(FIRST_ORDER) == {"sgd", "momentum", "nesterov", "nesterov-reformulated", "adagrad", "rmsprop",
                                "rmsprop-nesterov", "adam", "amsgrad", "delta-bar-delta"}


@pytest.mark.parametrize("name", FIRST_ORDER)
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lr": -0.1}, r"Invalid learning rate: -0\.1; lr must be >= 0 and finite"),
        ({"lr": float("inf")}, r"Invalid learning rate: inf"),
        ({"lr": "fast"}, r"Invalid learning rate: 'fast'; learning rate must be a real number"),
        ({"weight_decay": -1e-4}, r"Invalid weight_decay: -0\.0001; weight_decay must be >= 0"),
        ({"foreach": 1}, r"Invalid foreach: 1; foreach must be True, False or None"),
    ],
)
def test_shared_hyperparameters_are_validated_with_the_bad_value_in_the_message(name, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        OPTIMIZERS[name]([torch.nn.Parameter(torch.zeros(2))], **kwargs)


@pytest.mark.parametrize("name", FIRST_ORDER)
def test_defaults_hold_the_shared_and_the_algorithms_hyperparameters(name):
    opt = OPTIMIZERS[name]([torch.nn.Parameter(torch.zeros(2))], lr=0.5, weight_decay=0.25)
    assert opt.defaults["lr"] == 0.5 and opt.defaults["weight_decay"] == 0.25
    assert opt.defaults["decoupled_weight_decay"] is False and opt.defaults["foreach"] is None
    assert set(opt.hyperparameters) <= set(opt.defaults)


def _step(opt, params, grads):
    def closure():
        for p, g in zip(params, grads):
            p.grad = None if g is None else g.clone()
        return torch.tensor(0.0)

    opt.step(closure)


@pytest.mark.parametrize("name", FIRST_ORDER)
def test_state_is_created_for_parameters_with_a_gradient_only(name):
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    opt = OPTIMIZERS[name]([a, b], lr=0.1)
    _step(opt, [a, b], [torch.ones(3), None])
    assert set(opt.state[a]) == set(type(opt).state_keys)
    assert all(isinstance(v, torch.Tensor) for v in opt.state[a].values())
    assert b not in opt.state and torch.equal(b, torch.ones(2))
    assert not torch.equal(a, torch.ones(3))


@pytest.mark.parametrize("name", FIRST_ORDER)
def test_sparse_gradients_are_refused_by_name(name):
    p = torch.nn.Parameter(torch.zeros(4))
    opt = OPTIMIZERS[name]([p], lr=0.1)
    sparse = torch.sparse_coo_tensor(torch.tensor([[1]]), torch.tensor([1.0]), (4,), check_invariants=True)
    with pytest.raises(OptimizationError, match=f"{type(opt).__name__} does not support sparse gradients"):
        _step(opt, [p], [sparse])


@pytest.mark.parametrize("name", FIRST_ORDER)
def test_mixed_dtypes_in_one_group_give_the_same_numbers_on_both_paths(name):
    """The foreach path splits a group by (device, dtype); the result equals the loop."""
    g = torch.Generator().manual_seed(0)
    init = [torch.randn(3, 2, generator=g), torch.randn(4, generator=g, dtype=torch.float64),
            torch.randn(5, generator=g)]
    grads = [[torch.randn(t.shape, generator=g, dtype=t.dtype) for t in init] for _ in range(3)]
    results = []
    for foreach in (False, True):
        params = [torch.nn.Parameter(t.clone()) for t in init]
        opt = OPTIMIZERS[name](params, lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, foreach=foreach)
        for step_grads in grads:
            _step(opt, params, step_grads)
        results.append(params)
    for a, b in zip(*results):
        assert a.dtype == b.dtype and torch.equal(a, b)
    assert not torch.equal(results[0][0], init[0])


@pytest.mark.parametrize("foreach", [False, True])
def test_decoupled_decay_shrinks_theta_not_the_interim_point(foreach):
    """Alg. 8.3 with decoupled decay, by hand: theta_new = (1 - lr wd) theta + v_new,
    v_new = alpha v - lr g, with a constant gradient g (so where it is taken does not matter)."""
    lr, wd, alpha, g = 0.1, 0.5, 0.9, 2.0
    p = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt = NesterovMomentum([p], lr=lr, momentum=alpha, weight_decay=wd, decoupled_weight_decay=True, foreach=foreach)
    theta, v = 1.0, 0.0
    for _ in range(3):
        _step(opt, [p], [torch.tensor([g], dtype=torch.float64)])
        v = alpha * v - lr * g
        theta = (1 - lr * wd) * theta + v
        assert p.item() == pytest.approx(theta, rel=1e-12)
        assert opt.state[p]["velocity"].item() == pytest.approx(v, rel=1e-12)
