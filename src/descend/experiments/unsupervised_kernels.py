"""Convolution kernels without supervised training on MNIST (Deep Learning sec. 9.9).

"There are three basic strategies for obtaining convolution kernels without supervised
training. One is to simply initialize them randomly. Another is to design them by hand
... Finally, one can learn the kernels with an unsupervised criterion" (k-means on
patches, Coates et al. 2011). "One can then extract the features for the entire
training set just once, essentially constructing a new training set for the last
layer. Learning the last layer is then typically a convex optimization problem."

For each family of fixed first-layer kernels (all 7x7, the same count):

    random   Gaussian filters, zero mean, unit norm
    edges    oriented derivatives of a Gaussian at two scales (hand-designed)
    gabor    Gabor functions, eq. 9.16, 8 orientations x 2 frequencies x 2 phases
    kmeans   k-means centroids of ZCA-whitened 7x7 patches, folded with the whitening

the features are convolution -> polarity-split rectification -> average pooling on a
4x4 grid (``descend.nn.ConvFeatures``), computed once; they are standardized with
training statistics, and only a softmax classifier on top is trained (the Trainer,
cross-entropy: a convex problem). "pixels" is the same classifier on raw pixels, the
no-convolution baseline. The table reports validation and test accuracy per family.

Budgets: ``cpu`` (default) 10,000 training images, 5 epochs, a few minutes on 2 cores;
``full`` the 50,000 / 10,000 / 10,000 split of Nielsen, 15 epochs.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import torch
from torch import nn

from descend.data import Splits, TensorPair, load_dataset
from descend.errors import ConfigError
from descend.io import atomic_write_json, atomic_write_text
from descend.nn.unsupervised import ConvFeatures, edge_kernels, gabor_bank, kmeans_kernels, random_kernels
from descend.train import Trainer
from descend.viz import save_filters

DESCRIPTION = "sec. 9.9: random, hand-designed (edge, Gabor) and k-means kernels, only the classifier trained; MNIST accuracy"

BUDGETS = {
    "cpu": {"limit": 10000, "eval_limit": 5000, "epochs": 5, "patches": 20000},
    "full": {"limit": None, "eval_limit": None, "epochs": 15, "patches": 100000},
}
FAMILIES = ("pixels", "random", "edges", "gabor", "kmeans")
CLAIM = ("Convolution kernels obtained without supervised training - random, designed by hand (edges, Gabor) "
         "or learned by k-means on patches - give features on which training only the last layer, a convex "
         "problem, works well; random filters often work surprisingly well (Deep Learning sec. 9.9). Here: every "
         "family beats the same classifier on raw pixels.")
MARGIN = 0.01  # test accuracy a kernel family must gain over raw pixels


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kernels", type=int, default=32, help="number of kernels per family")
    parser.add_argument("--size", type=int, default=7, help="kernel width")
    parser.add_argument("--grid", type=int, default=4, help="pooling grid (grid x grid regions)")
    parser.add_argument("--epochs", type=int, help="classifier epochs (default: per budget)")
    parser.add_argument("--limit", type=int, help="training images (default: per budget)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of the classifier")
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))


def make_kernels(family: str, count: int, size: int, images: torch.Tensor, patches: int,
                 seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``count`` kernels (count, 1, size, size) and optional biases of one family (sec. 9.9)."""
    gen = torch.Generator().manual_seed(seed)
    if family == "random":
        return random_kernels(count, images.shape[1], size, gen), None
    if family == "edges":
        half = count // 2
        small = edge_kernels(size, half, sigma=size / 6.0)
        large = edge_kernels(size, count - half, sigma=size / 3.0)
        return torch.cat([small, large]), None
    if family == "gabor":
        per = max(1, count // 4)                  # orientations x 2 frequencies x 2 phases
        bank = gabor_bank(size, orientations=per, frequencies=(0.8, 1.6), phases=(0.0, math.pi / 2))
        return bank[:count], None
    if family == "kmeans":
        return kmeans_kernels(images, count, size, patches=patches, generator=gen)
    raise ConfigError(f"unknown kernel family {family!r}; use one of {', '.join(FAMILIES[1:])}")


def _standardize(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    mean, std = train.mean(dim=0), train.std(dim=0).clamp_min(1e-6)   # training statistics only
    return [(t - mean) / std for t in (train, *others)]


def run_family(family: str, splits: Splits, cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    pairs = [splits.train, splits.val, splits.test]
    kernels = None
    if family == "pixels":
        feats = [p.x.flatten(1) for p in pairs]
    else:
        kernels, bias = make_kernels(family, args.kernels, args.size, splits.train.x, cfg["patches"], args.seed)
        extractor = ConvFeatures(kernels, bias, grid=args.grid)
        feats = [extractor.extract(p.x) for p in pairs]               # once per data set
    feats = _standardize(*feats)
    seconds_features = time.perf_counter() - start
    data = Splits(*(TensorPair(f, p.y) for f, p in zip(feats, pairs)))
    torch.manual_seed(args.seed)
    classifier = nn.Linear(feats[0].shape[1], 10)                      # softmax regression: convex
    optimizer = torch.optim.Adam(classifier.parameters(), lr=args.lr)
    trainer = Trainer(classifier, optimizer, data, epochs=cfg["epochs"], batch_size=128, quiet=True,
                      checkpoint=False, seed=args.seed)
    history = trainer.fit()
    last = history[-1]
    result = {
        "family": family,
        "features": feats[0].shape[1],
        "val_accuracy": last.get("val_accuracy"),
        "test_accuracy": last.get("test_accuracy"),
        "train_loss": last["train_loss"],
        "seconds_features": seconds_features,
        "seconds_total": time.perf_counter() - start,
    }
    if kernels is not None:
        save_filters(kernels, args.run_dir / f"kernels_{family}.png", title=f"{family} kernels")
    return result


def run(args: argparse.Namespace) -> int:
    cfg = dict(BUDGETS[args.budget])
    if args.epochs is not None:
        cfg["epochs"] = args.epochs
    if args.limit is not None:
        cfg["limit"] = args.limit
    say = (lambda *a: None) if args.quiet else print
    splits = load_dataset("mnist", split="nndl", data_dir=args.data_dir, limit=cfg["limit"],
                          eval_limit=cfg["eval_limit"])
    say(f"unsupervised-kernels: {len(splits.train)} training images, {cfg['epochs']} classifier epochs")
    rows = []
    for family in args.families:
        row = run_family(family, splits, cfg, args)
        rows.append(row)
        say(f"  {family:7s} val {row['val_accuracy']:.4f}  test {row['test_accuracy']:.4f}  "
            f"({row['features']} features, {row['seconds_total']:.0f} s)")
    header = "| kernels | features | val accuracy | test accuracy | seconds |"
    lines = [f"# unsupervised-kernels ({args.budget} budget, seed {args.seed})", "",
             f"{len(splits.train)} training images; {args.kernels} kernels of {args.size}x{args.size}; "
             f"features pooled on a {args.grid}x{args.grid} grid; only a softmax classifier is trained "
             f"({cfg['epochs']} epochs of Adam).", "", header, "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['family']} | {r['features']} | {r['val_accuracy']:.4f} | {r['test_accuracy']:.4f} | "
                     f"{r['seconds_total']:.0f} |")
    table = "\n".join(lines[4:])
    say("\n" + table)
    results = {"budget": args.budget, "seed": args.seed, "settings": cfg, "kernels": args.kernels, "size": args.size,
               "grid": args.grid, "rows": rows}
    _plot_accuracy(rows, len(splits.train), args.run_dir / "accuracy.png")
    status, evidence = verdict(results)
    results.update(claim=CLAIM, verdict=status, verdict_evidence=evidence)
    say(f"claim: {CLAIM}")
    say(f"verdict: {status} - {evidence}")
    lines += ["", "![test accuracy per kernel family](accuracy.png)", "", f"Claim: {CLAIM}", "",
              f"Verdict: {status} - {evidence}"]
    atomic_write_json(args.run_dir / "results.json", results)
    atomic_write_text(args.run_dir / "results.md", "\n".join(lines) + "\n")
    return 0


def verdict(results: dict) -> tuple[str, str]:
    """Reproduced when every kernel family run beats raw pixels by ``MARGIN`` in test accuracy,
    partly when some do; without a "pixels" row there is nothing to compare with."""
    acc = {r["family"]: r["test_accuracy"] for r in results["rows"]}
    families = [f for f in acc if f != "pixels"]
    if "pixels" not in acc or not families:
        return "not reproduced", "needs the pixels baseline and at least one kernel family (--families)"
    better = [f for f in families if acc[f] >= acc["pixels"] + MARGIN]
    evidence = (f"test accuracy: pixels {100 * acc['pixels']:.2f}%, "
                + ", ".join(f"{f} {100 * acc[f]:.2f}%" for f in families)
                + f"; {len(better)}/{len(families)} families beat pixels by >= {100 * MARGIN:g} point")
    if len(better) == len(families):
        return "reproduced", evidence
    return ("partly reproduced" if better else "not reproduced"), evidence


def _plot_accuracy(rows: list[dict], train_size: int, path) -> None:
    """Test accuracy of the softmax classifier on each family's features, pixels as the baseline."""
    from matplotlib.patches import Patch

    from descend.plots import figure, save

    fig = figure(6.5, 3.8)
    ax = fig.subplots()
    names = [r["family"] for r in rows]
    acc = [100 * r["test_accuracy"] for r in rows]
    colors = ["tab:gray" if n == "pixels" else "tab:blue" for n in names]
    bars = ax.bar(names, acc, color=colors)
    ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set_ylim(max(0.0, min(acc) - 5), 100)
    ax.set(xlabel="first-layer kernels (fixed, not trained)", ylabel="test accuracy (%)",
           title=f"MNIST, softmax classifier only, {train_size:,} training images")
    ax.legend(handles=[Patch(color="tab:gray", label="raw pixels (no convolution)"),
                       Patch(color="tab:blue", label="conv -> rectify -> pool features")], loc="upper left", fontsize=8)
    save(fig, path)
