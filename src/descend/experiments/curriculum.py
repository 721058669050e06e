"""Curriculum learning against plain shuffled training on the same budget (Deep Learning sec. 8.7.6).

Bengio et al. (2009) present easy examples first; Zaremba & Sutskever (2014) found "much
better results ... with a stochastic curriculum, in which a random mix of easy and
difficult examples is always presented ... With a deterministic curriculum, no
improvement over the baseline". On MNIST, with the difficulty of an example taken as
the loss of a linear softmax probe trained for one epoch (what a linear model finds hard),
an MLP (784-100-10, ReLU) is trained by:

* ``baseline``: a uniform random permutation each epoch;
* ``deterministic``: only the easiest 25% at epoch 1, growing linearly to all examples
  at the middle epoch (random order within the pool);
* ``deterministic, sorted``: the same pools, presented strictly easy-to-hard;
* ``stochastic``: every epoch a random mix, 10% hard examples at first, rising to the
  natural 50% (uniform sampling) at the middle epoch.

Every strategy sees the same number of examples per epoch and the same number of SGD
steps. The table reports mean validation accuracy after the first and the last epoch
over seeds, test accuracy and time. The probe's training is extra cost, listed apart.

Writes ``curriculum.png`` (validation accuracy per epoch of each strategy),
``curriculum.json`` and ``curriculum.md``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from descend.experiments._heuristics import (add_data_arguments, figure, fit, judge, load, mlp, pct, report,
                                             save_figure, settings, single_thread)
from descend.train.curriculum import DeterministicCurriculum, StochasticCurriculum, probe_scores

DESCRIPTION = "sec. 8.7.6: deterministic and stochastic curricula vs shuffled training, same budget"

CLAIM = ("A stochastic curriculum, a random mix of easy and difficult examples in which the share of difficult "
         "ones rises, gives better results than ordinary shuffled training, while a deterministic easy-to-hard "
         "curriculum brings no improvement over it (Deep Learning sec. 8.7.6, Zaremba & Sutskever 2014).")
MARGIN = 0.005  # half a percentage point of validation accuracy: closer than that is a tie

BUDGETS = {
    "cpu": {"train_limit": 10_000, "eval_limit": 2_000, "epochs": 4, "seeds": 2, "hidden": 100},
    "full": {"train_limit": None, "eval_limit": None, "epochs": 10, "seeds": 3, "hidden": 100},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser)
    parser.add_argument("--lr", type=float, default=0.01, help="SGD learning rate (momentum 0.9)")
    parser.add_argument("--seeds", type=int, help="runs per strategy (default: set by --budget)")


def strategies(scores: torch.Tensor, epochs: int) -> dict[str, Any]:
    ramp = max(1, epochs // 2)
    return {
        "baseline": None,
        "deterministic": DeterministicCurriculum(scores, start=0.25, ramp_epochs=ramp),
        "deterministic, sorted": DeterministicCurriculum(scores, start=0.25, ramp_epochs=ramp, order="sorted"),
        "stochastic": StochasticCurriculum(scores, easy_fraction=0.5, start_hard_share=0.1, ramp_epochs=ramp),
    }


def verdict(results: dict) -> tuple[str, str]:
    """Three checks on the final validation accuracies (means over seeds): the deterministic
    curricula are no better than the baseline, the stochastic one beats them, and it beats the
    baseline, each by more than ``MARGIN``."""
    acc = {name: r["val_last"] for name, r in results["summary"].items()}
    base, stochastic = acc["baseline"], acc["stochastic"]
    deterministic = max(acc["deterministic"], acc["deterministic, sorted"])
    checks = [deterministic <= base + MARGIN, stochastic > deterministic + MARGIN, stochastic > base + MARGIN]
    evidence = (f"final val acc: baseline {pct(base)}, deterministic {pct(acc['deterministic'])} "
                f"(sorted {pct(acc['deterministic, sorted'])}), stochastic {pct(stochastic)}; "
                f"deterministic no better than baseline: {'yes' if checks[0] else 'no'}, stochastic beats "
                f"deterministic: {'yes' if checks[1] else 'no'}, beats baseline: {'yes' if checks[2] else 'no'} "
                f"(margin {100 * MARGIN:g} points)")
    return judge(checks), evidence


def _plot(results: dict[str, list[dict]], path) -> None:
    fig = figure(7, 4.2, "Curricula vs shuffled training: validation accuracy (mean over seeds)")
    ax = fig.subplots()
    for name, runs in results.items():
        epochs = [h["epoch"] for h in runs[0]["history"]]
        mean = [100 * statistics.mean(r["history"][i].get("val_accuracy", 0.0) for r in runs)
                for i in range(len(epochs))]
        ax.plot(epochs, mean, marker="o", ms=4, label=name, ls="--" if name == "baseline" else "-")
    ax.set(xlabel="epoch", ylabel="validation accuracy (%)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(title="strategy")
    save_figure(fig, path)


def run(args: argparse.Namespace) -> int:
    s = settings(args, BUDGETS)
    if getattr(args, "seeds", None):
        s["seeds"] = args.seeds
    lr = getattr(args, "lr", 0.01)
    say = (lambda *a: None) if args.quiet else print
    splits = load(args, s["train_limit"], s["eval_limit"])
    sizes = [int(torch.tensor(splits.input_shape).prod()), s["hidden"], splits.num_classes]
    with single_thread():
        start = time.perf_counter()
        scores = probe_scores(splits.train, epochs=1, seed=args.seed)
        probe_seconds = time.perf_counter() - start
        results: dict[str, list[dict]] = {}
        for name, sampler in strategies(scores, s["epochs"]).items():
            results[name] = []
            for k in range(s["seeds"]):
                seed = args.seed + k
                torch.manual_seed(seed)
                history, seconds = fit(mlp(sizes), splits, epochs=s["epochs"], lr=lr, seed=seed, sampler=sampler)
                results[name].append({"seed": seed, "seconds": seconds, "history": history})
                say(f"  {name:22s} seed {seed}: val {pct(history[-1].get('val_accuracy'))}")
    rows = [["strategy", "val acc epoch 1", f"val acc epoch {s['epochs']}", "spread (max-min)",
             f"test acc epoch {s['epochs']}", "train s/run"]]
    summary = {}
    for name, runs in results.items():
        first = [r["history"][0].get("val_accuracy", 0.0) for r in runs]
        last = [r["history"][-1].get("val_accuracy", 0.0) for r in runs]
        test = [r["history"][-1].get("test_accuracy", 0.0) for r in runs]
        secs = [r["seconds"] for r in runs]
        summary[name] = {"val_first": statistics.mean(first), "val_last": statistics.mean(last),
                         "test_last": statistics.mean(test), "seconds": statistics.mean(secs)}
        rows.append([name, pct(statistics.mean(first)), pct(statistics.mean(last)), pct(max(last) - min(last)),
                     pct(statistics.mean(test)), f"{statistics.mean(secs):.1f}"])
    intro = [
        f"MLP {'-'.join(map(str, sizes))} (ReLU), {len(splits.train)} training examples, {s['epochs']} epochs of SGD "
        f"(lr {lr}, momentum 0.9, batch 64), {s['seeds']} seed(s) per strategy, means over seeds.",
        f"Difficulty = per-example loss of a linear softmax probe trained one epoch ({probe_seconds:.1f} s, "
        "not counted in the runs).",
    ]
    _plot(results, args.run_dir / "curriculum.png")
    report(args, "curriculum", "curriculum: easy-to-hard training vs the shuffled baseline (sec. 8.7.6)", intro,
           [("Curricula vs baseline, same number of steps", rows)],
           {"settings": s, "lr": lr, "probe_seconds": probe_seconds, "summary": summary, "runs": results},
           images=["curriculum.png"], say=say, claim=CLAIM, verdict=verdict)
    return 0
