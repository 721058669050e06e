"""The accuracy frontier on this machine: for each time budget, the best recipe chosen on the
validation split, then its test accuracy over seeds fixed in advance.

For every budget (training wall time: from the data in memory to the end of the last epoch,
evaluation not counted, as in ``benchmarks/time_to_accuracy.py``) a short list of candidate
recipes is tried in two stages, every run in a fresh process:

  selection  each candidate trains once (seed 0) on the book's split, 50,000 training images,
             and is scored on the 10,000 validation images. The test set is not read
             (``train.evaluate_test = false``). A candidate whose training took longer than
             the budget is out; the best validation accuracy among the rest is chosen.
  final      the chosen candidate trains on each of the fixed seeds, and the test set is read
             once per run, after the last epoch (``train.eval_every = 0``).

An ensemble budget (``ENSEMBLES``: 30 and 60 minutes) is measured in two runs with disjoint
seeds instead: members train two at a time until the budget is spent, validation chooses
how many and how to combine them, that ensemble alone is scored on the test set, and a
second run of that many new members reads the test set once more (see ``ensemble``).

Candidates are bundled configs plus ``--set``-style overrides, so the chosen one is always
``descend train --config NAME --set ...``. Each run's result is appended to the JSON as soon
as it ends, and a rerun skips the runs already there (``--out`` doubles as a resume file).
The table (validation of every candidate; test mean, spread and time of the chosen ones) is
printed, and the frontier is drawn as test accuracy against budget (``--plot``).

    python benchmarks/frontier.py --budgets 1,3          (the 1- and 3-minute budgets)
    python benchmarks/frontier.py --budgets 30           (an ensemble budget: about an hour)
    python benchmarks/frontier.py                        (every budget: hours on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
import torch

from descend import bench, build, config as cfg
from descend.io import atomic_path, atomic_write_json
from descend.train.ensemble import combine

sys.path.insert(0, str(Path(__file__).parent))
from time_to_accuracy import _Clock, in_fresh_process  # noqa: E402  (the same clock and runner)

SEEDS = (0, 1, 2, 3, 4)  # fixed in advance
# budget (minutes) -> candidates (bundled config, overrides); every candidate trains on the
# 50,000 images of the book's split, so that validation can choose among them.
CANDIDATES: dict[int, list[tuple[str, tuple[str, ...]]]] = {
    1: [("mnist-99.5", ("train.epochs=4",)), ("mnist-99.5", ()), ("mnist-speedrun", ("train.epochs=6",))],
    3: [("mnist-3min", ()), ("mnist-3min", ("train.epochs=11",))],
    10: [("mnist-10min", ()), ("mnist-10min", ("train.amp=\"auto\"", "train.epochs=30"))],
}


# budget (minutes) -> the member recipe of its ensemble (an ensemble budget; see ``ensemble``).
ENSEMBLES: dict[int, tuple[str, tuple[str, ...]]] = {30: ("mnist-3min", ()), 60: ("mnist-3min", ())}
ENSEMBLE_SEEDS = {"selection": 0, "final": 1000}  # members' seeds count up from these: disjoint


def _fit(name: str, overrides: list[str], seed: int, read_test: bool):
    """Train ``descend train --config NAME --set OVERRIDES`` once (no files kept), timed by
    ``_Clock``; the trainer, the data, the training wall time and the history."""
    config = cfg.load(name, list(overrides) + [f"seed={seed}", "quiet=true", "train.checkpoint=false",
                                               "train.eval_every=0", f"train.evaluate_test={str(read_test).lower()}"])
    splits = build.load_data(config)
    clock = _Clock()
    with tempfile.TemporaryDirectory() as tmp:
        clock.start = time.perf_counter()
        trainer = build.build_trainer(config, splits, Path(tmp) / "run", seed, data_parallel=False)
        trainer.callbacks.append(clock)
        history = trainer.fit()
    return trainer, splits, clock.trained[-1], history


def run_one(name: str, overrides: list[str], seed: int, read_test: bool) -> dict[str, Any]:
    """One training run; the test set is read (after the last epoch) only if ``read_test``."""
    _, _, wall, history = _fit(name, overrides, seed, read_test)
    final = history[-1]
    return {"config": name, "overrides": list(overrides), "seed": seed, "training_wall": wall,
            "epochs": len(history), "val_accuracy": final.get("val_accuracy"),
            "test_accuracy": final.get("test_accuracy") if read_test else None}


def run_member(name: str, overrides: list[str], seed: int, logits: str) -> dict[str, Any]:
    """One ensemble member on one thread (as ``descend train --nproc 2`` trains two at once):
    its validation and test outputs are saved as ``LOGITS-val.npy`` and ``LOGITS-test.npy``
    for the parent to combine, which scores the test set only for the chosen ensemble."""
    torch.set_num_threads(1)
    trainer, splits, wall, history = _fit(name, overrides, seed, False)
    for part in ("val", "test"):
        with atomic_path(Path(f"{logits}-{part}.npy")) as tmp_file, open(tmp_file, "wb") as f:
            np.save(f, trainer.predict(getattr(splits, part).x).float().numpy(), allow_pickle=False)
    return {"seed": seed, "training_wall": wall, "val_accuracy": history[-1]["val_accuracy"]}


def _train_members(stage: str, name: str, overrides, budget_s: float, count: int | None,
                   logits_dir: Path) -> dict[str, Any]:
    """Members from seed ``ENSEMBLE_SEEDS[stage]`` up, two at a time, each in a fresh process.
    ``count`` members, or (``count=None``) as many as the budget holds: a member starts only
    if the slowest so far would end within the budget. The ensemble's wall time runs from the
    first start to the last end: process start-up and data loading count."""
    start, seed, members, running = time.perf_counter(), ENSEMBLE_SEEDS[stage], [], {}

    def member(s: int) -> dict[str, Any]:
        path = logits_dir / f"{stage}-seed{s}"
        r = in_fresh_process([sys.executable, __file__, "--member", json.dumps([name, list(overrides), s, str(path)])])
        return dict(r, logits=str(path), ended=time.perf_counter() - start)

    with ThreadPoolExecutor(max_workers=2) as pool:
        while True:
            while len(running) < 2:
                slowest = max((m["ended"] - m["began"] for m in members), default=0.0)
                if (count is not None and len(members) + len(running) >= count) or (
                        count is None and time.perf_counter() - start + slowest > budget_s):
                    break
                running[pool.submit(member, seed)] = time.perf_counter() - start
                seed += 1
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                r = dict(future.result(), began=running.pop(future))
                members.append(r)
                print(f"{stage} member seed {r['seed']}: val {100 * r['val_accuracy']:.2f}%, trained in "
                      f"{r['training_wall']:.0f} s, ended at {r['ended']:.0f} s", flush=True)
    members.sort(key=lambda m: m["seed"])
    return {"config": name, "overrides": list(overrides), "members": members,
            "wall": max(m["ended"] for m in members)}


def _outputs(members: list[dict[str, Any]], part: str) -> torch.Tensor:
    """The members' saved outputs on ``part``, stacked: (members, images, classes)."""
    return torch.stack([torch.from_numpy(np.load(f"{m['logits']}-{part}.npy", allow_pickle=False))
                        for m in members])


