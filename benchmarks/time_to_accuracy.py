"""Time to a good network: descend's MNIST recipes against plain PyTorch, in one run.

Three contenders, each trained from scratch once the data is in memory (the clock covers
everything after that: building the network, warm-up, augmentation, every epoch's
evaluation):

  recipe     ``descend train --config mnist-speedrun`` / ``mnist-99.5`` through the Trainer,
             one run per fixed seed. The recipes fix their epochs in advance and evaluate
             once, after the last epoch (``train.eval_every = 0``): the test set is read once
             per run, and a recipe's time to 99.0% / 99.5% is its whole fit when its final
             test accuracy reaches the target (else it never does).
  plain      the same network, optimizer, schedule, augmentation, precision and memory
             layout built from the same config, trained by a hand-written PyTorch loop (index
             a batch, augment, forward under autocast, cross-entropy, backward, step,
             schedule) with the same final evaluation: recipe / plain is what the Trainer costs.
  example    the network and recipe of PyTorch's own MNIST example (pytorch/examples
             mnist/main.py: conv 32 and 64 3x3, max-pool, dropout 0.25, FC 128, dropout 0.5,
             Adadelta lr 1.0, StepLR gamma 0.7, mini-batch 64, 14 epochs, inputs normalized
             by 0.1307 / 0.3081), on the same 50,000 training images, capped at
             ``--example-seconds``; as in the example, the test set is scored after every
             epoch, and its times to 99.0% / 99.5% are read from that curve.

Loading the data into memory is timed apart and reported on its own. The table gives, per
contender, the mean and range of final test accuracy over seeds, the mean seconds (fit, and
the training epochs alone), the mean time to 99.0% and 99.5% (when every seed reaches it), the ratios of those times to the recipe's, and training images/s as a
share of the machine's measured float32 matrix-multiply rate (3x the forward FLOPs of the
convolutions and matrix products per image, as in ``descend bench``). JSON with every run's
curve goes to ``--out``.

    python benchmarks/time_to_accuracy.py --quick        (one seed, speedrun recipe only)
    python benchmarks/time_to_accuracy.py                (5 seeds of both recipes)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from descend import bench, build, config as cfg
from descend.data.tensors import Splits
from descend.io import atomic_write_json

SEEDS = (0, 1, 2, 3, 4)  # fixed in advance
TARGETS = (0.990, 0.995)


LIMIT = 0  # --limit


def _data_overrides(data_dir: str) -> list[str]:
    overrides = [f'data.data_dir="{data_dir}"'] if data_dir else []
    return overrides + ([f"data.limit={LIMIT}", f"data.eval_limit={LIMIT}"] if LIMIT else [])


def _time_to(curve: list[dict[str, float]], target: float) -> float | None:
    """Seconds from the start until the test accuracy first reached ``target`` (None: never)."""
    return next((p["seconds"] for p in curve if p["test_accuracy"] >= target), None)


def run_recipe(name: str, seed: int, data_dir: str) -> dict[str, Any]:
    """``descend train --config NAME --set seed=SEED`` through the runs API, into a temporary folder."""
    config = cfg.load(name, [f"seed={seed}", "quiet=true", "train.evaluate_test=true"]
                      + _data_overrides(data_dir))
    load_start = time.perf_counter()
    splits = build.load_data(config)
    load_seconds = time.perf_counter() - load_start
    clock = _Clock()
    with tempfile.TemporaryDirectory() as tmp:
        start = clock.start = time.perf_counter()
        trainer = build.build_trainer(config, splits, Path(tmp) / "run", seed, data_parallel=False)
        trainer.callbacks.append(clock)
        history = trainer.fit()
        seconds = time.perf_counter() - start
    evaluated = [h for h in history if "test_accuracy" in h]
    curve = [{"epoch": h["epoch"], "seconds": t, "val_accuracy": h["val_accuracy"], "test_accuracy": h["test_accuracy"]}
             for h, t in zip(evaluated, clock.trained)]
    return {"seed": seed, "seconds": seconds, "train_seconds": sum(h["seconds"] for h in history), "curve": curve,
            "test_accuracy": curve[-1]["test_accuracy"], "images": len(splits.train) * len(history),
            "load_seconds": load_seconds}


class _Clock:
    """A Trainer callback noting, at each evaluation, the training wall time so far: the seconds
    since ``start`` less the time spent evaluating."""

    def __init__(self) -> None:
        self.start, self.trained, self.evaluating, self._since = 0.0, [], 0.0, 0.0

    def on_validation_start(self, trainer) -> None:
        self._since = time.perf_counter()
        self.trained.append(self._since - self.start - self.evaluating)

    def on_validation_end(self, trainer) -> None:
        self.evaluating += time.perf_counter() - self._since


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, channels_last: bool, transform=None) -> float:
    model.eval()
    correct = 0
    for xb, yb in zip(x.split(1000), y.split(1000)):
        if transform is not None:
            xb = transform(xb)
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        correct += int((model(xb).argmax(1) == yb).sum())
    model.train()
    return correct / len(y)


def run_plain(name: str, seed: int, data_dir: str) -> dict[str, Any]:
    """The recipe's network, optimizer, schedule, augmentation, precision and layout, in a hand-written loop."""
    config = cfg.load(name, [f"seed={seed}"] + _data_overrides(data_dir))
    splits = build.load_data(config)
    device = torch.device("cpu")
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = build.build_model(config, splits.input_shape, splits.num_classes)
    optimizer = build.build_optimizer(config, model)
    t = config.train
    scheduler = build.build_scheduler(config, optimizer, -(-len(splits.train) // t.batch_size))
    augment = build.build_augment(config, splits)
    amp = build.resolve_amp(t.amp, device) == "bf16"
    channels_last = t.channels_last != "off"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    x, y = splits.train.x, splits.train.y
    curve, train_seconds, evaluating = [], 0.0, 0.0
    for epoch in range(1, t.epochs + 1):
        epoch_start = time.perf_counter()
        g = torch.Generator().manual_seed(seed * 1000 + epoch)
        for idx in torch.randperm(len(x), generator=g).split(t.batch_size):
            xb, yb = x[idx], y[idx]
            if augment is not None:
                xb = augment(xb, g)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            optimizer.step()
            scheduler.step()
        train_seconds += time.perf_counter() - epoch_start
        if epoch == t.epochs or (t.eval_every and epoch % t.eval_every == 0):  # as the Trainer's eval_every
            trained = time.perf_counter() - start - evaluating
            val = _accuracy(model, splits.val.x, splits.val.y, channels_last)
            test = _accuracy(model, splits.test.x, splits.test.y, channels_last)
            curve.append({"epoch": epoch, "seconds": trained, "val_accuracy": val, "test_accuracy": test})
            evaluating = time.perf_counter() - start - trained
    return {"seed": seed, "seconds": time.perf_counter() - start, "train_seconds": train_seconds, "curve": curve,
            "test_accuracy": curve[-1]["test_accuracy"], "images": len(x) * t.epochs}


class ExampleNet(nn.Module):
    """The network of pytorch/examples mnist/main.py."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = self.dropout1(F.max_pool2d(x, 2))
        x = self.dropout2(F.relu(self.fc1(torch.flatten(x, 1))))
        return F.log_softmax(self.fc2(x), dim=1)


def run_example(splits: Splits, seed: int, epochs: int, max_seconds: float) -> dict[str, Any]:
    """pytorch/examples mnist/main.py's recipe (Adadelta lr 1.0, StepLR gamma 0.7, batch 64), capped in time."""
    normalize = lambda xb: (xb - 0.1307) / 0.3081  # noqa: E731 - the example's transforms.Normalize
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = ExampleNet()
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    x, y = splits.train.x, splits.train.y
    curve, train_seconds, evaluating = [], 0.0, 0.0
    for epoch in range(1, epochs + 1):
        epoch_start = time.perf_counter()
        g = torch.Generator().manual_seed(seed * 1000 + epoch)
        model.train()
        for idx in torch.randperm(len(x), generator=g).split(64):
            optimizer.zero_grad()
            loss = F.nll_loss(model(normalize(x[idx])), y[idx])
            loss.backward()
            optimizer.step()
        scheduler.step()
        train_seconds += time.perf_counter() - epoch_start
        trained = time.perf_counter() - start - evaluating
        test = _accuracy(model, splits.test.x, splits.test.y, False, normalize)
        curve.append({"epoch": epoch, "seconds": trained, "test_accuracy": test})
        evaluating = time.perf_counter() - start - trained
        if time.perf_counter() - start > max_seconds or test >= max(TARGETS):
            break
    return {"seed": seed, "seconds": time.perf_counter() - start, "train_seconds": train_seconds, "curve": curve,
            "test_accuracy": curve[-1]["test_accuracy"], "images": len(x) * len(curve), "model": model}


def in_fresh_process(command: list[str]) -> dict[str, Any]:
    """Run ``command`` (a benchmark's own ``--single`` run) in a new Python process, so that no
    oneDNN kernels, caches or weights are left from an earlier run; its result is the JSON
    object on the last line of its output."""
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _in_fresh_process(contender: str, name: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, __file__, "--single", contender, name, str(seed), "--limit", str(args.limit)]
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    return in_fresh_process(command)


def summarize(runs_: list[dict[str, Any]], per_image_flops: float, sgemm: float) -> dict[str, Any]:
    accs = [r["test_accuracy"] for r in runs_]
    summary: dict[str, Any] = {
        "seeds": [r["seed"] for r in runs_], "test_accuracy_mean": statistics.mean(accs),
        "test_accuracy_min": min(accs), "test_accuracy_max": max(accs),
        "seconds_mean": statistics.mean(r["seconds"] for r in runs_),
        "train_seconds_mean": statistics.mean(r["train_seconds"] for r in runs_),
    }
    for target in TARGETS:
        times = [_time_to(r["curve"], target) for r in runs_]
        reached = [t for t in times if t is not None]
        summary[f"time_to_{target:.3f}"] = statistics.mean(reached) if len(reached) == len(times) else None
        summary[f"reached_{target:.3f}"] = f"{len(reached)}/{len(times)}"
    images_per_s = sum(r["images"] for r in runs_) / sum(r["train_seconds"] for r in runs_)
    summary["images_per_s"] = images_per_s
    summary["fraction_of_sgemm"] = images_per_s * per_image_flops / sgemm
    return summary


def _fmt_time(t: float | None) -> str:
    return "-" if t is None else f"{t:.1f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None else f"{a / b:.2f}"


def table(results: dict[str, Any]) -> str:
    lines = [f"sgemm {results['sgemm_gflops']:.0f} GFLOP/s, {results['machine']}; every run in a fresh process; "
             f"times in seconds (loading the data took {results['load_seconds']:.1f} s, not counted); 'to X%': the "
             "training wall time (from data in memory to the end of the last epoch: building the network, warm-up, "
             "augmentation; evaluation not counted) if the final test accuracy reaches X (the example: its first "
             "epoch that does)",
             "contender | seeds | test acc. mean (range) | s (fit) | s (train epochs) | to 99.0% | to 99.5% | "
             "vs recipe (99.0%) | vs recipe (99.5%) | img/s | of sgemm",
             "---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:"]
    for row in results["rows"]:
        s, base = row["summary"], results["rows_by_name"].get(row["recipe"], {}).get("summary", {})
        lines.append(
            f"{row['name']} | {len(s['seeds'])} | {100 * s['test_accuracy_mean']:.2f}% "
            f"({100 * s['test_accuracy_min']:.2f}-{100 * s['test_accuracy_max']:.2f}) | {s['seconds_mean']:.1f} | "
            f"{s['train_seconds_mean']:.1f} | {_fmt_time(s['time_to_0.990'])} | {_fmt_time(s['time_to_0.995'])} | "
            f"{_ratio(s['time_to_0.990'], base.get('time_to_0.990'))} | {_ratio(s['time_to_0.995'], base.get('time_to_0.995'))} | "
            f"{s['images_per_s']:.0f} | {100 * s['fraction_of_sgemm']:.1f}%")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="one seed, the speedrun recipe only, the example capped at 2 epochs")
    parser.add_argument("--recipes", default="mnist-speedrun,mnist-99.5", help="bundled configs to time")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="seeds, fixed in advance")
    parser.add_argument("--plain-seeds", type=int, default=0,
                        help="how many of the seeds also run the plain loop (default: all; --quick: 1)")
    parser.add_argument("--example-seconds", type=float, default=600.0, help="wall-time cap of the example's run")
    parser.add_argument("--no-example", action="store_true", help="skip pytorch/examples' recipe")
    parser.add_argument("--data-dir", default="", help="folder holding mnist/ (default: descend's search)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N training and evaluation images (smoke test)")
    parser.add_argument("--out", type=Path, default=Path("bench-results/time_to_accuracy.json"))
    parser.add_argument("--single", nargs=3, metavar=("CONTENDER", "RECIPE", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    global LIMIT
    LIMIT = args.limit
    if args.single:  # one run, in the fresh process the parent started; its result is the last line
        contender, name, seed = args.single
        runner = run_recipe if contender == "recipe" else run_plain
        print(json.dumps(runner(name, int(seed), args.data_dir)))
        return
    recipes = ["mnist-speedrun"] if args.quick else [r for r in args.recipes.split(",") if r]
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    plain_seeds = seeds[: args.plain_seeds or (1 if args.quick else len(seeds))]

    sgemm = bench.sgemm_flops()
    results: dict[str, Any] = {"threads": torch.get_num_threads(), "sgemm_gflops": sgemm / 1e9, "rows": [],
                               "quick": args.quick, "machine": bench.machine(), "load_seconds": 0.0}
    for name in recipes:
        config = cfg.load(name)
        model = build.build_model(config, (1, 28, 28), 10)
        flops = 3 * bench.forward_flops(model, (1, 28, 28))
        done: dict[str, list[dict[str, Any]]] = {"recipe": [], "plain": []}
        for seed in seeds:  # the two contenders alternate, so that a change in the machine's load hits both
            for contender in ("recipe", "plain") if seed in plain_seeds else ("recipe",):
                r = _in_fresh_process(contender, name, seed, args)
                print(f"{name} {contender} seed {seed}: test {100 * r['test_accuracy']:.2f}%, trained in "
                      f"{r['curve'][-1]['seconds']:.1f}s, fit {r['seconds']:.1f}s", flush=True)
                done[contender].append(r)
                results["load_seconds"] = max(results["load_seconds"], r.get("load_seconds", 0.0))
        for contender, runs_ in done.items():
            if runs_:
                results["rows"].append({"name": f"{name} ({'descend' if contender == 'recipe' else 'plain PyTorch'})",
                                        "recipe": name, "contender": contender, "train_flops_per_image": flops,
                                        "runs": runs_, "summary": summarize(runs_, flops, sgemm)})
    if not args.no_example:
        config = cfg.load(recipes[0], _data_overrides(args.data_dir))
        splits = build.load_data(config)
        flops = 3 * bench.forward_flops(ExampleNet(), (1, 28, 28))
        r = run_example(splits, seeds[0], 2 if args.quick else 14, args.example_seconds)
        r.pop("model")
        print(f"pytorch/examples mnist seed {seeds[0]}: test {100 * r['test_accuracy']:.2f}% after {len(r['curve'])} "
              f"epochs, {r['seconds']:.1f}s", flush=True)
        results["rows"].append({"name": "pytorch/examples mnist", "recipe": recipes[0], "contender": "example",
                                "train_flops_per_image": flops, "runs": [r], "summary": summarize([r], flops, sgemm)})
    by_name = {row["recipe"]: row for row in results["rows"] if row["contender"] == "recipe"}
    results["rows_by_name"] = by_name
    print("\n" + table(results))
    results.pop("rows_by_name")
    atomic_write_json(args.out, results)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
