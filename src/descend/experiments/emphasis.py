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
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import torch

from descend.data import Splits, TensorPair
from descend.experiments._heuristics import add_data_arguments, fit, load, mlp, pct, report, settings, single_thread
from descend.train import Trainer
from descend.train.curriculum import ClassBalanced, Emphasis

DESCRIPTION = "CS189: sample by loss / misclassification / rare class vs uniform sampling, same budget"

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


def run(args: argparse.Namespace) -> int:
    s = settings(args, BUDGETS)
    if getattr(args, "seeds", None):
        s["seeds"] = args.seeds
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
    report(args, "emphasis", "emphasis: emphasizing schemes vs uniform sampling (CS189)", intro,
           [(f"1. All of the {len(splits.train)} training examples", rows1),
            (f"2. Rare classes (digits 5-9 at {100 * s['rare_share']:.0f}%)", rows2)],
           {"settings": s, "lr": lr, "floor": floor, "class_counts": counts, "part1": part1, "part2": part2}, say=say)
    return 0