def _ensemble_accuracy(outputs: torch.Tensor, labels: torch.Tensor, method: str) -> float:
    return float((combine(outputs, method) == labels).double().mean())


def _ensemble_key(minutes: int) -> str:
    name, overrides = ENSEMBLES[minutes]
    return f"{minutes} min | {name} {' '.join(overrides)}"


def ensemble(minutes: int, done: dict[str, Any], out: Path) -> dict[str, Any]:
    """An ensemble budget, in two runs with disjoint seeds.

    The selection run trains members of ``ENSEMBLES[minutes]`` (members on the book's
    50,000 images) until the budget is spent; on the validation images it chooses how many
    of them (the first k) and how to combine them (averaged softmax or majority vote), and
    only then scores that ensemble on the test set. The final run trains k new members (seeds
    disjoint from the first run's) and scores the test set once with the chosen combination.
    """
    name, overrides = ENSEMBLES[minutes]
    labels = build.load_data(cfg.load(name, list(overrides)))
    logits_dir = out.parent / "frontier-members"
    logits_dir.mkdir(parents=True, exist_ok=True)
    runs = done.setdefault("ensembles", {})
    key = _ensemble_key(minutes)
    if f"{key} | selection" not in runs:
        runs[f"{key} | selection"] = _train_members("selection", name, overrides, 60 * minutes, None, logits_dir)
        atomic_write_json(out, done)
    sel = runs[f"{key} | selection"]
    within = [m for m in sel["members"] if m["ended"] <= 60 * minutes]
    val_outputs = _outputs(within, "val")  # every member's validation outputs, read once
    scores = {(k, method): _ensemble_accuracy(val_outputs[:k], labels.val.y, method)
              for k in range(1, len(within) + 1) for method in ("average", "vote")}
    (k, method), val = max(scores.items(), key=lambda kv: (kv[1], -kv[0][0]))  # ties: fewer members
    sel.update(k=k, combine=method, val_accuracy=val, val_by_members=[scores[(i, method)] for i in range(1, len(within) + 1)],
               test_accuracy=_ensemble_accuracy(_outputs(within[:k], "test"), labels.test.y, method),
               wall_k=max(m["ended"] for m in within[:k]))
    if f"{key} | final" not in runs:
        runs[f"{key} | final"] = _train_members("final", name, overrides, 60 * minutes, k, logits_dir)
        atomic_write_json(out, done)
    fin = runs[f"{key} | final"]
    fin.update(k=k, combine=method,
               val_accuracy=_ensemble_accuracy(_outputs(fin["members"], "val"), labels.val.y, method),
               test_accuracy=_ensemble_accuracy(_outputs(fin["members"], "test"), labels.test.y, method),
               wall_k=fin["wall"])
    tests = [sel["test_accuracy"], fin["test_accuracy"]]
    return {"budget_min": minutes, "ensemble": True, "chosen": {"config": name, "overrides": list(overrides)},
            "k": k, "combine": method, "val_accuracy": val, "runs": [sel, fin],
            "test_mean": statistics.mean(tests), "test_sd": statistics.stdev(tests),
            "test_min": min(tests), "test_max": max(tests),
            "wall_mean": statistics.mean([sel["wall_k"], fin["wall_k"]]), "wall_max": max(sel["wall_k"], fin["wall_k"])}


