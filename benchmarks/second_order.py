"""Second-order and line-search methods of descend against SciPy, torch and torchmin, in one run.

For each problem (Rosenbrock; multinomial logistic regression and a one-hidden-layer tanh
MLP on MNIST pooled to 7x7, full batch, L2-regularized, float64) and each method,
from the same starting point to the same stopping rule (max |g_i| <= gtol), the table
gives iterations, function+gradient evaluations (Hessian-vector products separately),
wall time and the final loss:

  BFGS          descend.optim.BFGS        vs scipy BFGS,      torchmin bfgs
  L-BFGS (m=10) descend.optim.LBFGS       vs scipy L-BFGS-B,  torch.optim.LBFGS (strong Wolfe),
                                             torchmin l-bfgs
  CG            descend.optim.NonlinearCG vs scipy CG,        torchmin cg
  Newton-CG     descend.optim.NewtonCG    vs scipy Newton-CG (hessp by torch), torchmin newton-cg
  Newton-exact  descend.optim.Newton (LM) vs torchmin newton-exact

Fairness: SciPy's ``fun`` evaluates the loss and gradient of the same torch module
(``jac=True``: one call = one f+g evaluation), so only the optimizer differs; torchmin
takes the loss as a function of a flat tensor (its API), evaluated by
``torch.func.functional_call`` of the same module. SciPy's and torchmin's own stopping
rules are replaced by the common one through their callbacks; the time spent in those
callbacks (a gradient check) is subtracted. Everything runs single-threaded (BLAS and
torch), which on a shared machine is both faster and steadier for problems this small.
Wall time: the minimum over ``--repeats`` interleaved runs (runs over 20 s: once).
Newton-exact runs at most 100 iterations. Ratio = wall time / the SciPy run of the
same method (torchmin for Newton-exact); evals ratio likewise.

    python benchmarks/second_order.py --quick
    /work/bench-venv/bin/python benchmarks/second_order.py      # with torchmin
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy/scipy load their BLAS

import argparse  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numpy as np  # noqa: E402
import scipy  # noqa: E402
import scipy.optimize  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from descend.io import atomic_write_json  # noqa: E402
from descend.optim import BFGS, LBFGS, Newton, NewtonCG, NonlinearCG  # noqa: E402

try:  # benchmark-only dependency (pytorch-minimize)
    import torchmin
except ImportError:  # pragma: no cover - depends on the environment
    torchmin = None

torch.set_num_threads(1)


# --------------------------------------------------------------------------- problems


class Rosenbrock(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        x0 = torch.tensor([-1.2, 1.0] * (n // 2), dtype=torch.float64)
        self.x = nn.Parameter(x0)

    def forward(self):
        x = self.x
        return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


class Classifier(nn.Module):
    """Softmax regression (hidden = 0) or a tanh MLP, cross-entropy + L2 on the weights."""

    def __init__(self, X, y, hidden: int, l2: float, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        d, k = X.shape[1], 10
        self.net = nn.Linear(d, k) if hidden == 0 else nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, k))
        self.net.double()
        self.X, self.y, self.l2 = X, y, l2

    def forward(self):
        weights = [p for n, p in self.named_parameters() if n.endswith("weight")]
        penalty = sum((w * w).sum() for w in weights)
        return nn.functional.cross_entropy(self.net(self.X), self.y) + 0.5 * self.l2 * penalty


def mnist_7x7(n: int, data_dir: str | None):
    """The first n MNIST training images, average-pooled to 7 x 7 (49 features, centred), float64.

    Pooled so that Newton's method, which forms the k x k Hessian, stays affordable. Without
    the MNIST files (``--data-dir`` or $DESCEND_DATA), a synthetic stand-in: 49-dimensional
    Gaussian inputs labelled by a random teacher network (said so in the output)."""
    try:
        from descend.data import load_dataset

        train = load_dataset("mnist", data_dir=data_dir, limit=n, download=False).train
        X = nn.functional.avg_pool2d(train.x[:n].double(), 4).reshape(n, -1)
        y = train.y[:n]
        source = "mnist"
    except Exception as exc:  # noqa: BLE001 - any missing-data error: fall back, and say so
        g = torch.Generator().manual_seed(0)
        X = torch.randn(n, 49, generator=g, dtype=torch.float64)
        teacher = torch.randn(49, 10, generator=g, dtype=torch.float64)
        y = torch.tanh(X @ teacher).argmax(1)
        source = f"synthetic ({type(exc).__name__}: MNIST not found)"
    return X - X.mean(0), y, source


def problems(quick: bool, data_dir: str | None) -> tuple[dict[str, nn.Module], str]:
    n = 500 if quick else 2000
    X, y, source = mnist_7x7(n, data_dir)
    return {
        "rosenbrock-10": Rosenbrock(10),
        "logistic-mnist7x7": Classifier(X, y, hidden=0, l2=1e-3),
        "mlp-mnist7x7": Classifier(X, y, hidden=8 if quick else 16, l2=1e-3),
    }, source


# --------------------------------------------------------------------------- plumbing


def params_of(model):
    return [p for p in model.parameters()]


def get_x(model) -> torch.Tensor:
    return torch.nn.utils.parameters_to_vector(params_of(model)).detach().clone()


def set_x(model, x: torch.Tensor) -> None:
    """Copy x into the parameters (``vector_to_parameters`` would make them views of x)."""
    params = params_of(model)
    with torch.no_grad():
        for p, c in zip(params, x.split([p.numel() for p in params])):
            p.copy_(c.view_as(p))


def loss_and_grad(model) -> tuple[float, torch.Tensor]:
    with torch.enable_grad():  # torchmin calls callbacks under no_grad
        loss = model()
        grads = torch.autograd.grad(loss, params_of(model))
    return float(loss.detach()), torch.cat([g.reshape(-1) for g in grads])


def closure_for(model, create_graph: bool = False) -> Callable[[], torch.Tensor]:
    params = params_of(model)

    def closure():
        loss = model()
        if create_graph:
            grads = torch.autograd.grad(loss, params, create_graph=True)
            for p, g in zip(params, grads):
                p.grad = g
        else:
            for p in params:
                p.grad = None
            loss.backward()
        return loss

    return closure


def functional(model) -> Callable[[torch.Tensor], torch.Tensor]:
    """The loss as a function of the flat parameter vector (for torchmin)."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]

    def f(x):
        state = {n: c.view(s) for n, c, s in zip(names, x.split(sizes), shapes)}
        return torch.func.functional_call(model, state, ())

    return f


