"""Heuristics to avoid overfitting, on the same budget (CS189).

CS189: "l2 regularization, aka weight decay ... it's not clear whether penalizing the bias
terms is bad or good ... try both ways and use validation"; "Dropout emulates an ensemble
in one network. ... disable each hidden unit with probability 0.5, and ... input units
with a smaller probability"; "Fewer hidden units. [The number of hidden units is a
hyperparameter you can use to adjust the bias-variance tradeoff ...]"; and early stopping
(Deep Learning sec. 7.8), which keeps the weights of the best validation epoch.

An MLP (784-800-800-10, ReLU) is trained on a small part of MNIST, where it overfits,
with SGD + momentum for the same number of epochs:

* no regularization;
* dropout 0.5 on hidden units and 0.2 on inputs;
* L2 (weight decay) on all parameters, and on the weights only (biases spared, via
  ``descend.optim.param_groups``);
* fewer hidden units (784-100-10 and 784-25-10);
* early stopping (patience 3 epochs, best weights restored).

The table gives training, validation and test accuracy and the train-test gap.

Writes ``regularization.png`` (accuracies of each variant; validation accuracy per
epoch), ``regularization.json`` and ``regularization.md``.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from descend.experiments._heuristics import (add_data_arguments, bars, figure, fit, judge, load, mlp, pct, report,
                                             save_figure, settings, single_thread)
from descend.optim import param_groups
from descend.train import EarlyStopping, Trainer

DESCRIPTION = "CS189: dropout, L2 with/without biases, fewer hidden units, early stopping vs no regularization"

CLAIM = ("A network with too many hidden units for its training set overfits; l2 regularization (weight decay), "
         "dropout, fewer hidden units and early stopping reduce the overfitting: a smaller gap between training "
         "and test accuracy, and a test accuracy at least as good (CS189, heuristics to avoid overfitting; "
         "Deep Learning sec. 7.8).")
MARGIN = 0.01  # one percentage point

BUDGETS = {
    "cpu": {"train_limit": 1_000, "eval_limit": 2_000, "epochs": 30, "hidden": 800},
    "full": {"train_limit": 5_000, "eval_limit": None, "epochs": 60, "hidden": 800},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser)
    parser.add_argument("--lr", type=float, default=0.01, help="SGD learning rate (momentum 0.9)")
    parser.add_argument("--weight-decay", type=float, default=5e-3, help="L2 coefficient (torch's weight_decay)")


def verdict(results: dict) -> tuple[str, str]:
    """Each regularizer against none: does it narrow the train-test gap by more than ``MARGIN``
    without losing more than ``MARGIN`` of test accuracy? Reproduced when every one does,
    partly when some do."""
    runs = results["runs"]
    none = runs["none"]["accuracy"]
    gap0 = none["train"] - none["test"]
    helped, parts = [], []
    for name, r in runs.items():
        if name == "none":
            continue
        a = r["accuracy"]
        gap = a["train"] - a["test"]
        helped.append(gap < gap0 - MARGIN and a["test"] >= none["test"] - MARGIN)
        parts.append(f"{name}: gap {pct(gap)}, test {pct(a['test'])}")
    evidence = (f"{sum(helped)} of {len(helped)} regularizers narrow the train-test gap without losing test "
                f"accuracy. none: gap {pct(gap0)}, test {pct(none['test'])}; " + "; ".join(parts))
    return judge(helped), evidence


def _plot(runs: dict[str, dict], path) -> None:
    fig = figure(13, 4.4, "Regularizers vs none on a small training set (same epochs)")
    acc, curves = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.5, 1]})
    names = list(runs)
    bars(acc, names, {split: [100 * runs[n]["accuracy"][split] for n in names] for split in ("train", "val", "test")},
         "accuracy (%)", "final weights: training, validation and test accuracy")
    low = min(100 * r["accuracy"]["test"] for r in runs.values())
    acc.set_ylim(max(0.0, low - 10), 100.5)
    for name, r in runs.items():
        curves.plot([h["epoch"] for h in r["history"]], [100 * h["val_accuracy"] for h in r["history"]], lw=1.2,
                    label=name, ls="--" if name == "none" else "-")
    curves.set(xlabel="epoch", ylabel="validation accuracy (%)", title="validation accuracy per epoch")
    curves.grid(alpha=0.3)
    curves.legend(fontsize=7)
    save_figure(fig, path)


def run(args: argparse.Namespace) -> int:
    s = settings(args, BUDGETS)
    lr, wd = getattr(args, "lr", 0.01), getattr(args, "weight_decay", 5e-3)
    say = (lambda *a: None) if args.quiet else print
    splits = load(args, s["train_limit"], s["eval_limit"])
    features, classes, h = int(torch.tensor(splits.input_shape).prod()), splits.num_classes, s["hidden"]
    big = [features, h, h, classes]
    variants: dict[str, dict[str, Any]] = {
        "none": {"sizes": big},
        "dropout 0.5 hidden, 0.2 input": {"sizes": big, "dropout": 0.5, "input_dropout": 0.2},
        f"L2 {wd:g} on weights and biases": {"sizes": big, "wd": wd, "biases": True},
        f"L2 {wd:g} on weights only": {"sizes": big, "wd": wd, "biases": False},
        "fewer hidden units (100)": {"sizes": [features, 100, classes]},
        "fewer hidden units (25)": {"sizes": [features, 25, classes]},
        "early stopping (patience 3)": {"sizes": big, "early": 3},
    }
    rows = [["regularization", "epochs run", "train acc", "val acc", "test acc", "train - test"]]
    runs = {}
    with single_thread():
        for name, v in variants.items():
            torch.manual_seed(args.seed)
            model = mlp(v["sizes"], "relu", dropout=v.get("dropout", 0.0), input_dropout=v.get("input_dropout", 0.0))
            groups = param_groups(model, weight_decay=v.get("wd", 0.0), no_decay_on_bias=not v.get("biases", True))
            optimizer = torch.optim.SGD(groups, lr=lr, momentum=0.9)
            callbacks = [EarlyStopping("val_accuracy", patience=v["early"])] if "early" in v else []
            history, seconds = fit(model, splits, epochs=s["epochs"], lr=lr, optimizer=optimizer, seed=args.seed,
                                   callbacks=callbacks)
            evaluator = Trainer(model, optimizer, splits, quiet=True)
            acc = {k: evaluator.evaluate(getattr(splits, k))["accuracy"] for k in ("train", "val", "test")}
            rows.append([name, str(len(history)), pct(acc["train"]), pct(acc["val"]), pct(acc["test"]),
                         pct(acc["train"] - acc["test"])])
            runs[name] = {"accuracy": acc, "epochs": len(history), "seconds": seconds, "history": history}
            say(f"  {name:34s} test {pct(acc['test'])}")
    intro = [
        f"{len(splits.train)} training examples (small on purpose: the 784-{h}-{h}-10 net overfits), SGD (lr {lr}, "
        f"momentum 0.9, batch 64), {s['epochs']} epochs; accuracies of the final weights (early stopping: the best "
        "validation epoch's).",
    ]
    _plot(runs, args.run_dir / "regularization.png")
    report(args, "regularization", "regularization: dropout, L2 with/without biases, fewer units, early stopping",
           intro, [("Regularizers vs none, same budget", rows)], {"settings": s, "lr": lr, "weight_decay": wd,
                                                                 "runs": runs},
           images=["regularization.png"], say=say, claim=CLAIM, verdict=verdict)
    return 0