def _key(stage: str, name: str, overrides: list[str] | tuple[str, ...], seed: int) -> str:
    return f"{stage} | {name} {' '.join(overrides)} | seed {seed}"


def _fresh(stage: str, name: str, overrides, seed: int, done: dict[str, Any], out: Path,
           stop: float) -> dict[str, Any] | None:
    """The run's result: from ``out`` if it is there, else run now (None: not before ``stop``)."""
    key = _key(stage, name, overrides, seed)
    if key not in done["runs"] and time.time() > stop:
        print(f"{key}: not run (--minutes spent)", flush=True)
        return None
    if key not in done["runs"]:
        done["runs"][key] = in_fresh_process(
            [sys.executable, __file__, "--single", json.dumps([name, list(overrides), seed, stage == "final"])])
        atomic_write_json(out, done)
    r = done["runs"][key]
    test = "" if r["test_accuracy"] is None else f", test {100 * r['test_accuracy']:.2f}%"
    print(f"{key}: val {100 * r['val_accuracy']:.2f}%{test}, trained in {r['training_wall']:.1f} s", flush=True)
    return r


def frontier(budgets: list[int], seeds: list[int], out: Path, stop: float = float("inf")) -> dict[str, Any]:
    """Select and run every budget's recipe (runs already in ``out`` are not repeated; none
    starts after the time ``stop``); the JSON with the table's rows."""
    done = json.loads(out.read_text()) if out.exists() else {"runs": {}}
    done["machine"] = bench.machine()
    rows = []
    for minutes in budgets:
        if minutes in ENSEMBLES:
            measured = f"{_ensemble_key(minutes)} | final" in done.get("ensembles", {})
            if time.time() > stop and not measured:
                print(f"{minutes} min ensemble: not run (--minutes spent)", flush=True)
                continue
            rows.append(ensemble(minutes, done, out))
            continue
        tried = [_fresh("selection", name, overrides, 0, done, out, stop) for name, overrides in CANDIDATES[minutes]]
        tried = [r for r in tried if r is not None]
        fits = [r for r in tried if r["training_wall"] <= 60 * minutes]
        finals = []
        if fits:
            chosen = max(fits, key=lambda r: r["val_accuracy"])
            finals = [r for r in (_fresh("final", chosen["config"], chosen["overrides"], s, done, out, stop)
                                  for s in seeds) if r is not None]
        if not finals:
            rows.append({"budget_min": minutes, "tried": tried, "chosen": None})
            continue
        tests = [r["test_accuracy"] for r in finals]
        rows.append({"budget_min": minutes, "tried": tried, "chosen": chosen, "finals": finals,
                     "test_mean": statistics.mean(tests), "test_sd": statistics.stdev(tests) if len(tests) > 1 else 0.0,
                     "test_min": min(tests), "test_max": max(tests),
                     "wall_mean": statistics.mean(r["training_wall"] for r in finals),
                     "wall_max": max(r["training_wall"] for r in finals)})
    old = {row["budget_min"]: row for row in done.get("frontier", [])}
    done["frontier"] = sorted({**old, **{row["budget_min"]: row for row in rows}}.values(), key=lambda r: r["budget_min"])
    atomic_write_json(out, done)
    return done


def _recipe(r: dict[str, Any]) -> str:
    return f"`--config {r['config']}" + "".join(f" --set {o}" for o in r["overrides"]) + "`"


