"""The quadratic cost's learning slowdown on saturated sigmoid units (NNDL ch. 3).

With a sigmoid output a = sigma(z) and target t, the quadratic cost C = (a - t)^2 / 2 has
dC/dz = (a - t) sigma'(z): when the unit saturates (a near 0 or 1) sigma'(z) ~ 0 and it
learns slowly, however wrong it is. The cross-entropy C = -[t ln a + (1 - t) ln(1 - a)]
has dC/dz = a - t: "the larger the error, the faster the neuron will learn"
(``descend.losses``).

1. Nielsen's single neuron (NNDL ch. 3): input 1, target 0, gradient descent with
   eta = 0.15 from a mildly wrong start (w = 0.6, b = 0.9, a = 0.82) and from a saturated
   one (w = b = 2, a = 0.98), under each cost: the saturated start under the quadratic
   cost sits on a plateau for many epochs.
2. An MNIST MLP (784-30-10, sigmoid hidden and output units, as NNDL chs. 1-3) with
   saturating N(0, 1) initial weights (NNDL's "large weight initializer"), trained by SGD
   on the same budget with the quadratic cost, the sigmoid cross-entropy and the softmax
   log-likelihood.

Writes ``quadratic_cost.png`` (the neuron's cost curves), ``quadratic_cost_mnist.png`` (the
MLP's validation accuracy per epoch), ``results.json`` and ``results.md``.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from torch import nn

from descend.experiments._heuristics import add_data_arguments, fit, load, mlp, pct, report, settings, single_thread
from descend.losses import quadratic, sigmoid_cross_entropy, softmax_log_likelihood

DESCRIPTION = "NNDL ch. 3: quadratic cost learns slowly on saturated sigmoid units; cross-entropy does not"

BUDGETS = {
    "cpu": {"train_limit": 10_000, "eval_limit": 2_000, "epochs": 3, "neuron_epochs": 300},
    "full": {"train_limit": None, "eval_limit": None, "epochs": 10, "neuron_epochs": 300},
}
STARTS = {"a = 0.82 (w = 0.6, b = 0.9)": (0.6, 0.9), "saturated a = 0.98 (w = b = 2)": (2.0, 2.0)}
SATURATED = "saturated a = 0.98 (w = b = 2) / "
CLAIM = ("With sigmoid output units the quadratic cost learns slowly when a unit saturates, however wrong it "
         "is, because its gradient carries the factor sigma'(z); the cross-entropy's gradient is a - t, so the "
         "larger the error, the faster the neuron learns (Neural Networks and Deep Learning ch. 3).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser)
    parser.add_argument("--lr", type=float, default=0.5, help="SGD learning rate of part 2 (no momentum)")


def neuron(w: float, b: float, cost: str, epochs: int, eta: float = 0.15) -> list[float]:
    """Gradient descent on one sigmoid neuron with input 1 and target 0; the cost after each
    step. The costs are written from their definitions for t = 0: quadratic a^2 / 2,
    cross-entropy -ln(1 - a) (``descend.losses`` holds them for one-hot class targets)."""
    wb = torch.tensor([w, b], dtype=torch.float64, requires_grad=True)
    curve = []
    for _ in range(epochs):
        a = torch.sigmoid(wb[0] * 1.0 + wb[1])
        c = 0.5 * a**2 if cost == "quadratic" else -torch.log1p(-a)
        (g,) = torch.autograd.grad(c, wb)
        with torch.no_grad():
            wb -= eta * g
        curve.append(float(c.detach()))
    return curve


def run(args: argparse.Namespace) -> int:
    s = settings(args, BUDGETS)
    lr = getattr(args, "lr", 0.5)
    say = (lambda *a: None) if args.quiet else print
    results: dict[str, Any] = {"settings": s, "lr": lr, "neuron": {}}
    rows1 = [["start", "cost", "cost after 1 epoch", "after 30", "after 100", f"after {s['neuron_epochs']}",
              "epochs until output < 0.2"]]
    curves = {}
    for label, (w, b) in STARTS.items():
        for cost in ("quadratic", "cross-entropy"):
            curve = neuron(w, b, cost, s["neuron_epochs"])
            curves[(label, cost)] = curve
            # output a from the cost: quadratic c = a^2/2, cross-entropy c = -ln(1 - a)
            outputs = [(2 * c) ** 0.5 if cost == "quadratic" else 1 - torch.exp(torch.tensor(-c)).item() for c in curve]
            below = next((i + 1 for i, a in enumerate(outputs) if a < 0.2), None)
            rows1.append([label, cost, f"{curve[0]:.4f}", f"{curve[29]:.4f}", f"{curve[99]:.4f}", f"{curve[-1]:.4f}",
                          str(below) if below else f"> {s['neuron_epochs']}"])
            results["neuron"][f"{label} / {cost}"] = {"curve": curve, "epochs_to_output_below_0.2": below}
    splits = load(args, s["train_limit"], s["eval_limit"])
    features = int(torch.tensor(splits.input_shape).prod())
    rows2 = [["cost", "val acc epoch 1", f"val acc epoch {s['epochs']}", f"test acc epoch {s['epochs']}"]]
    with single_thread():
        for name, loss in (("quadratic (sigmoid outputs)", quadratic),
                           ("cross-entropy (sigmoid outputs)", sigmoid_cross_entropy),
                           ("log-likelihood (softmax outputs)", softmax_log_likelihood)):
            torch.manual_seed(args.seed)
            model = mlp([features, 30, splits.num_classes], "sigmoid")
            for m in model.modules():  # NNDL's large_weight_initializer: N(0, 1) weights and biases
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight)
                    nn.init.normal_(m.bias)
            history, _ = fit(model, splits, epochs=s["epochs"], lr=lr, momentum=0.0, batch_size=10, seed=args.seed,
                             loss=loss)
            rows2.append([name, pct(history[0].get("val_accuracy")), pct(history[-1].get("val_accuracy")),
                          pct(history[-1].get("test_accuracy"))])
            results.setdefault("mnist", {})[name] = history
            say(f"  {name}: val {rows2[-1][2]}")
    _plot(curves, args.run_dir / "quadratic_cost.png")
    _plot_mnist(results["mnist"], f"{features}-30-{splits.num_classes} sigmoid MLP, N(0, 1) weights, "
                f"{len(splits.train):,} training images", args.run_dir / "quadratic_cost_mnist.png")
    status, evidence = verdict(results)
    results.update(claim=CLAIM, verdict=status, verdict_evidence=evidence)
    intro = [
        "Part 1: one sigmoid neuron, input 1, target 0, gradient descent with eta = 0.15 (NNDL ch. 3).",
        f"Part 2: MLP 784-30-10 with sigmoid units and N(0, 1) initial weights, SGD (lr {lr}, batch 10, "
        f"no momentum), {len(splits.train)} training examples, {s['epochs']} epochs.",
    ]
    intro += ["", f"Claim: {CLAIM}", "", f"Verdict: {status} - {evidence}"]
    report(args, "results", "quadratic-cost: the learning slowdown of the quadratic cost (NNDL ch. 3)", intro,
           [("1. A single neuron", rows1), ("2. MNIST MLP with saturating initial weights", rows2)], results,
           images=["quadratic_cost.png", "quadratic_cost_mnist.png"], say=say)
    say(f"claim: {CLAIM}")
    say(f"verdict: {status} - {evidence}")
    return 0


def verdict(results: dict) -> tuple[str, str]:
    """Part 1 decides: from the saturated start the quadratic cost must take at least 3 times the
    steps of the cross-entropy to bring the output below 0.2. Reproduced when, in part 2 too, the
    quadratic cost's network is behind both cross-entropy networks after the first epoch."""
    steps = {cost: results["neuron"][SATURATED + cost]["epochs_to_output_below_0.2"]
             for cost in ("quadratic", "cross-entropy")}
    horizon = len(results["neuron"][SATURATED + "quadratic"]["curve"])
    quad, ce = (horizon + 1 if s is None else s for s in (steps["quadratic"], steps["cross-entropy"]))
    slow = quad >= 3 * ce
    shown = {c: (f"> {horizon}" if s is None else str(s)) for c, s in steps.items()}
    evidence = (f"saturated neuron: output below 0.2 after {shown['quadratic']} steps (quadratic) vs "
                f"{shown['cross-entropy']} (cross-entropy)")
    mnist = results.get("mnist", {})
    first = {name.split(" (")[0]: h[0].get("val_accuracy") for name, h in mnist.items() if h}
    behind = None
    if {"quadratic", "cross-entropy", "log-likelihood"} <= set(first) and None not in first.values():
        behind = first["quadratic"] < min(first["cross-entropy"], first["log-likelihood"])
        evidence += ("; MNIST val accuracy after epoch 1: "
                     + ", ".join(f"{name} {100 * acc:.2f}%" for name, acc in first.items()))
    if slow:
        return ("reproduced" if behind else "partly reproduced"), evidence
    return ("partly reproduced" if behind else "not reproduced"), evidence


def _plot_mnist(mnist: dict, title: str, path) -> None:
    """Validation accuracy per epoch of the MLP under each cost (part 2)."""
    from matplotlib.ticker import MaxNLocator

    from descend.plots import figure, save

    fig = figure(6.5, 3.8)
    ax = fig.subplots()
    for name, history in mnist.items():
        epochs = [h["epoch"] for h in history]
        ax.plot(epochs, [100 * h.get("val_accuracy", float("nan")) for h in history], "o-", label=name)
    ax.set(xlabel="epoch", ylabel="validation accuracy (%)", title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, path)


def _plot(curves: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from descend.io import atomic_path

    fig, axes = plt.subplots(1, len(STARTS), figsize=(10, 3.8))
    for ax, label in zip(axes, STARTS):
        for cost in ("quadratic", "cross-entropy"):
            ax.plot(curves[(label, cost)], label=cost)
        ax.set_title(f"start {label}", fontsize=10)
        ax.set_xlabel("epoch (one gradient step, eta = 0.15)")
        ax.set_ylabel("cost (each its own)")
        ax.legend()
    fig.suptitle("one sigmoid neuron, input 1, target 0: cost against epoch (NNDL ch. 3)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
