"""Shared pieces of the initialization / strategy / heuristics experiments:
data at a budget, plain MLPs, one training run through the Trainer, figures, and the
report (a table printed and written as JSON + Markdown into the run directory, with the
text's claim and the verdict the measured numbers give on it).

Not an experiment itself (the leading underscore keeps it off ``descend experiment --list``).
"""

from __future__ import annotations

import argparse
import contextlib
import time
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from descend.data import Splits, load_dataset
from descend.errors import ConfigError
from descend.io import atomic_write_json, atomic_write_text

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


def add_data_arguments(parser: argparse.ArgumentParser, default_train: int | None = None) -> None:
    parser.add_argument("--dataset", default="mnist", help="mnist (default), fashion-mnist, digits, ...")
    parser.add_argument("--train-limit", type=int, default=default_train,
                        help="training examples to use (default: set by --budget)")
    parser.add_argument("--epochs", type=int, help="epochs per run (default: set by --budget)")


def settings(args: argparse.Namespace, budgets: dict[str, dict[str, Any]],
             keys: Sequence[str] = ("train_limit", "epochs")) -> dict[str, Any]:
    """The budget's settings, overridden by the whole-number options ``keys`` (by default
    ``--train-limit`` / ``--epochs``) when given."""
    if args.budget not in budgets:
        raise ConfigError(f"unknown budget {args.budget!r}; use one of {', '.join(budgets)}")
    s = dict(budgets[args.budget])
    for key in keys:
        value = getattr(args, key, None)
        if value is not None:
            if value < 1:
                raise ConfigError(f"--{key.replace('_', '-')} must be >= 1, got {value}")
            s[key] = value
    return s


def load(args: argparse.Namespace, train_limit: int | None, eval_limit: int | None = None) -> Splits:
    """The data set of ``--dataset`` (NNDL split for the MNIST family), cut to the budget."""
    name = getattr(args, "dataset", "mnist")
    return load_dataset(name, split="nndl", data_dir=args.data_dir, limit=train_limit, eval_limit=eval_limit)


def mlp(sizes: Sequence[int], activation: str = "relu", dropout: float = 0.0, input_dropout: float = 0.0) -> nn.Sequential:
    """Flatten -> [Dropout(input)] -> (Linear -> activation -> [Dropout]) ... -> Linear (logits)."""
    if activation not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {activation!r}; use one of {', '.join(ACTIVATIONS)}")
    layers: list[nn.Module] = [nn.Flatten()]
    if input_dropout:
        layers.append(nn.Dropout(input_dropout))
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def fit(model: nn.Module, splits: Splits, *, epochs: int, lr: float, momentum: float = 0.9, batch_size: int = 64,
        seed: int = 0, optimizer: torch.optim.Optimizer | None = None, **trainer_options: Any) -> tuple[list[dict], float]:
    """Train with SGD + momentum (or ``optimizer``) through the Trainer; (history, seconds)."""
    from descend.train import Trainer

    optimizer = optimizer or torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr,
                                             momentum=momentum)
    options = {"quiet": True, "checkpoint": False, "evaluate_test": True, **trainer_options}
    trainer = Trainer(model, optimizer, splits, epochs=epochs, batch_size=batch_size, seed=seed, **options)
    start = time.perf_counter()
    history = trainer.fit()
    return history, time.perf_counter() - start


@contextlib.contextmanager
def single_thread():
    """Small networks on a shared 2-core CPU: intra-op threads only add synchronization.

    A context manager, or a decorator (``@single_thread()``) for an experiment's ``run``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def table(rows: list[list[str]]) -> str:
    """A Markdown table; the first row is the header."""
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def report(args: argparse.Namespace, name: str, title: str, intro: Iterable[str],
           tables: list[tuple[str, list[list[str]]]], results: dict[str, Any], images: Iterable[str] = (),
           say: Callable[..., None] | None = None, claim: str = "",
           verdict: Callable[[dict[str, Any]], tuple[str, str]] | None = None) -> dict[str, Any]:
    """Print the tables; write ``<name>.json`` and ``<name>.md`` into ``args.run_dir``.

    With ``verdict`` (the experiment's ``verdict(results)``), also print ``claim: ...`` and
    ``verdict: <status> - <evidence>`` and store ``claim``, ``verdict`` and ``verdict_evidence``
    in the JSON. Returns the dict written as JSON."""
    say = say or ((lambda *a: None) if args.quiet else print)
    data = {"budget": args.budget, "seed": args.seed, **results}
    md = [f"# {title}", "", f"Budget `{args.budget}`, seed {args.seed}.", "", *intro, ""]
    for heading, rows in tables:
        text = table(rows)
        say(heading)
        say(text)
        md += [f"## {heading}", "", text, ""]
    for image in images:
        md += [f"![{image}]({image})", ""]
    if verdict is not None:
        status, evidence = verdict(data)
        data.update(claim=claim, verdict=status, verdict_evidence=evidence)
        say(f"claim: {claim}")
        say(f"verdict: {status} - {evidence}")
        md += ["## Claim and verdict", "", claim, "", f"**{status}**: {evidence}", ""]
    atomic_write_json(args.run_dir / f"{name}.json", data)
    atomic_write_text(args.run_dir / f"{name}.md", "\n".join(md) + "\n")
    return data


def judge(checks: Sequence[bool], all_: str = "reproduced", some: str = "partly reproduced",
          none: str = "not reproduced") -> str:
    """The verdict of several checks of one claim: all hold, some hold, none holds."""
    held = sum(map(bool, checks))
    return all_ if held == len(checks) else some if held else none


def figure(width: float, height: float, title: str):
    """A titled matplotlib Figure on an Agg canvas (:func:`descend.plots.figure`)."""
    from descend.plots import figure as _figure

    fig = _figure(width, height)
    fig.suptitle(title)
    return fig


def save_figure(fig, path) -> None:
    """Write ``fig`` as PNG (100 dpi, a few tens of KB) atomically."""
    from descend.io import atomic_path

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def bars(ax, groups: Sequence[str], series: dict[str, Sequence[float]], ylabel: str, title: str = "") -> None:
    """Grouped bars: one group per entry of ``groups``, one coloured bar per series (legend)."""
    width = 0.8 / max(1, len(series))
    for i, (label, values) in enumerate(series.items()):
        offset = (i - (len(series) - 1) / 2) * width
        ax.bar([g + offset for g in range(len(groups))], list(values), width, label=label)
    ax.set_xticks(range(len(groups)), list(groups), rotation=20, ha="right", fontsize=8)
    ax.set(ylabel=ylabel, title=title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
