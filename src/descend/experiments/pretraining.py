"""Supervised pretraining and auxiliary heads against direct training (Deep Learning sec. 8.7.4-8.7.5).

Three comparisons on MNIST, each on the same number of training epochs as its baseline:

1. Greedy supervised pretraining (Bengio et al. 2007, fig. 8.7) of a deep sigmoid MLP
   (5 hidden layers of 100): one epoch per added layer (each with a fresh output layer),
   then joint fine-tuning, against training the whole net directly for as many epochs;
   and the same net with auxiliary softmax heads on hidden layers 2 and 4 (weight 0.3,
   decaying to 0 at the middle of training; GoogLeNet / deeply-supervised nets).
2. FitNets (Romero et al. 2015): a thin, deep student (8 tanh layers of 32) learns first to
   predict, through a linear regressor, the hidden layer of a wide, shallow teacher
   (784-500-10 ReLU, trained beforehand; its training is reported apart), then the task;
   against the student trained on the task directly for the same total number of epochs.
3. Transfer (Yosinski et al. 2014): a network trained on the digits 0-4 gives its first
   hidden layer (frozen, or fine-tuned) to a network that learns the digits 5-9 from only
   a few hundred examples, against the same network trained from scratch.

The tables report validation accuracy (test accuracy of the final networks too).

Writes ``pretraining.png`` (validation accuracy per epoch of each comparison),
``pretraining.json`` and ``pretraining.md``.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from torch import nn

from descend.data import Splits, TensorPair
from descend.experiments._heuristics import (add_data_arguments, figure, fit, judge, load, mlp, pct, report,
                                             save_figure, settings, single_thread)
from descend.train import Trainer
from descend.train.pretraining import AuxiliaryHeads, fitnets, greedy_supervised_pretraining, transfer

DESCRIPTION = "sec. 8.7.4-8.7.5: greedy layer-wise pretraining, FitNets hints, auxiliary heads, transfer vs direct training"

CLAIM = ("Breaking a hard supervised problem into simpler ones helps: greedy supervised pretraining of a deep net "
         "one layer at a time (Bengio et al. 2007, fig. 8.7), hints from a wide shallow teacher for a thin deep "
         "student (FitNets) and initialization from a related task (transfer) each train better than direct "
         "training on the same budget (Deep Learning sec. 8.7.4).")
MARGIN = 0.01  # one percentage point of final validation accuracy

BUDGETS = {
    "cpu": {"train_limit": 10_000, "eval_limit": 2_000, "epochs": 8, "transfer_examples": 300},
    "full": {"train_limit": None, "eval_limit": None, "epochs": 15, "transfer_examples": 1000},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser)
    parser.add_argument("--lr", type=float, default=0.05, help="SGD learning rate (momentum 0.9) of parts 2 and 3")
    parser.add_argument("--sigmoid-lr", type=float, default=0.2,
                        help="learning rate of the sigmoid nets of part 1 (sigma' <= 1/4 needs larger steps)")


def _sgd(lr: float):
    return lambda params: torch.optim.SGD(params, lr=lr, momentum=0.9)


def _evaluate(model: nn.Module, splits: Splits) -> dict[str, float]:
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.0), splits, quiet=True)
    return {name: trainer.evaluate(getattr(splits, name))["accuracy"] for name in ("val", "test")
            if getattr(splits, name) is not None}


def _subset(pair: TensorPair | None, classes: range, limit: int | None = None) -> TensorPair | None:
    if pair is None:
        return None
    keep = (pair.y >= classes.start) & (pair.y < classes.stop)
    out = TensorPair(pair.x[keep], pair.y[keep] - classes.start)
    return out if limit is None else out[:limit]


def verdict(results: dict) -> tuple[str, str]:
    """Three comparisons by final validation accuracy, each won by more than ``MARGIN``: greedy
    pretraining vs direct training, the FitNets student vs the student trained directly, the
    better of the transferred networks vs the one trained from scratch."""
    val = lambda part, name: results[part][name]["final"]["val"]  # noqa: E731
    greedy, direct = val("greedy", "greedy"), val("greedy", "direct")
    hints, plain = val("fitnets", "FitNets hints"), val("fitnets", "direct")
    moved = max(val("transfer", "transfer layer 1, frozen"), val("transfer", "transfer layer 1, fine-tuned"))
    scratch = val("transfer", "from scratch")
    checks = [greedy > direct + MARGIN, hints > plain + MARGIN, moved > scratch + MARGIN]
    evidence = (f"final val acc: greedy {pct(greedy)} vs direct {pct(direct)}; FitNets student {pct(hints)} vs "
                f"direct {pct(plain)}; transfer {pct(moved)} vs from scratch {pct(scratch)} "
                f"({sum(checks)} of 3 better by more than {100 * MARGIN:g} point)")
    return judge(checks), evidence


def _plot(results: dict[str, Any], path) -> None:
    fig = figure(14, 4.2, "Pretraining vs direct training: validation accuracy per epoch")
    axes = fig.subplots(1, 3)
    for ax, part, title in zip(axes, ("greedy", "fitnets", "transfer"),
                               ("1. deep sigmoid MLP", "2. thin deep student (FitNets)", "3. digits 5-9, few examples")):
        for name, r in results[part].items():
            history = r["history"]
            ax.plot(range(1, len(history) + 1), [100 * h.get("val_accuracy", float("nan")) for h in history],
                    marker="o", ms=3, label=name, ls="--" if name in ("direct", "from scratch") else "-")
        ax.set(xlabel="epoch", ylabel="validation accuracy (%)", title=title)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, path)


def run(args: argparse.Namespace) -> int:
    s = settings(args, BUDGETS)
    lr = getattr(args, "lr", 0.05)
    epochs = s["epochs"]
    say = (lambda *a: None) if args.quiet else print
    splits = load(args, s["train_limit"], s["eval_limit"])
    features = int(torch.tensor(splits.input_shape).prod())
    classes = splits.num_classes
    sgd = _sgd(lr)
    sigmoid_lr = getattr(args, "sigmoid_lr", 0.2)
    results: dict[str, Any] = {"settings": s, "lr": lr, "sigmoid_lr": sigmoid_lr}
    with single_thread():
        # ---- 1. greedy layer-wise pretraining and auxiliary heads, deep sigmoid MLP
        depth, width = 5, 100
        sizes = [features] + [width] * depth + [classes]
        torch.manual_seed(args.seed)
        direct = mlp(sizes, "sigmoid")
        h_direct, _ = fit(direct, splits, epochs=epochs, lr=sigmoid_lr, seed=args.seed)
        torch.manual_seed(args.seed)
        blocks = [nn.Sequential(nn.Flatten(), nn.Linear(features, width), nn.Sigmoid())]
        blocks += [nn.Sequential(nn.Linear(width, width), nn.Sigmoid()) for _ in range(depth - 1)]
        greedy, h_greedy = greedy_supervised_pretraining(blocks, splits, _sgd(sigmoid_lr), epochs_per_stage=1,
                                                         fine_tune_epochs=max(0, epochs - depth), batch_size=64,
                                                         seed=args.seed)
        torch.manual_seed(args.seed)
        trunk = mlp(sizes, "sigmoid")  # Flatten, (Linear, Sigmoid) x 5, Linear
        heads = {4: nn.Linear(width, classes), 8: nn.Linear(width, classes)}  # after hidden layers 2 and 4
        aux = AuxiliaryHeads(trunk, heads, weight=0.3, decay_epochs=max(1, epochs // 2))
        h_aux, _ = fit(aux, splits, epochs=epochs, lr=sigmoid_lr, seed=args.seed, loss=aux.loss(),
                       callbacks=[aux.schedule()])
        part1 = {"direct": (h_direct, _evaluate(direct, splits)), "greedy": (h_greedy, _evaluate(greedy, splits)),
                 "auxiliary heads": (h_aux, _evaluate(aux.discard(), splits))}
        rows1 = [["training", "val acc after epoch 1", f"val acc after epoch {epochs}", "test acc (final)"]]
        for name, (hist, final) in part1.items():
            rows1.append([name, pct(hist[0].get("val_accuracy")), pct(final.get("val")), pct(final.get("test"))])
            say(f"  deep sigmoid MLP, {name}: val {pct(final.get('val'))}")
        results["greedy"] = {k: {"history": h, "final": f} for k, (h, f) in part1.items()}

        # ---- 2. FitNets: thin deep student with hints from a wide shallow teacher
        torch.manual_seed(args.seed)
        teacher = mlp([features, 500, classes], "relu")
        h_teacher, teacher_seconds = fit(teacher, splits, epochs=max(1, epochs // 2), lr=lr, seed=args.seed)
        student_sizes = [features] + [32] * 8 + [classes]
        torch.manual_seed(args.seed + 1)
        plain_student = mlp(student_sizes, "tanh")
        h_plain, _ = fit(plain_student, splits, epochs=epochs, lr=lr, seed=args.seed)
        torch.manual_seed(args.seed + 1)
        student = mlp(student_sizes, "tanh")
        hint_epochs = max(1, epochs // 4)
        # teacher: Flatten(0) Linear(1) ReLU(2) Linear(3): hint = index 2;
        # student: Flatten(0) then (Linear, Tanh) pairs: the 4th hidden layer's output is index 8.
        student, h_fit = fitnets(teacher, student, hint_layer=2, guided_layer=8, data=splits, make_optimizer=sgd,
                                 hint_epochs=hint_epochs, task_epochs=epochs - hint_epochs, batch_size=64,
                                 seed=args.seed)
        rows2 = [["student (784-32x8-10, tanh)", "epochs (hints + task)", "val acc (final)", "test acc (final)"]]
        for name, model, hist, ep in (("direct", plain_student, h_plain, f"0 + {epochs}"),
                                      ("FitNets hints", student, h_fit, f"{hint_epochs} + {epochs - hint_epochs}")):
            final = _evaluate(model, splits)
            rows2.append([name, ep, pct(final.get("val")), pct(final.get("test"))])
            results.setdefault("fitnets", {})[name] = {"history": hist, "final": final}
            say(f"  thin deep student, {name}: val {pct(final.get('val'))}")
        teacher_final = _evaluate(teacher, splits)
        rows2.append(["(teacher 784-500-10)", f"{max(1, epochs // 2)}", pct(teacher_final.get("val")),
                      pct(teacher_final.get("test"))])
        results["fitnets_teacher"] = {"final": teacher_final, "seconds": teacher_seconds}

        # ---- 3. transfer from digits 0-4 to digits 5-9 with few examples
        low = Splits(_subset(splits.train, range(0, 5)), _subset(splits.val, range(0, 5)), _subset(splits.test, range(0, 5)))
        high = Splits(_subset(splits.train, range(5, 10), s["transfer_examples"]), _subset(splits.val, range(5, 10)),
                      _subset(splits.test, range(5, 10)))
        torch.manual_seed(args.seed)
        source = mlp([features, 256, 5], "relu")
        fit(source, low, epochs=max(1, epochs // 2), lr=lr, seed=args.seed)
        rows3 = [["digits 5-9 from " + f"{len(high.train)} examples", "val acc (final)", "test acc (final)"]]
        for name, layers, frozen in (("from scratch", 0, False), ("transfer layer 1, frozen", 2, True),
                                     ("transfer layer 1, fine-tuned", 2, False)):
            torch.manual_seed(args.seed + 2)
            target = mlp([features, 256, 5], "relu")
            if layers:
                transfer(source, target, layers, freeze_copied=frozen)
            hist, _ = fit(target, high, epochs=epochs, lr=lr, seed=args.seed)
            final = _evaluate(target, high)
            rows3.append([name, pct(final.get("val")), pct(final.get("test"))])
            results.setdefault("transfer", {})[name] = {"history": hist, "final": final}
            say(f"  transfer, {name}: val {pct(final.get('val'))}")
    intro = [
        f"{len(splits.train)} training examples, SGD (momentum 0.9, batch 64; lr {sigmoid_lr} for the sigmoid nets "
        f"of part 1, {lr} for parts 2-3); every method gets the same number of epochs ({epochs}) as its direct "
        "baseline.",
        "Greedy: one epoch per added layer (5), then joint fine-tuning for the remaining epochs.",
    ]
    _plot(results, args.run_dir / "pretraining.png")
    report(args, "pretraining", "pretraining: greedy, FitNets, auxiliary heads, transfer (sec. 8.7.4-8.7.5)", intro,
           [(f"1. Deep sigmoid MLP ({'-'.join(map(str, sizes))})", rows1),
            ("2. FitNets: thin deep student with hints from a wide shallow teacher", rows2),
            ("3. Transfer from digits 0-4 to 5-9", rows3)], results,
           images=["pretraining.png"], say=say, claim=CLAIM, verdict=verdict)
    return 0