class Stop:
    """Common stopping rule for SciPy / torchmin callbacks; its own time is measured."""

    def __init__(self, model, gtol: float, cache=None):
        self.model, self.gtol, self.cache, self.seconds = model, gtol, cache, 0.0

    def converged(self, x) -> bool:
        start = time.perf_counter()
        x = torch.as_tensor(np.asarray(x, dtype=np.float64)) if not torch.is_tensor(x) else x.detach()
        if self.cache is not None and self.cache.get("x") is not None and torch.equal(self.cache["x"], x):
            g = self.cache["g"]
        else:
            saved = get_x(self.model)
            set_x(self.model, x)
            g = loss_and_grad(self.model)[1]
            set_x(self.model, saved)
        done = float(g.abs().max()) <= self.gtol
        self.seconds += time.perf_counter() - start
        return done


# --------------------------------------------------------------------------- runners


def run_descend(model, cls, gtol: float, maxiter: int, **kw) -> dict[str, Any]:
    create_graph = cls in (Newton, NewtonCG)
    opt = cls(model.parameters(), max_iter=maxiter, max_eval=20 * maxiter, tolerance_grad=gtol,
              tolerance_change=0.0, **kw)
    closure = closure_for(model, create_graph)
    start = time.perf_counter()
    opt.step(closure)
    wall = time.perf_counter() - start
    st = opt.state[params_of(model)[0]]
    return {"iterations": st["n_iter"], "evals": st["func_evals"], "hvps": st.get("hvp_evals"),
            "wall": wall, "status": opt.status}


def run_torch_lbfgs(model, gtol: float, maxiter: int) -> dict[str, Any]:
    opt = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=maxiter, max_eval=20 * maxiter, tolerance_grad=gtol,
                            tolerance_change=0.0, history_size=10, line_search_fn="strong_wolfe")
    closure = closure_for(model)

    def counted():  # torch.optim.LBFGS counts its own evaluations too; this is the same number
        counted.n += 1
        return closure()

    counted.n = 0
    start = time.perf_counter()
    opt.step(counted)
    wall = time.perf_counter() - start
    st = opt.state[params_of(model)[0]]
    return {"iterations": st["n_iter"], "evals": counted.n, "hvps": None, "wall": wall, "status": ""}


