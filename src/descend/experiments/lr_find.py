"""Choosing the learning rate by a short validation sweep (Deep Learning sec. 8.3.1, 8.5.4).

"The learning rate may be chosen by trial and error, but it is usually best to choose it
by monitoring learning curves that plot the objective function as a function of time"
(sec. 8.3.1), and validation error is the arbiter of such choices (sec. 8.4 treats the
initial scale the same way). The heuristic: train the model briefly (one epoch on part of the data) at learning rates
spaced evenly on a log scale, and keep the one with the best validation score (larger
rates diverge, smaller ones crawl). :func:`validation_sweep` does that for any model
factory; ``descend experiment lr-find`` runs it for an MLP on MNIST, then checks the
choice by training for longer with the chosen rate and with rates 10x smaller and 10x
larger, on the same budget.

Writes ``lr_find.png`` (validation loss and accuracy against the learning rate, and the
validation accuracy per epoch of the longer runs), ``lr_find.json`` and ``lr_find.md``.
"""

from __future__ import annotations

import argparse
import math
from typing import Any, Callable, Sequence

import torch
from torch import nn

from descend.data import Splits
from descend.errors import ConfigError, Diverged
from descend.experiments._heuristics import (add_data_arguments, figure, fit, judge, load, mlp, pct, report,
                                             save_figure, settings, single_thread)

DESCRIPTION = "sec. 8.3.1: choose the learning rate by a short validation sweep, then check the choice"

CLAIM = ("The learning rate may be chosen by trial and error, monitoring the objective and validation error "
         "(Deep Learning sec. 8.3.1): the rate a short validation sweep picks also trains best when training longer, "
         "better than rates 10x smaller (too slow) or 10x larger (unstable).")
MARGIN = 0.005  # half a percentage point of validation accuracy

BUDGETS = {
    "cpu": {"train_limit": 5_000, "eval_limit": 2_000, "sweep_epochs": 1, "epochs": 4, "points": 9},
    "full": {"train_limit": None, "eval_limit": None, "sweep_epochs": 1, "epochs": 15, "points": 13},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser)
    parser.add_argument("--min-lr", type=float, default=1e-3)
    parser.add_argument("--max-lr", type=float, default=10.0)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--metric", choices=("val_accuracy", "val_loss"), default="val_accuracy")


def log_grid(low: float, high: float, points: int) -> list[float]:
    """``points`` learning rates evenly spaced in log from ``low`` to ``high``."""
    if not (0 < low < high) or points < 2:
        raise ConfigError(f"a learning-rate sweep needs 0 < min < max and >= 2 points, got {low}, {high}, {points}")
    return [low * (high / low) ** (i / (points - 1)) for i in range(points)]


def validation_sweep(
    make_model: Callable[[], nn.Module],
    splits: Splits,
    lrs: Sequence[float],
    *,
    epochs: int = 1,
    metric: str = "val_accuracy",
    seed: int = 0,
    **fit_options: Any,
) -> tuple[float, list[dict[str, Any]]]:
    """Train ``make_model()`` for ``epochs`` at each learning rate; return the best rate by
    ``metric`` on the validation set (max for accuracies, min for losses) and every result.
    A run whose loss diverges counts as the worst."""
    if splits.val is None or not len(splits.val):
        raise ConfigError("a validation sweep needs a validation set (use the nndl split)")
    results = []
    for lr in lrs:
        torch.manual_seed(seed)
        try:
            history, seconds = fit(make_model(), splits, epochs=epochs, lr=lr, seed=seed, evaluate_test=False,
                                   **fit_options)
            last = history[-1]
            results.append({"lr": lr, "diverged": not math.isfinite(last.get("val_loss", math.nan)),
                            "val_loss": last.get("val_loss"), "val_accuracy": last.get("val_accuracy"),
                            "train_loss": last["train_loss"], "seconds": seconds})
        except Diverged:
            results.append({"lr": lr, "diverged": True, "val_loss": None, "val_accuracy": None, "train_loss": None})
    alive = [r for r in results if not r["diverged"]]
    if not alive:
        raise ConfigError(f"every learning rate of the sweep diverged ({', '.join(f'{lr:g}' for lr in lrs)}); "
                          "sweep smaller rates")
    sign = -1.0 if "loss" in metric else 1.0
    best = max(alive, key=lambda r: sign * r[metric])
    return best["lr"], results


def verdict(results: dict) -> tuple[str, str]:
    """The longer run at the chosen rate against the runs at 10x smaller and 10x larger rates:
    reproduced when it beats both (a diverged run loses), partly when it beats one; a tie
    within ``MARGIN`` counts as no win."""
    val = {c["factor"]: (None if c["history"] is None else c["history"][-1].get("val_accuracy"))
           for c in results["checks"]}
    chosen = val[1.0]
    if chosen is None:
        return "not reproduced", f"the chosen rate {results['chosen_lr']:.3g} diverged when training longer"
    wins = [other is None or chosen > other + MARGIN for other in (val[0.1], val[10.0])]
    shown = lambda v: "diverged" if v is None else pct(v)  # noqa: E731
    evidence = (f"final val acc at the chosen rate {results['chosen_lr']:.3g}: {pct(chosen)}; at 10x smaller "
                f"{shown(val[0.1])}, at 10x larger {shown(val[10.0])}")
    return judge(wins), evidence


