"""Newton's method is attracted to saddle points; saddle-free Newton and gradient descent escape.

Deep Learning sec. 8.2.3: "Gradient descent is designed to move 'downhill' and is not
explicitly designed to seek a critical point. Newton's method, however, is designed to
solve for a point where the gradient is zero. Without appropriate modification, it can
jump to a saddle point." Saddle-free Newton (Dauphin et al., 2014) rescales by |H|
instead of H; Levenberg-Marquardt damping (eq. 8.28) is the other modification.

Two parts, each comparing four methods from the same starting points:

* ``newton``: Algorithm 8.8 as printed (theta <- theta - H^{-1} g, no damping);
* ``newton-lm``: Newton with the adaptive Levenberg-Marquardt damping of eq. 8.28;
* ``saddle-free``: theta <- theta - |H|^{-1} g (sec. 8.2.3);
* ``gd``: full-batch gradient descent (Algorithm 8.1 on the whole set).

1. f(x, y) = x^2 / 2 + y^4 / 4 - y^2 / 2: a saddle point at (0, 0) (eigenvalues 1, -1), minima
   at (0, +-1) with f = -1/4. Starts near the saddle. A contour plot shows the paths.
2. A deep linear network y = W2 W1 x (4 -> 2 -> 4, whitened inputs, targets A x), the
   model of Baldi & Hornik (1989) and Saxe et al. (2013) in sec. 8.2.3: no bad local
   minima, but a saddle point of high cost at W = 0, "near where the parameters are
   initialized" (fig. 8.2). Small random initializations, several seeds. The global
   minimum's loss is known in closed form (the truncated SVD of A), and the Hessian's
   eigen-spectrum at the end point tells a saddle (negative eigenvalues) from a minimum.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable

import torch

from descend.errors import ConfigError
from descend.experiments._heuristics import settings, single_thread, table
from descend.io import atomic_write_json, atomic_write_text
from descend.optim import Newton, SaddleFreeNewton
from descend.optim.curvature import hessian_eigenspectrum

DESCRIPTION = "sec. 8.2.3: plain Newton converges to saddle points; saddle-free Newton, LM-damped Newton and GD escape"
CLAIM = ("Newton's method solves for a point where the gradient is zero and, without modification, can jump to "
         "a saddle point; the saddle-free Newton method (|H| in place of H, Dauphin et al. 2014) escapes it "
         "(Deep Learning sec. 8.2.3).")

METHODS = ("newton", "newton-lm", "saddle-free", "gd")
BUDGETS = {
    "cpu": {"seeds": 5, "newton_iters": 40, "gd_steps": 1000},
    "full": {"seeds": 20, "newton_iters": 100, "gd_steps": 5000},
}
TOY_STARTS = [(1.0, 0.3), (-0.8, -0.2), (0.6, 0.4), (-1.5, 0.05)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", type=int, help="initializations of the network part")
    parser.add_argument("--init-scale", type=float, default=0.01, help="std of the network's initial weights")
    parser.add_argument("--lr", type=float, default=0.1, help="gradient descent learning rate")


# --------------------------------------------------------------------------- the problems


def toy_loss(theta: torch.Tensor) -> torch.Tensor:
    """f(x, y) = x^2/2 + y^4/4 - y^2/2."""
    x, y = theta[0], theta[1]
    return 0.5 * x**2 + 0.25 * y**4 - 0.5 * y**2


def linear_network(seed: int, scale: float, n: int = 4, k: int = 2, m: int = 200):
    """Parameters, loss closure and reference losses of the deep linear network of part 2."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(m, n, generator=g, dtype=torch.float64)
    L = torch.linalg.cholesky(X.T @ X / m)
    X = X @ torch.linalg.inv(L).T  # whitened: X^T X / m = I
    A = torch.randn(n, n, generator=g, dtype=torch.float64)
    Y = X @ A.T
    W1 = torch.nn.Parameter(scale * torch.randn(k, n, generator=g, dtype=torch.float64))
    W2 = torch.nn.Parameter(scale * torch.randn(n, k, generator=g, dtype=torch.float64))

    def loss() -> torch.Tensor:
        return ((X @ W1.T @ W2.T - Y) ** 2).mean()

    s = torch.linalg.svdvals(A)
    return [W1, W2], loss, {"global_min": float((s[k:] ** 2).sum() / n), "at_saddle_W0": float((s**2).sum() / n)}


