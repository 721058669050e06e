"""Input normalization and whitening, and tanh vs sigmoid hidden units (CS189 heuristics).

CS189 "Normalizing the data": "Center each feature so mean is zero. Then scale each
feature so variance ~ 1. [The first step seems to make it easier for hidden units to
get into a good operating region of the sigmoid or ReLU. The second step makes the
objective function better conditioned, so gradient descent converges faster.] ...
Whitening reduces the eccentricity even more." And: "'Centering' the hidden units
helps too. Replace sigmoids with tanh", whose outputs are centred on 0.

On MNIST, with every preprocessing of ``descend.data.preprocessing`` fitted on the
training images only (none, center, standardize, PCA and ZCA whitening), three models
are trained by plain SGD (no momentum, so conditioning shows) for the same number of
epochs: softmax regression (a convex problem whose Hessian is shaped by the input
covariance), and MLPs with 100 sigmoid or 100 tanh hidden units. Better conditioning
allows a larger stable step, so each row uses the best of a small learning-rate sweep
(chosen on validation accuracy, the ``lr-find`` heuristic). The table also gives the
eccentricity lambda_1 / lambda_100 of the preprocessed training inputs' covariance.

Writes ``whitening.png`` (eccentricity, and the training loss after one epoch of each
model, per preprocessing), ``whitening.json`` and ``whitening.md``.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from torch import nn

from descend.data.preprocessing import Preprocess
from descend.errors import Diverged
from descend.experiments._heuristics import (add_data_arguments, bars, figure, fit, judge, load, mlp, pct, report,
                                             save_figure, settings, single_thread)

DESCRIPTION = "CS189: centering, standardization, PCA/ZCA whitening, tanh vs sigmoid hidden units, same budget"

CLAIM = ("Centering each input feature and scaling it to unit variance makes the objective better conditioned "
         "(a less eccentric Hessian), so gradient descent converges faster; whitening reduces the eccentricity even "
         "more; and centring the hidden units by replacing sigmoids with tanh helps too (CS189, heuristics for "
         "faster training: normalizing the data).")

BUDGETS = {
    "cpu": {"train_limit": 10_000, "eval_limit": 2_000, "epochs": 3, "lrs": (0.03, 0.1, 0.3, 1.0)},
    "full": {"train_limit": None, "eval_limit": None, "epochs": 10, "lrs": (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)},
}
METHODS = ("none", "center", "standardize", "pca", "zca")
MODELS = ("softmax regression", "MLP, sigmoid units", "MLP, tanh units")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser)
    parser.add_argument("--lr", type=float, nargs="+", help="SGD learning rates to sweep (default: set by --budget)")
    parser.add_argument("--eps", type=float, default=0.1, help="added to variances / eigenvalues")


def eccentricity(x: torch.Tensor, k: int = 100) -> float:
    """lambda_1 / lambda_k of the covariance of the rows of x (flattened), among its non-zero
    eigenvalues (constant pixels, such as MNIST's borders, give exact zeros)."""
    flat = x.reshape(len(x), -1).double()
    lam = torch.linalg.eigvalsh(torch.cov(flat.T)).flip(0)
    lam = lam[lam > 1e-10 * lam[0]]
    return float(lam[0] / lam[min(k, len(lam)) - 1])


def _by(results: dict, model: str) -> dict[str, dict]:
    return {r["preprocess"]: r for r in results["runs"] if r["model"] == model}


def _first_loss(run: dict) -> float:
    return min(r["history"][0]["train_loss"] for r in run["sweep"])


def verdict(results: dict) -> tuple[str, str]:
    """Four checks: standardizing lowers the eccentricity of the inputs and whitening (PCA, ZCA)
    lowers it further; softmax regression on standardized inputs reaches a lower training loss
    after one epoch (each at its best swept rate) than on raw inputs; whitened inputs do no worse
    than standardized ones; and the tanh MLP beats the sigmoid MLP in final validation accuracy on
    most preprocessings."""
    soft = _by(results, "softmax regression")
    sig, tanh = _by(results, "MLP, sigmoid units"), _by(results, "MLP, tanh units")
    ecc = {m: r["eccentricity"] for m, r in soft.items()}
    loss = {m: _first_loss(r) for m, r in soft.items()}
    final = lambda r: max(x["history"][-1].get("val_accuracy", 0.0) for x in r["sweep"])  # noqa: E731
    common = [m for m in METHODS if m in sig and m in tanh]
    tanh_wins = sum(final(tanh[m]) > final(sig[m]) for m in common)
    inf, nan = float("inf"), float("nan")
    whitened = min(loss.get("pca", inf), loss.get("zca", inf))
    checks = [
        ecc.get("standardize", inf) < ecc["none"] and max(ecc.get("pca", inf), ecc.get("zca", inf)) < ecc["standardize"],
        loss.get("standardize", inf) < loss["none"],
        whitened <= loss.get("standardize", inf) * 1.05,
        2 * tanh_wins > len(common),
    ]
    evidence = (f"eccentricity none {ecc['none']:.3g}, standardize {ecc.get('standardize', nan):.3g}, "
                f"ZCA {ecc.get('zca', nan):.3g}; softmax regression training loss after epoch 1: none "
                f"{loss['none']:.3f}, standardize {loss.get('standardize', nan):.3f}, whitened {whitened:.3f}; "
                f"tanh beats sigmoid on {tanh_wins} of {len(common)} preprocessings")
    return judge(checks), evidence


def _plot(runs: list[dict], path) -> None:
    fig = figure(12, 4.2, "Input preprocessing: conditioning and speed of training")
    ecc_ax, loss_ax = fig.subplots(1, 2)
    methods = [m for m in METHODS if any(r["preprocess"] == m for r in runs)]
    ecc = {r["preprocess"]: r["eccentricity"] for r in runs}
    ecc_ax.bar(methods, [ecc[m] for m in methods], color="tab:gray")
    ecc_ax.set(yscale="log", xlabel="preprocessing (fitted on the training images)",
               ylabel="eccentricity lambda_1 / lambda_100", title="eccentricity of the input covariance")
    ecc_ax.grid(axis="y", alpha=0.3)
    loss = {}
    for name in MODELS:
        by = {r["preprocess"]: r for r in runs if r["model"] == name}
        loss[name] = [_first_loss(by[m]) if m in by else float("nan") for m in methods]
    bars(loss_ax, methods, loss, "training loss after epoch 1 (best swept lr)",
         "training loss after one epoch of plain SGD")
    loss_ax.set_xlabel("preprocessing")
    save_figure(fig, path)


def run(args: argparse.Namespace) -> int:
    s = settings(args, BUDGETS)
    lrs, eps = tuple(getattr(args, "lr", None) or s["lrs"]), getattr(args, "eps", 0.1)
    say = (lambda *a: None) if args.quiet else print
    splits = load(args, s["train_limit"], s["eval_limit"])
    features = int(torch.tensor(splits.input_shape).prod())
    rows = [["model", "preprocessing", "eccentricity l1/l100", "best lr", "train loss epoch 1", "val acc epoch 1",
             f"val acc epoch {s['epochs']}", f"test acc epoch {s['epochs']}"]]
    runs: list[dict[str, Any]] = []
    with single_thread():
        for method in METHODS:
            pre = None
            ecc = eccentricity(splits.train.x)
            if method != "none":
                pre = Preprocess(method, splits.input_shape, eps=eps).fit(splits.train.x)
                with torch.no_grad():
                    ecc = eccentricity(pre(splits.train.x))
            for name in MODELS:
                sweep = []
                for lr in lrs:
                    torch.manual_seed(args.seed)
                    if name == "softmax regression":
                        net = mlp([features, splits.num_classes])
                    else:
                        net = mlp([features, 100, splits.num_classes], "sigmoid" if "sigmoid" in name else "tanh")
                    model = nn.Sequential(pre, net) if pre is not None else net
                    try:
                        history, seconds = fit(model, splits, epochs=s["epochs"], lr=lr, momentum=0.0, seed=args.seed)
                    except Diverged:
                        continue
                    sweep.append({"lr": lr, "seconds": seconds, "history": history})
                if not sweep:
                    rows.append([name, method, f"{ecc:.3g}", "all diverged", "-", "-", "-", "-"])
                    continue
                best = max(sweep, key=lambda r: r["history"][-1].get("val_accuracy", 0.0))
                runs.append({"model": name, "preprocess": method, "eccentricity": ecc, "best_lr": best["lr"],
                             "sweep": sweep})
                h = best["history"]
                rows.append([name, method, f"{ecc:.3g}", f"{best['lr']:g}", f"{h[0]['train_loss']:.4f}",
                             pct(h[0].get("val_accuracy")), pct(h[-1].get("val_accuracy")),
                             pct(h[-1].get("test_accuracy"))])
                say(f"  {name:20s} {method:12s} best lr {best['lr']:g}: val {pct(h[-1].get('val_accuracy'))}")
    rows = [rows[0]] + sorted(rows[1:], key=lambda r: (MODELS.index(r[0]), METHODS.index(r[1])))
    intro = [
        f"{len(splits.train)} training examples; statistics fitted on them only (eps {eps}); plain SGD "
        f"(batch 64, no momentum), {s['epochs']} epochs; MLPs 784-100-10; learning rate swept over "
        f"{', '.join(map(str, lrs))} per row, the best by final validation accuracy shown.",
    ]
    _plot(runs, args.run_dir / "whitening.png")
    report(args, "whitening", "whitening: input preprocessing and centred hidden units (CS189)", intro,
           [("Preprocessing x model", rows)], {"settings": s, "lrs": lrs, "eps": eps, "runs": runs},
           images=["whitening.png"], say=say, claim=CLAIM, verdict=verdict)
    return 0