def table(done: dict[str, Any]) -> str:
    lines = [f"{done['machine']}; training wall time in seconds (data in memory to the end of the last epoch)",
             "budget | recipe | validation (seed 0) | s | chosen | test accuracy, mean ± sd (range), seeds | s (mean, max)",
             "---:|---|---:|---:|:---:|---|---:"]
    for row in done["frontier"]:
        if row.get("ensemble"):
            sel, fin = row["runs"]
            lines.append(
                f"{row['budget_min']} min | ensemble of {row['k']}: {_recipe(row['chosen'])} (--set "
                f"train.ensemble={row['k']} train.combine=\"{row['combine']}\" --nproc 2) | "
                f"{100 * row['val_accuracy']:.2f}% (the first {row['k']} of seeds {sel['members'][0]['seed']}-"
                f"{sel['members'][-1]['seed']}) | "
                f"{sel['wall_k']:.0f} | yes | {100 * sel['test_accuracy']:.2f}% and {100 * fin['test_accuracy']:.2f}% "
                f"(seeds from {sel['members'][0]['seed']} and {fin['members'][0]['seed']}) | "
                f"{sel['wall_k']:.0f}, {fin['wall_k']:.0f}")
            continue
        for r in row["tried"]:
            chosen = r == row["chosen"]
            final = (f"{100 * row['test_mean']:.2f}% ± {100 * row['test_sd']:.2f} ({100 * row['test_min']:.2f}-"
                     f"{100 * row['test_max']:.2f}), {len(row['finals'])} | {row['wall_mean']:.0f}, {row['wall_max']:.0f}"
                     if chosen else " | ")
            over = " (over budget)" if r["training_wall"] > 60 * row["budget_min"] else ""
            lines.append(f"{row['budget_min']} min | {_recipe(r)} | {100 * r['val_accuracy']:.2f}% | "
                         f"{r['training_wall']:.0f}{over} | {'yes' if chosen else ''} | {final}")
    return "\n".join(lines)


def plot(done: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    tried = [r for row in done["frontier"] for r in row.get("tried", [])]
    ax.scatter([r["training_wall"] / 60 for r in tried], [100 * r["val_accuracy"] for r in tried], marker="o",
               facecolors="none", edgecolors="gray", label="every candidate: validation, seed 0")
    rows = [r for r in done["frontier"] if r["chosen"] is not None]
    ax.errorbar([r["wall_mean"] / 60 for r in rows], [100 * r["test_mean"] for r in rows],
                yerr=[100 * r["test_sd"] for r in rows], marker="s", capsize=4, color="C0",
                label="chosen recipe: test, mean ± sd over seeds")
    for row in done["frontier"]:
        ax.axvline(row["budget_min"], color="C3", lw=0.8, ls=":")
        ax.annotate(f"{row['budget_min']} min", (row["budget_min"], 1.0), xycoords=("data", "axes fraction"),
                    xytext=(-3, -12), textcoords="offset points", ha="right", fontsize=8, color="C3")
    ax.set_xscale("log")
    ticks = [0.5, 1, 2, 3, 5, 10, 20, 30, 60]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax.set_xlim(0.4, 1.3 * max(row["budget_min"] for row in done["frontier"]))
    ax.set_xlabel("training wall time (minutes, 2 CPU cores; dotted: the budgets)")
    ax.set_ylabel("MNIST accuracy (%)")
    ax.set_title("Accuracy frontier: recipes chosen on validation, then tested")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", default=",".join(map(str, [*CANDIDATES, *ENSEMBLES])),
                        help="minutes, of " + str([*CANDIDATES, *ENSEMBLES]))
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="seeds of the final runs, fixed in advance")
    parser.add_argument("--out", type=Path, default=Path("bench-results/frontier.json"))
    parser.add_argument("--plot", type=Path, default=Path("bench-results/frontier.png"))
    parser.add_argument("--minutes", type=float, default=float("inf"),
                        help="start no run after this many minutes (the table then shows what finished)")
    parser.add_argument("--single", help=argparse.SUPPRESS)
    parser.add_argument("--member", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:  # one run in the fresh process the parent started; its result is the last line
        name, overrides, seed, read_test = json.loads(args.single)
        print(json.dumps(run_one(name, overrides, seed, read_test)))
        return
    if args.member:  # one ensemble member, likewise
        print(json.dumps(run_member(*json.loads(args.member))))
        return
    done = frontier([int(b) for b in args.budgets.split(",")], [int(s) for s in args.seeds.split(",")], args.out,
                    time.time() + 60 * args.minutes)
    print("\n" + table(done))
    plot(done, args.plot)
    print(f"saved {args.out} and {args.plot}")


if __name__ == "__main__":
    main()
