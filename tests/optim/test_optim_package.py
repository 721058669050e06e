"""The OPTIMIZERS table: every first-order optimizer is a torch.optim.Optimizer with clean, validated
keyword hyperparameters, works with closures and torch LR schedulers, and cites the text."""

import inspect

from hypothesis import given, settings
from hypothesis import strategies as st

import pytest
import torch

from descend.optim import OPTIMIZERS

# The first-order methods of this package (the table also holds the second-order ones,
# tested in their own files).
FIRST_ORDER = ["sgd", "momentum", "nesterov", "nesterov-reformulated", "adagrad", "rmsprop",
               "rmsprop-nesterov", "adam", "amsgrad", "delta-bar-delta"]
CLOSURE_ONLY = {"nesterov", "rmsprop-nesterov"}


def test_first_order_names_are_in_the_table():
    assert set(FIRST_ORDER) <= set(OPTIMIZERS)


@pytest.mark.parametrize("name", FIRST_ORDER)
def test_is_a_torch_optimizer_with_clean_signature(name):
    cls = OPTIMIZERS[name]
    assert issubclass(cls, torch.optim.Optimizer)
    params = inspect.signature(cls).parameters
    assert list(params)[:2] == ["params", "lr"]
    assert not any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in params.values())
    assert getattr(cls, "needs_closure", False) == (name in CLOSURE_ONLY)
    doc = cls.__doc__
    assert ("Algorithm" in doc or "sec." in doc) and "torch" in doc


@pytest.mark.parametrize("name", FIRST_ORDER)
def test_trains_with_a_closure_and_a_torch_scheduler(name):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    x = torch.randn(64, 4)
    y = x.sum(1, keepdim=True).sin()
    lr = {"sgd": 0.1, "momentum": 0.05, "nesterov": 0.05, "nesterov-reformulated": 0.05,
          "adagrad": 0.05, "delta-bar-delta": 0.05}.get(name, 0.005)
    opt = OPTIMIZERS[name](net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=50, gamma=0.5)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(net(x), y)
        loss.backward()
        return loss

    first = float(closure().detach())
    for _ in range(100):
        opt.step(closure)
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(lr / 4)
    assert float(closure().detach()) < 0.7 * first


@pytest.mark.parametrize("name", FIRST_ORDER)
def test_usable_by_name_from_a_config_with_hyperparameters_by_name(name):
    """``optimizer = "<name>"`` plus hyperparameters in TOML: names come from the signature."""
    from descend import config as cfg
    from descend.build import build_optimizer

    options = cfg.component_options("optimizer", name)
    hyper = {"lr": 0.02, "weight_decay": 1e-4}
    if "momentum" in options:
        hyper["momentum"] = 0.8
    if "betas" in options:
        hyper["betas"] = [0.8, 0.99]
    config = cfg.from_dict({"optimizer": {"name": name, **hyper}})
    cfg.validate_components(config)
    opt = build_optimizer(config, torch.nn.Linear(3, 2))
    assert isinstance(opt, OPTIMIZERS[name])
    for key, value in hyper.items():
        assert opt.defaults[key] == (tuple(value) if isinstance(value, list) else value)


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(FIRST_ORDER),
    shapes=st.lists(st.lists(st.integers(1, 5), min_size=0, max_size=3), min_size=1, max_size=5),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**16),
)
def test_foreach_and_single_tensor_paths_agree_on_any_shapes(name, shapes, dtype, seed):
    """Property: for any list of tensor shapes (scalars included) and dtype, both paths give
    bit-identical parameters and state after a few steps with random gradients."""
    g = torch.Generator().manual_seed(seed)
    init = [torch.randn(s, generator=g, dtype=dtype) for s in shapes]
    grads = [[torch.randn(s, generator=g, dtype=dtype) for s in shapes] for _ in range(4)]
    results = []
    for foreach in (False, True):
        params = [torch.nn.Parameter(t.clone()) for t in init]
        opt = OPTIMIZERS[name](params, lr=0.01, weight_decay=1e-3, foreach=foreach)
        for step_grads in grads:
            def closure():
                for p, gr in zip(params, step_grads):
                    p.grad = gr.clone()
            opt.step(closure)
        results.append((params, opt))
    (p0, o0), (p1, o1) = results
    for a, b in zip(p0, p1):
        assert a.dtype == dtype and torch.equal(a, b)
        assert all(torch.equal(o0.state[a][k], o1.state[b][k]) for k in o0.state[a])