def run(args: argparse.Namespace) -> int:
    s = settings(args, BUDGETS)
    say = (lambda *a: None) if args.quiet else print
    metric, momentum = getattr(args, "metric", "val_accuracy"), getattr(args, "momentum", 0.9)
    lrs = log_grid(getattr(args, "min_lr", 1e-3), getattr(args, "max_lr", 10.0), s["points"])
    splits = load(args, s["train_limit"], s["eval_limit"])
    sizes = [int(torch.tensor(splits.input_shape).prod()), 100, splits.num_classes]
    with single_thread():
        best, sweep = validation_sweep(lambda: mlp(sizes), splits, lrs, epochs=s["sweep_epochs"], metric=metric,
                                       seed=args.seed, momentum=momentum)
        checks = []
        for factor in (0.1, 1.0, 10.0):
            lr = best * factor
            torch.manual_seed(args.seed)
            try:
                history, seconds = fit(mlp(sizes), splits, epochs=s["epochs"], lr=lr, momentum=momentum, seed=args.seed)
                checks.append({"lr": lr, "factor": factor, "history": history, "seconds": seconds})
            except Diverged:
                checks.append({"lr": lr, "factor": factor, "history": None})
    rows1 = [["lr", "train loss", "val loss", "val acc", ""]]
    for r in sweep:
        mark = "<- chosen" if r["lr"] == best else ""
        rows1.append([f"{r['lr']:.3g}", "diverged" if r["diverged"] else f"{r['train_loss']:.4f}",
                      "-" if r["diverged"] else f"{r['val_loss']:.4f}", pct(r["val_accuracy"]), mark])
    rows2 = [["lr", "relative to chosen", f"val acc epoch {s['epochs']}", f"test acc epoch {s['epochs']}"]]
    for c in checks:
        h = c["history"]
        rows2.append([f"{c['lr']:.3g}", f"x{c['factor']:g}", "diverged" if h is None else pct(h[-1].get("val_accuracy")),
                      "diverged" if h is None else pct(h[-1].get("test_accuracy"))])
    say(f"chosen learning rate: {best:.3g} (best {metric} after {s['sweep_epochs']} epoch(s))")
    _plot(sweep, best, checks, args.run_dir / "lr_find.png")
    intro = [
        f"MLP {'-'.join(map(str, sizes))} (ReLU), SGD with momentum {momentum}, batch 64, {len(splits.train)} "
        f"training examples. Sweep: {s['points']} rates from {lrs[0]:g} to {lrs[-1]:g}, {s['sweep_epochs']} "
        f"epoch(s) each, chosen by {metric}. Check: {s['epochs']} epochs at the chosen rate and 10x either side.",
    ]
    report(args, "lr_find", "lr-find: the learning rate from a short validation sweep", intro,
           [("Sweep", rows1), ("Longer training at the chosen rate and 10x either side", rows2)],
           {"settings": s, "metric": metric, "chosen_lr": best, "sweep": sweep, "checks": checks},
           images=["lr_find.png"], say=say, claim=CLAIM, verdict=verdict)
    return 0


def _plot(sweep: list[dict], best: float, checks: list[dict], path) -> None:
    ok = [r for r in sweep if not r["diverged"]]
    fig = figure(14, 4.0, "lr-find: a short validation sweep, then longer training at the chosen rate")
    loss, acc, longer = fig.subplots(1, 3)
    loss.semilogx([r["lr"] for r in ok], [r["val_loss"] for r in ok], "o-", label="after the sweep's epoch(s)")
    loss.set(ylabel="validation loss (cross-entropy)", title="sweep: validation loss")
    acc.semilogx([r["lr"] for r in ok], [100 * r["val_accuracy"] for r in ok], "o-", label="after the sweep's epoch(s)")
    acc.set(ylabel="validation accuracy (%)", title="sweep: validation accuracy")
    for ax in (loss, acc):
        ax.axvline(best, color="r", ls="--", lw=1, label=f"chosen {best:.3g}")
        ax.set_xlabel("learning rate (log scale)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    for c in checks:
        if c["history"] is None:
            longer.plot([], [], label=f"x{c['factor']:g} ({c['lr']:.3g}): diverged")
            continue
        h = c["history"]
        longer.plot([e["epoch"] for e in h], [100 * e["val_accuracy"] for e in h], marker="o", ms=3,
                    label=f"x{c['factor']:g} ({c['lr']:.3g})", lw=2 if c["factor"] == 1.0 else 1)
    longer.set(xlabel="epoch", ylabel="validation accuracy (%)",
               title="longer training: chosen rate and 10x either side")
    longer.xaxis.get_major_locator().set_params(integer=True)
    longer.grid(alpha=0.3)
    longer.legend(fontsize=8, title="learning rate")
    save_figure(fig, path)
