"""Emphasizing schemes against uniform sampling on the same budget (CS189 heuristics).

CS189: "Neural networks learn the most redundant examples quickly, and the most rare
examples slowly. So we try to emphasize the uncommon examples. Present examples from
rare classes more often ... Same for misclassified examples. [Be forewarned that
emphasizing schemes can backfire if you have really bad outliers.]"

1. MNIST: an MLP (784-100-10, ReLU) trained with uniform shuffling, or with examples
   drawn in proportion to their current loss, or to being misclassified (weights
   refreshed with the current model every epoch, floor 0.2 of the mean weight).
2. Rare classes: the same net on a training set where the digits 5-9 keep only 5% of
   their examples; uniform sampling against class-balanced sampling (each class equally
   often) and misclassification emphasis, judged on the balanced validation set, overall
   and on the rare digits.

Every run has the same number of epochs and of examples per epoch (so of SGD steps);
the emphasis runs pay one extra forward pass over the training set per epoch (their
refresh), which the time column includes.

Writes ``emphasis.png`` (part 1: validation accuracy per epoch; part 2: validation
accuracy per digit), ``emphasis.json`` and ``emphasis.md``.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import torch

from descend.data import Splits, TensorPair
from descend.errors import ConfigError
from descend.experiments._heuristics import (add_data_arguments, bars, figure, fit, load, mlp, pct, report,
                                             save_figure, settings, single_thread)
from descend.train import Trainer
from descend.train.curriculum import ClassBalanced, Emphasis

DESCRIPTION = "CS189: sample by loss / misclassification / rare class vs uniform sampling, same budget"

CLAIM = ("Networks learn the most redundant examples quickly and the most rare ones slowly, so emphasize the "
         "uncommon examples: presenting examples from rare classes more often raises the accuracy on those classes "
         "(CS189, heuristics for faster training: emphasizing schemes).")
MARGIN = 0.02  # two percentage points of accuracy on the rare digits

BUDGETS = {
    "cpu": {"train_limit": 10_000, "eval_limit": 2_000, "epochs": 4, "seeds": 2, "rare_share": 0.05},
    "full": {"train_limit": None, "eval_limit": None, "epochs": 10, "seeds": 3, "rare_share": 0.05},
}
RARE = range(5, 10)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser)
    parser.add_argument("--lr", type=float, default=0.01, help="SGD learning rate (momentum 0.9)")
    parser.add_argument("--floor", type=float, default=0.2, help="emphasis floor (relative to the mean weight)")
    parser.add_argument("--seeds", type=int, help="runs per strategy (default: set by --budget)")
    parser.add_argument("--rare-share", type=float, help="share of digits 5-9 kept in part 2 (default: 0.05)")


def imbalanced(train: TensorPair, share: float, seed: int) -> TensorPair:
    """Keep every example of digits 0-4 and the first ``share`` of each of 5-9 (in a seeded order)."""
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    x, y = train.x[order], train.y[order]
    keep = torch.ones(len(y), dtype=torch.bool)
    for c in RARE:
        idx = torch.nonzero(y == c).flatten()
        keep[idx[max(1, int(share * len(idx))):]] = False
    return TensorPair(x[keep], y[keep])


def per_class_accuracy(model, pair: TensorPair, classes: int) -> list[float]:
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.0), (pair,), quiet=True)
    predictions = trainer.predict(pair.x).argmax(1)
    return [float((predictions[pair.y == c] == c).double().mean()) if (pair.y == c).any() else float("nan")
            for c in range(classes)]


def _compare(splits: Splits, samplers: dict[str, Any], s: dict, lr: float, seed0: int, say) -> dict[str, list[dict]]:
    sizes = [int(torch.tensor(splits.input_shape).prod()), 100, splits.num_classes]
    out: dict[str, list[dict]] = {}
    for name, make in samplers.items():
        out[name] = []
        for k in range(s["seeds"]):
            sampler = make()
            callbacks = [sampler] if isinstance(sampler, Emphasis) else []
            torch.manual_seed(seed0 + k)
            model = mlp(sizes)
            history, seconds = fit(model, splits, epochs=s["epochs"], lr=lr, seed=seed0 + k, sampler=sampler,
                                   callbacks=callbacks)
            per_class = per_class_accuracy(model, splits.val, splits.num_classes)
            out[name].append({"seed": seed0 + k, "seconds": seconds, "history": history, "val_per_class": per_class})
            say(f"  {name:28s} seed {seed0 + k}: val {pct(history[-1].get('val_accuracy'))}")
    return out


def rare_accuracy(runs: list[dict]) -> tuple[float, float]:
    """Mean validation accuracy on the rare digits 5-9 and on all digits, over seeds."""
    rare = statistics.mean(statistics.mean(r["val_per_class"][c] for c in RARE) for r in runs)
    return rare, statistics.mean(r["history"][-1]["val_accuracy"] for r in runs)


def verdict(results: dict) -> tuple[str, str]:
    """Class-balanced sampling (rare classes presented more often) beats uniform sampling on the
    rare digits by more than ``MARGIN`` (reproduced when the overall accuracy does not drop by
    more than that either; partly reproduced when it does)."""
    (rare_u, all_u), (rare_b, all_b) = (rare_accuracy(results["part2"][k]) for k in ("uniform", "class-balanced"))
    rare_m, _ = rare_accuracy(results["part2"]["emphasis: misclassified"])
    helps, costs = rare_b > rare_u + MARGIN, all_b < all_u - MARGIN
    status = "not reproduced" if not helps else "partly reproduced" if costs else "reproduced"
    evidence = (f"rare digits 5-9, val acc: uniform {pct(rare_u)}, class-balanced {pct(rare_b)}, misclassified "
                f"emphasis {pct(rare_m)}; all digits: uniform {pct(all_u)}, class-balanced {pct(all_b)}")
    return status, evidence


def _plot(part1: dict[str, list[dict]], part2: dict[str, list[dict]], share: float, path) -> None:
    mean = statistics.mean
    fig = figure(12, 4.2, "Emphasizing schemes vs uniform sampling (mean over seeds)")
    curves, per_class = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.4]})
    for name, runs in part1.items():
        epochs = [h["epoch"] for h in runs[0]["history"]]
        curves.plot(epochs, [100 * mean(r["history"][i]["val_accuracy"] for r in runs) for i in range(len(epochs))],
                    marker="o", ms=4, label=name)
    curves.set(xlabel="epoch", ylabel="validation accuracy (%)", title="1. all training examples")
    curves.xaxis.get_major_locator().set_params(integer=True)
    curves.grid(alpha=0.3)
    curves.legend(fontsize=8, title="sampling")
    classes = len(next(iter(part2.values()))[0]["val_per_class"])
    bars(per_class, [f"{c}{' (rare)' if c in RARE else ''}" for c in range(classes)],
         {name: [100 * mean(r["val_per_class"][c] for r in runs) for c in range(classes)]
          for name, runs in part2.items()},
         "validation accuracy (%)", f"2. digits 5-9 kept at {100 * share:g}%: accuracy per digit")
    per_class.set_xlabel("digit")
    save_figure(fig, path)


def run(args: argparse.Namespace) -> int:
    s = settings(args, BUDGETS)
    if getattr(args, "seeds", None):
        s["seeds"] = args.seeds
    if getattr(args, "rare_share", None) is not None:
        if not 0 < args.rare_share <= 1:
            raise ConfigError(f"--rare-share must be in (0, 1], got {args.rare_share}")
        s["rare_share"] = args.rare_share
    lr, floor = getattr(args, "lr", 0.01), getattr(args, "floor", 0.2)
    say = (lambda *a: None) if args.quiet else print
    splits = load(args, s["train_limit"], s["eval_limit"])
    mean = statistics.mean
    with single_thread():
        part1 = _compare(splits, {
            "uniform": lambda: None,
            "emphasis: loss": lambda: Emphasis("loss", floor=floor),
            "emphasis: misclassified": lambda: Emphasis("misclassified", floor=floor),
        }, s, lr, args.seed, say)
        rare = Splits(imbalanced(splits.train, s["rare_share"], args.seed), splits.val, splits.test, splits.classes)
        part2 = _compare(rare, {
            "uniform": lambda: None,
            "class-balanced": lambda: ClassBalanced(1.0),
            "emphasis: misclassified": lambda: Emphasis("misclassified", floor=floor),
        }, s, lr, args.seed, say)
    rows1 = [["sampling", "val acc epoch 1", f"val acc epoch {s['epochs']}", f"test acc epoch {s['epochs']}",
              "train s/run"]]
    for name, runs in part1.items():
        rows1.append([name, pct(mean(r["history"][0]["val_accuracy"] for r in runs)),
                      pct(mean(r["history"][-1]["val_accuracy"] for r in runs)),
                      pct(mean(r["history"][-1]["test_accuracy"] for r in runs)),
                      f"{mean(r['seconds'] for r in runs):.1f}"])
    counts = torch.bincount(rare.train.y, minlength=splits.num_classes).tolist()
    rows2 = [["sampling", "val acc (all)", "val acc digits 0-4", "val acc digits 5-9 (rare)", "train s/run"]]
    for name, runs in part2.items():
        common = mean(mean(r["val_per_class"][c] for c in range(5)) for r in runs)
        rare_acc = mean(mean(r["val_per_class"][c] for c in RARE) for r in runs)
        rows2.append([name, pct(mean(r["history"][-1]["val_accuracy"] for r in runs)), pct(common), pct(rare_acc),
                      f"{mean(r['seconds'] for r in runs):.1f}"])
    intro = [
        f"MLP 784-100-10 (ReLU), SGD (lr {lr}, momentum 0.9, batch 64), {s['epochs']} epochs, {s['seeds']} seed(s), "
        f"means over seeds; emphasis floor {floor}, weights refreshed every epoch from epoch 2.",
        f"Part 2 training set: {len(rare.train)} examples, per class {counts}.",
    ]
    _plot(part1, part2, s["rare_share"], args.run_dir / "emphasis.png")
    report(args, "emphasis", "emphasis: emphasizing schemes vs uniform sampling (CS189)", intro,
           [(f"1. All of the {len(splits.train)} training examples", rows1),
            (f"2. Rare classes (digits 5-9 at {100 * s['rare_share']:g}%)", rows2)],
           {"settings": s, "lr": lr, "floor": floor, "class_counts": counts, "part1": part1, "part2": part2},
           images=["emphasis.png"], say=say, claim=CLAIM, verdict=verdict)
    return 0