def run_scipy(model, method: str, gtol: float, maxiter: int) -> dict[str, Any]:
    params = params_of(model)
    x0 = get_x(model).numpy()
    cache: dict[str, Any] = {}

    def fun(x):
        xt = torch.from_numpy(np.array(x, dtype=np.float64))
        set_x(model, xt)
        f, g = loss_and_grad(model)
        cache["x"], cache["g"] = xt, g
        return f, g.numpy()

    def hessp(x, v):
        set_x(model, torch.from_numpy(np.array(x, dtype=np.float64)))
        loss = model()
        grads = torch.autograd.grad(loss, params, create_graph=True)
        flat = torch.cat([g.reshape(-1) for g in grads])
        hv = torch.autograd.grad(flat, params, grad_outputs=torch.from_numpy(np.asarray(v, dtype=np.float64)))
        return torch.cat([h.reshape(-1) for h in hv]).numpy()

    stop = Stop(model, gtol, cache)

    def callback(intermediate_result):
        if stop.converged(intermediate_result.x):
            raise StopIteration

    options: dict[str, Any] = {"maxiter": maxiter}
    kwargs: dict[str, Any] = {}
    if method == "L-BFGS-B":
        options.update(gtol=gtol, ftol=0.0, maxcor=10, maxfun=20 * maxiter)
    elif method == "Newton-CG":
        options.update(xtol=1e-30)
        kwargs["hessp"] = hessp
    else:
        options.update(gtol=gtol)
    start = time.perf_counter()
    res = scipy.optimize.minimize(fun, x0, jac=True, method=method, options=options, callback=callback, **kwargs)
    wall = time.perf_counter() - start - stop.seconds
    set_x(model, torch.from_numpy(np.array(res.x, dtype=np.float64)))
    return {"iterations": int(res.nit), "evals": int(res.nfev), "hvps": int(res.get("nhev", 0)) or None,
            "wall": wall, "status": str(res.message)[:40]}


def run_torchmin(model, method: str, gtol: float, maxiter: int) -> dict[str, Any]:
    f = functional(model)
    x0 = get_x(model)
    stop = Stop(model, gtol)
    options: dict[str, Any] = {"max_iter": maxiter}
    if method in ("bfgs", "l-bfgs", "cg"):
        options["gtol"] = gtol
    if method in ("bfgs", "l-bfgs"):
        options["xtol"] = 0.0  # its own stop on a small step; the common rule decides
    if method == "l-bfgs":
        options["history_size"] = 10
    if method in ("newton-cg", "newton-exact"):
        options["xtol"] = 1e-30
    start = time.perf_counter()
    res = torchmin.minimize(f, x0, method=method, options=options, callback=stop.converged)
    wall = time.perf_counter() - start - stop.seconds
    set_x(model, res.x.detach().reshape(-1))
    return {"iterations": int(res.nit), "evals": int(res.nfev), "hvps": None, "wall": wall,
            "status": str(res.message)[:40]}


