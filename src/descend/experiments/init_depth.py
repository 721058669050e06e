"""How the initialization scheme decides whether a 20-layer MLP can learn (Deep Learning sec. 8.4).

"Initial weights that are too large may ... result in exploding values during forward
propagation or back-propagation ... [too small ones] lose signal" (sec. 8.4). For a
20-layer tanh MLP and a 20-layer ReLU MLP on MNIST, and each scheme of ``descend.init``
(torch's default, the U(-1/sqrt(m), 1/sqrt(m)) heuristic, normalized initialization
eq. 8.23 without and with the nonlinearity's gain, LeCun, He, random orthogonal with gain
(Saxe et al.), sparse with k = 15 (Martens) and LSUV (Mishkin & Matas)), this measures on
one batch the standard deviation of every hidden layer's activations and of the loss
gradient with respect to them, and trains one epoch of SGD with momentum.

Expected: the U(-1/sqrt(m), 1/sqrt(m)) heuristic has variance 1/(3m), a third of the
scale-preserving 1/m, so activations and gradients vanish geometrically with depth and
neither net learns in an epoch (torch's default is the same, with uniform biases that
keep some activation); gain-1 schemes (normalized, LeCun) suit tanh but halve the
variance per ReLU layer; the nonlinearity's gain (5/3 for tanh, sqrt(2) for ReLU), He's
scheme, orthogonal matrices with gain and LSUV keep the scale through all 20 layers.
Sparse initialization with unit Gaussians (Martens's k = 15, no 1/sqrt(k) scaling)
explodes in ReLU nets: the scale is a hyperparameter, as the section says.

Writes ``init_depth.png`` (activation and gradient std per layer), ``init_depth.json``
and ``init_depth.md``.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from descend import init
from descend.errors import Diverged
from descend.experiments._heuristics import (add_data_arguments, figure, fit, judge, load, mlp, pct, report,
                                             save_figure, settings, single_thread)

DESCRIPTION = "sec. 8.4: activation/gradient scale through 20-layer tanh and ReLU MLPs under each init scheme"

CLAIM = ("The scale of the initial weights decides whether a deep network can learn: with the U(-1/sqrt(m), "
         "1/sqrt(m)) heuristic the signal vanishes through 20 tanh layers, while scale-preserving schemes "
         "(normalized initialization eq. 8.23 with the nonlinearity's gain, He, orthogonal, LSUV) keep activations "
         "and gradients through all layers and learn (Deep Learning sec. 8.4).")
PRESERVING = ("normalized + gain", "He", "orthogonal + gain", "LSUV")

BUDGETS = {
    "cpu": {"train_limit": 10_000, "eval_limit": 2_000, "epochs": 1, "width": 100, "stats_batch": 256},
    "full": {"train_limit": None, "eval_limit": None, "epochs": 1, "width": 256, "stats_batch": 1000},
}
DEPTH = 20
# (label, scheme, gain): gain None = apply_init's default for the nonlinearity.
SCHEMES = [
    ("torch default", "default", None),
    ("uniform 1/sqrt(m)", "uniform", 1.0),
    ("normalized (8.23)", "normalized", 1.0),
    ("normalized + gain", "normalized", None),
    ("LeCun", "lecun", None),
    ("He", "he", None),
    ("orthogonal + gain", "orthogonal", None),
    ("sparse k=15", "sparse", None),
    ("LSUV", "lsuv", None),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser)
    parser.add_argument("--lr", type=float, default=0.01, help="SGD learning rate (momentum 0.9)")
    parser.add_argument("--depth", type=int, default=DEPTH, help="hidden layers")
    parser.add_argument("--width", type=int, help="units per hidden layer (default: set by --budget)")


def layer_statistics(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor) -> dict[str, list[float]]:
    """Std of each hidden layer's activations h_l and of dL/dh_l on one batch."""
    hidden: list[torch.Tensor] = []
    h = x
    for layer in model:
        h = layer(h)
        if isinstance(layer, (nn.Tanh, nn.ReLU, nn.Sigmoid)):
            h.retain_grad()
            hidden.append(h)
    F.cross_entropy(h, y).backward()
    model.zero_grad(set_to_none=True)
    return {"activation_std": [float(t.detach().std()) for t in hidden],
            "gradient_std": [float(t.grad.std()) if t.grad is not None else 0.0 for t in hidden]}


