"""Sec. 8.2.1 diagnostics: g^T H g against an explicit Hessian, eq. 8.10 against the actual
change of a quadratic, gradient norms, and the Trainer callback (records, metrics, and no
effect on the training trajectory)."""

import numpy as np
import pytest
import torch

from descend.errors import ConfigError
from descend.optim.diagnostics import CurvatureMonitor, gradient_curvature, gradient_norms
from reference import minimize_problems as mp
from reference import second_order as ref


@pytest.fixture(autouse=True)
def _one_thread():
    with mp.single_thread():
        yield


def test_gTHg_matches_the_explicit_hessian():
    problem = mp.SmallMLP()
    _, f = mp.mlp_flat_outputs(problem)
    x0 = torch.tensor(mp.flat(problem))
    H = torch.autograd.functional.hessian(f, x0).numpy()
    g = torch.autograd.functional.jacobian(f, x0).numpy()
    gc = gradient_curvature(problem.loss(), list(problem.parameters()), lr=0.1)
    assert gc.gTg == pytest.approx(g @ g, rel=1e-12)
    assert gc.gTHg == pytest.approx(g @ H @ g, rel=1e-10)
    assert gc.taylor_change() == pytest.approx(ref.taylor_change(g, H, 0.1), rel=1e-10)


@pytest.mark.parametrize("eps", [0.01, 0.3, 2.0])
def test_eq_8_10_is_the_exact_change_of_a_quadratic(eps):
    rng = np.random.default_rng(0)
    M = rng.normal(size=(4, 4))
    A = torch.tensor(M @ M.T + np.eye(4))
    x = torch.nn.Parameter(torch.tensor(rng.normal(size=4)))
    J = lambda v: 0.5 * v @ A @ v  # noqa: E731
    gc = gradient_curvature(J(x), [x])
    with torch.no_grad():
        g = A @ x
        actual = float(J(x - eps * g) - J(x))
    assert gc.taylor_change(eps) == pytest.approx(actual, rel=1e-10)
    # the optimal step along -g (book eq. 4.10) beats its neighbours
    best = gc.optimal_lr
    with torch.no_grad():
        values = [float(J(x - e * g)) for e in (0.9 * best, best, 1.1 * best)]
    assert values[1] < values[0] and values[1] < values[2]


def test_gradient_norms_per_parameter_and_total():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    net(torch.randn(5, 3)).sum().backward()
    norms = gradient_norms(net.named_parameters())
    manual = {n: float(p.grad.norm()) for n, p in net.named_parameters()}
    for n, v in manual.items():
        assert norms[n] == pytest.approx(v)
    assert norms["total"] == pytest.approx(np.sqrt(sum(v * v for v in manual.values())))


def _fit(monitor, tmp_path=None):
    from descend.data import Splits, TensorPair
    from descend.train import Trainer

    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 6, generator=g)
    y = (x.sum(1) > 0).long()
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.BatchNorm1d(12), torch.nn.Tanh(),
                              torch.nn.Dropout(0.2), torch.nn.Linear(12, 2))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    trainer = Trainer(net, opt, Splits(TensorPair(x, y)), epochs=2, batch_size=16, quiet=True,
                      callbacks=[monitor] if monitor else [], evaluate_test=False, checkpoint=False, seed=1)
    history = trainer.fit()
    return net, history


def test_monitor_records_without_changing_training():
    monitor = CurvatureMonitor(every=2, lanczos_steps=5, per_parameter=True)
    net, history = _fit(monitor)
    reference, _ = _fit(None)
    for a, b in zip(net.state_dict().values(), reference.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # same dropout masks, same BN statistics
    assert len(monitor.grad_norm_curve) == 12 and len(monitor.records) == 6
    r = monitor.records[0]
    assert {"gTg", "gTHg", "taylor_change", "optimal_lr", "hessian_max", "grad_norms"} <= set(r)
    assert r["hessian_min"] <= r["hessian_max"]
    assert r["taylor_change"] == pytest.approx(0.5 * 0.1**2 * r["gTHg"] - 0.1 * r["gTg"])
    for m in history:
        assert {"grad_norm", "gTg", "gTHg"} <= set(m)
    restored = CurvatureMonitor()
    restored.load_state_dict(monitor.state_dict())
    assert restored.records == monitor.records and restored.batches == monitor.batches


def test_plot_writes_a_png(tmp_path):
    monitor = CurvatureMonitor(every=3)
    _fit(monitor)
    path = monitor.plot(tmp_path / "curvature.png")
    assert path.stat().st_size > 1000


def test_bad_options_raise():
    with pytest.raises(ConfigError, match="every"):
        CurvatureMonitor(every=0)
    with pytest.raises(ConfigError, match="lanczos_steps"):
        CurvatureMonitor(lanczos_steps=-1)