def contenders(maxiter: int) -> list[tuple[str, str, Callable]]:
    """(method, implementation, runner(model, gtol)); the first of each method is descend."""
    rows = [
        ("BFGS", "descend", lambda m, g: run_descend(m, BFGS, g, maxiter)),
        ("BFGS", "scipy", lambda m, g: run_scipy(m, "BFGS", g, maxiter)),
        ("L-BFGS", "descend", lambda m, g: run_descend(m, LBFGS, g, maxiter, history_size=10)),
        ("L-BFGS", "scipy", lambda m, g: run_scipy(m, "L-BFGS-B", g, maxiter)),
        ("L-BFGS", "torch", lambda m, g: run_torch_lbfgs(m, g, maxiter)),
        ("CG", "descend", lambda m, g: run_descend(m, NonlinearCG, g, 4 * maxiter)),
        ("CG", "scipy", lambda m, g: run_scipy(m, "CG", g, 4 * maxiter)),
        ("Newton-CG", "descend", lambda m, g: run_descend(m, NewtonCG, g, maxiter)),
        ("Newton-CG", "scipy", lambda m, g: run_scipy(m, "Newton-CG", g, maxiter)),
        ("Newton-exact", "descend", lambda m, g: run_descend(m, Newton, g, 100)),
    ]
    if torchmin is not None:
        rows += [
            ("BFGS", "torchmin", lambda m, g: run_torchmin(m, "bfgs", g, maxiter)),
            ("L-BFGS", "torchmin", lambda m, g: run_torchmin(m, "l-bfgs", g, maxiter)),
            ("CG", "torchmin", lambda m, g: run_torchmin(m, "cg", g, 4 * maxiter)),
            ("Newton-CG", "torchmin", lambda m, g: run_torchmin(m, "newton-cg", g, maxiter)),
            ("Newton-exact", "torchmin", lambda m, g: run_torchmin(m, "newton-exact", g, 100)),
        ]
    order = ["BFGS", "L-BFGS", "CG", "Newton-CG", "Newton-exact"]
    return sorted(rows, key=lambda r: order.index(r[0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small problems, one repeat")
    parser.add_argument("--out", type=Path, default=Path("bench-results/second_order.json"))
    parser.add_argument("--repeats", type=int, help="timed runs per contender (min is kept)")
    parser.add_argument("--gtol", type=float, default=1e-5, help="stop when max |g_i| <= gtol")
    parser.add_argument("--maxiter", type=int, default=3000)
    parser.add_argument("--problems", nargs="+", help="subset of problem names")
    parser.add_argument("--data-dir", default=os.environ.get("DESCEND_DATA"), help="folder holding mnist/")
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    # the first torch.optim.Optimizer constructed imports ~800 modules (seconds): not timed
    torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    rows = []
    table, source = problems(args.quick, args.data_dir)
    print(f"data: {source}")
    for pname, model in table.items():
        if args.problems and pname not in args.problems:
            continue
        x0 = get_x(model)
        k = x0.numel()
        reference: dict[str, dict] = {}
        runs = contenders(args.maxiter)
        best: list[dict | None] = [None] * len(runs)
        for rep in range(repeats):  # contenders interleaved, so a busy spell hits them alike
            for i, (method, impl, runner) in enumerate(runs):
                if rep > 0 and best[i]["wall"] > 20.0:
                    continue  # a long run's time is steady enough once
                set_x(model, x0)
                r = runner(model, args.gtol)
                f, g = loss_and_grad(model)
                r.update(problem=pname, params=k, method=method, impl=impl, loss=f, max_grad=float(g.abs().max()))
                if best[i] is None or r["wall"] < best[i]["wall"]:
                    best[i] = r
        for (method, impl, _), r in zip(runs, best):
            if impl == ("torchmin" if method == "Newton-exact" else "scipy"):
                reference[method] = r
            rows.append(r)
        for r in rows:
            ref = reference.get(r["method"]) if r["problem"] == pname else None
            if ref is not None:
                r["time_ratio"] = r["wall"] / ref["wall"] if ref["wall"] > 0 else math.nan
                r["evals_ratio"] = r["evals"] / ref["evals"] if ref["evals"] else math.nan
        set_x(model, x0)
    _print(rows)
    env = {"python": platform.python_version(), "torch": torch.__version__, "scipy": scipy.__version__,
           "torchmin": getattr(torchmin, "__version__", None), "threads": torch.get_num_threads(),
           "machine": platform.machine(), "quick": args.quick, "repeats": repeats, "gtol": args.gtol,
           "data": source}
    atomic_write_json(args.out, {"env": env, "rows": rows})
    print(f"\nwrote {args.out}")


def _print(rows: list[dict]) -> None:
    head = ["problem", "k", "method", "impl", "iters", "f+g evals", "Hv", "evals/ref", "wall s", "time/ref",
            "final loss", "max|g|"]
    table = [head]
    for r in rows:
        table.append([r["problem"], str(r["params"]), r["method"], r["impl"], str(r["iterations"]), str(r["evals"]),
                      "" if not r.get("hvps") else str(r["hvps"]),
                      f"{r['evals_ratio']:.2f}" if "evals_ratio" in r else "",
                      f"{r['wall']:.3f}", f"{r['time_ratio']:.2f}" if "time_ratio" in r else "",
                      f"{r['loss']:.8g}", f"{r['max_grad']:.1e}"])
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for i, row in enumerate(table):
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths)))
        if i == 0:
            print("-+-".join("-" * w for w in widths))


if __name__ == "__main__":
    main()