def verdict(results: dict) -> tuple[str, str]:
    """Three checks: in the tanh net the U(-1/sqrt(m), 1/sqrt(m)) heuristic's activations shrink
    by more than 100x from the first to the last hidden layer; every scale-preserving scheme keeps
    the ratio within 10x either way in both nets; and after training, each preserving scheme's
    validation accuracy in the tanh net beats the vanishing one's by more than 10 points."""
    runs = {(r["activation"], r["scheme"]): r for r in results["runs"]}
    ratio = lambda r: r["activation_std"][-1] / max(r["activation_std"][0], 1e-30)  # noqa: E731
    vanishing = runs[("tanh", "uniform 1/sqrt(m)")]
    kept = [ratio(runs[(a, s)]) for a in ("tanh", "relu") for s in PRESERVING]
    learned = [runs[("tanh", s)]["val_accuracy"] or 0.0 for s in PRESERVING]
    baseline = vanishing["val_accuracy"] or 0.0
    checks = [ratio(vanishing) < 1e-2, all(0.1 < k < 10 for k in kept), min(learned) > baseline + 0.10]
    evidence = (f"tanh, uniform 1/sqrt(m): activation std L{len(vanishing['activation_std'])}/L1 = "
                f"{ratio(vanishing):.2g}, val acc {pct(baseline)}; scale-preserving schemes: ratio "
                f"{min(kept):.2g} to {max(kept):.2g}, tanh val acc {pct(min(learned))} to {pct(max(learned))}")
    return judge(checks), evidence


def run(args: argparse.Namespace) -> int:
    s = settings(args, BUDGETS)
    depth = getattr(args, "depth", DEPTH)
    if getattr(args, "width", None):
        s["width"] = args.width
    lr = getattr(args, "lr", 0.01)
    say = (lambda *a: None) if args.quiet else print
    splits = load(args, s["train_limit"], s["eval_limit"])
    features = math.prod(splits.input_shape)
    sizes = [features] + [s["width"]] * depth + [splits.num_classes]
    stats_x, stats_y = splits.train.x[: s["stats_batch"]], splits.train.y[: s["stats_batch"]]
    rows = [["units", "scheme", "gain", "act std L1", f"act std L{depth}", "grad std L1", f"grad std L{depth}",
             f"val acc after {s['epochs']} epoch(s)"]]
    runs: list[dict[str, Any]] = []
    with single_thread():
        for activation in ("tanh", "relu"):
            for label, scheme, gain in SCHEMES:
                torch.manual_seed(args.seed)
                model = mlp(sizes, activation)
                if scheme != "default":
                    init.apply_init(model, scheme, gain, nonlinearity=activation, data=stats_x)
                used_gain = gain if gain is not None else (init.default_gain(scheme, activation) if scheme != "default" else None)
                stats = layer_statistics(model, stats_x, stats_y)
                try:
                    history, seconds = fit(model, splits, epochs=s["epochs"], lr=lr, seed=args.seed)
                    accuracy = history[-1].get("val_accuracy")
                except Diverged:
                    accuracy, seconds = None, float("nan")
                entry = {"activation": activation, "scheme": label, "gain": used_gain, "val_accuracy": accuracy,
                         "seconds": seconds, **stats}
                runs.append(entry)
                act, grad = stats["activation_std"], stats["gradient_std"]
                shown = "-" if used_gain is None else f"{used_gain:.3g}" + (" x sqrt(2)" if scheme == "he" else "")
                rows.append([activation, label, shown, f"{act[0]:.3g}",
                             f"{act[-1]:.3g}", f"{grad[0]:.3g}", f"{grad[-1]:.3g}",
                             "diverged" if accuracy is None else pct(accuracy)])
                say(f"  {activation:5s} {label:20s} val {rows[-1][-1]}")
    _plot(runs, depth, args.run_dir / "init_depth.png")
    intro = [
        f"{depth}-layer MLPs of {s['width']} units, {splits.name or args.dataset} with "
        f"{len(splits.train)} training examples; statistics on one batch of {len(stats_x)}; "
        f"then {s['epochs']} epoch(s) of SGD (lr {lr}, momentum 0.9, batch 64).",
        "act std: standard deviation of the hidden activations of layer L; grad std: of dLoss/dh_L.",
    ]
    report(args, "init_depth", "init-depth: initialization schemes through 20 layers (sec. 8.4)", intro,
           [("Activation and gradient scale, accuracy", rows)], {"settings": s, "lr": lr, "runs": runs},
           images=["init_depth.png"], say=say, claim=CLAIM, verdict=verdict)
    return 0


def _plot(runs: list[dict], depth: int, path) -> None:
    fig = figure(12, 8, f"Signal through {depth} hidden layers at initialization, per scheme (one batch)")
    axes = fig.subplots(2, 2, sharex=True)
    layers = list(range(1, depth + 1))
    for row, activation in enumerate(("tanh", "relu")):
        for col, key in enumerate(("activation_std", "gradient_std")):
            ax = axes[row][col]
            for r in runs:
                if r["activation"] == activation:
                    values = [max(v, 1e-30) for v in r[key]]
                    ax.semilogy(layers, values, ".-", lw=1, label=r["scheme"])
            what = "activations h_l" if col == 0 else "gradients dL/dh_l"
            ax.set(title=f"{activation} net: std of the {what}", xlabel="hidden layer l",
                   ylabel=f"std of {what} (log scale)")
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.grid(True, which="both", alpha=0.3)
    axes[0][1].legend(fontsize=7, loc="best", title="initialization")
    save_figure(fig, path)