# --------------------------------------------------------------------------- the methods


def _closure(params: list[torch.Tensor], loss: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    def closure() -> torch.Tensor:
        value = loss()
        grads = torch.autograd.grad(value, params, create_graph=True)
        for p, g in zip(params, grads):
            p.grad = g
        return value

    return closure


def optimize(method: str, params: list[torch.Tensor], loss: Callable[[], torch.Tensor], cfg: dict) -> list[float]:
    """Run one method; returns the trajectory of the flat parameters (first = start)."""
    closure = _closure(params, loss)
    flat = lambda: torch.cat([p.detach().reshape(-1) for p in params]).tolist()  # noqa: E731
    path = [flat()]
    if method == "gd":
        opt = torch.optim.SGD(params, lr=cfg["lr"])
        for _ in range(cfg["gd_steps"]):
            opt.step(closure)
            path.append(flat())
        return path
    if method == "newton":
        opt = Newton(params, adaptive=False, damping=0.0, max_iter=1, tolerance_grad=1e-12)
    elif method == "newton-lm":
        opt = Newton(params, adaptive=True, max_iter=1, tolerance_grad=1e-12)
    elif method == "saddle-free":
        opt = SaddleFreeNewton(params, adaptive=False, damping=1e-3, max_iter=1, tolerance_grad=1e-12)
    else:
        raise ConfigError(f"unknown method {method!r}")
    for _ in range(cfg["newton_iters"]):
        opt.step(closure)
        path.append(flat())
        if opt.status == "converged: gradient":
            break
    return path


def classify(params: list[torch.Tensor], loss: Callable[[], torch.Tensor]) -> dict[str, Any]:
    """Loss, gradient norm and Hessian spectrum at the end point: minimum, saddle or neither."""
    value = loss()
    grads = torch.autograd.grad(value, params)
    gnorm = float(torch.cat([g.reshape(-1) for g in grads]).norm())
    lam = hessian_eigenspectrum(loss(), params)
    tol = 1e-6 * max(1.0, float(lam.abs().max()))
    negative = int((lam < -tol).sum())
    if gnorm > 1e-5:
        kind = "not converged"
    elif negative:
        kind = f"saddle (index {negative}/{lam.numel()})"
    else:
        kind = "minimum"
    return {"loss": float(value.detach()), "grad_norm": gnorm, "negative_eigenvalues": negative,
            "min_eigenvalue": float(lam[0]), "max_eigenvalue": float(lam[-1]), "end": kind}


# --------------------------------------------------------------------------- run


@single_thread()  # tiny networks: intra-op threads only add synchronization
def run(args) -> int:
    cfg = settings(args, BUDGETS, keys=("seeds",))
    cfg.update(lr=getattr(args, "lr", 0.1), init_scale=getattr(args, "init_scale", 0.01))
    if cfg["lr"] <= 0 or cfg["init_scale"] <= 0:
        raise ConfigError("--lr and --init-scale must be > 0")
    say = (lambda *a: None) if args.quiet else print
    results: dict[str, Any] = {"settings": cfg, "seed": args.seed, "budget": args.budget}

    # part 1: the two-dimensional saddle
    toy, paths = [], {}
    for start in TOY_STARTS:
        for method in METHODS:
            theta = torch.nn.Parameter(torch.tensor(start, dtype=torch.float64))
            loss = lambda: toy_loss(theta)  # noqa: E731
            path = optimize(method, [theta], loss, cfg)
            paths[(start, method)] = path
            r = classify([theta], loss)
            r.update(start=list(start), method=method, end_point=path[-1], iterations=len(path) - 1)
            toy.append(r)
    results["toy"] = toy
    rows = [["start", *METHODS]]
    for start in TOY_STARTS:
        rs = {r["method"]: r for r in toy if tuple(r["start"]) == start}
        rows.append([f"({start[0]:g}, {start[1]:g})"]
                    + [f"{rs[m]['end']} at ({rs[m]['end_point'][0]:.2g}, {rs[m]['end_point'][1]:.2g})" for m in METHODS])
    toy_table = table(rows)
    say("part 1: f(x, y) = x^2/2 + y^4/4 - y^2/2 (saddle at (0, 0), minima at (0, +-1))")
    say(toy_table)

    # part 2: the deep linear network
    net = []
    for s in range(cfg["seeds"]):
        for method in METHODS:
            params, loss, ref = linear_network(args.seed + s, cfg["init_scale"])
            path = optimize(method, params, loss, cfg)
            r = classify(params, loss)
            r.update(seed=args.seed + s, method=method, iterations=len(path) - 1, **ref)
            net.append(r)
    results["network"] = net
    rows = [["method", "ended at a saddle", "ended at a minimum", "mean final loss", "mean global-min loss",
             "mean loss at W = 0"]]
    summary = {}
    for method in METHODS:
        rs = [r for r in net if r["method"] == method]
        saddles = sum(r["end"].startswith("saddle") for r in rs)
        minima = sum(r["end"] == "minimum" for r in rs)
        summary[method] = {"saddle": saddles, "minimum": minima, "runs": len(rs)}
        mean = lambda key: sum(r[key] for r in rs) / len(rs)  # noqa: E731
        rows.append([method, f"{saddles}/{len(rs)}", f"{minima}/{len(rs)}", f"{mean('loss'):.4f}",
                     f"{mean('global_min'):.4f}", f"{mean('at_saddle_W0'):.4f}"])
    results["network_summary"] = summary
    net_table = table(rows)
    say(f"part 2: deep linear network 4 -> 2 -> 4, init std {cfg['init_scale']}, {cfg['seeds']} seeds")
    say(net_table)

    _plot(paths, args.run_dir / "saddle_paths.png")
    _plot_network(net, args.run_dir / "saddle_network.png")
    status, evidence = verdict(results)
    results.update(claim=CLAIM, verdict=status, verdict_evidence=evidence)
    say(f"claim: {CLAIM}")
    say(f"verdict: {status} - {evidence}")
    atomic_write_json(args.run_dir / "results.json", results)
    markdown = [
        f"# saddle-point ({args.budget} budget, seed {args.seed})", "",
        "Deep Learning sec. 8.2.3: Newton's method (Algorithm 8.8) solves for a zero gradient and is",
        "attracted to saddle points; saddle-free Newton (|H|), Levenberg-Marquardt damping (eq. 8.28)",
        "and gradient descent escape them.", "",
        "## Part 1: f(x, y) = x^2/2 + y^4/4 - y^2/2", "", toy_table, "", "![paths](saddle_paths.png)", "",
        "## Part 2: deep linear network (Baldi & Hornik), saddle point at W = 0", "", net_table, "",
        "![final losses](saddle_network.png)", "", f"Claim: {CLAIM}", "", f"Verdict: {status} - {evidence}", "",
    ]
    atomic_write_text(args.run_dir / "saddle_point.md", "\n".join(markdown) + "\n")
    return 0


def verdict(results: dict) -> tuple[str, str]:
    """Reproduced when plain Newton ends at a saddle point in most runs (both parts together) and
    saddle-free Newton ends at a minimum in most runs; partly when only one of the two holds."""
    runs = [*results["toy"], *results["network"]]
    count = lambda method, kind: sum(r["end"].startswith(kind) for r in runs if r["method"] == method)  # noqa: E731
    total = lambda method: sum(r["method"] == method for r in runs)  # noqa: E731
    newton_saddle, free_minimum = count("newton", "saddle"), count("saddle-free", "minimum")
    n_newton, n_free = total("newton"), total("saddle-free")
    net = {m: [r for r in results["network"] if r["method"] == m] for m in ("newton", "saddle-free")}
    mean_excess = {m: abs(sum(r["loss"] - r["global_min"] for r in rs)) / max(1, len(rs)) for m, rs in net.items()}
    evidence = (f"plain Newton ends at a saddle point in {newton_saddle}/{n_newton} runs (2-D function and linear "
                f"networks; mean network loss {mean_excess['newton']:.3g} from the global minimum), "
                f"saddle-free Newton at a minimum in {free_minimum}/{n_free} "
                f"({mean_excess['saddle-free']:.1e} from it)")
    newton_holds, free_holds = 2 * newton_saddle > n_newton, 2 * free_minimum > n_free
    if newton_holds and free_holds:
        return "reproduced", evidence
    return ("partly reproduced" if newton_holds or free_holds else "not reproduced"), evidence


def _plot(paths: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from descend.io import atomic_path

    xs = torch.linspace(-1.6, 1.6, 161, dtype=torch.float64)
    ys = torch.linspace(-1.4, 1.4, 141, dtype=torch.float64)
    X, Y = torch.meshgrid(xs, ys, indexing="xy")
    Z = 0.5 * X**2 + 0.25 * Y**4 - 0.5 * Y**2
    fig, axes = plt.subplots(1, len(METHODS), figsize=(3.4 * len(METHODS), 3.8), sharey=True)
    for ax, method in zip(axes, METHODS):
        ax.contour(X.numpy(), Y.numpy(), Z.numpy(), levels=12, linewidths=0.6, cmap="viridis")
        for (start, m), p in paths.items():
            if m != method:
                continue
            pts = torch.tensor(p)
            ax.plot(pts[:, 0].clamp(-1.6, 1.6), pts[:, 1].clamp(-1.4, 1.4), ".-", ms=3, lw=1,
                    label=f"path from ({start[0]:g}, {start[1]:g})")
            ax.plot(*start, "ko", ms=4)
        ax.plot(0, 0, "rx", ms=9, mew=2, label="saddle point (0, 0)")
        ax.plot([0, 0], [1, -1], "g*", ms=10, label="minima (0, +-1)")
        ax.set(title=method, xlabel="x (parameter, no unit)", xlim=(-1.6, 1.6), ylim=(-1.4, 1.4))
    axes[0].set_ylabel("y (parameter, no unit)")
    axes[-1].legend(fontsize=7, loc="lower right")
    fig.suptitle("f(x, y) = x^2/2 + y^4/4 - y^2/2: each method from the same starts (contours of f)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def _plot_network(net: list[dict], path) -> None:
    """Final loss of every run of part 2 against the two reference losses of its network."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from descend.io import atomic_path

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, method in enumerate(METHODS):
        rs = [r for r in net if r["method"] == method]
        xs = [i + 0.25 * (j / max(1, len(rs) - 1) - 0.5) for j in range(len(rs))]
        ax.scatter(xs, [r["loss"] for r in rs], c=["tab:red" if r["end"].startswith("saddle") else "tab:blue"
                                                   for r in rs], zorder=3)
    at_w0 = sum(r["at_saddle_W0"] for r in net) / len(net)
    global_min = sum(r["global_min"] for r in net) / len(net)
    ax.axhline(at_w0, color="tab:red", ls="--", lw=1, label=f"loss at the saddle W = 0 (mean {at_w0:.3g})")
    ax.axhline(global_min, color="tab:green", ls="--", lw=1, label=f"global minimum (mean {global_min:.3g})")
    ax.scatter([], [], c="tab:red", label="run ended at a saddle point")
    ax.scatter([], [], c="tab:blue", label="run ended elsewhere (minimum or not converged)")
    ax.set_xticks(range(len(METHODS)), METHODS)
    ax.set(xlabel="method", ylabel="final training loss (mean squared error)",
           title="deep linear network 4 -> 2 -> 4 from small random weights")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
