"""The ``descend`` command.

    descend train [--config run.toml] [--set key=value ...] [--resume RUN_DIR] ...
    descend train --nproc N ...           (data-parallel on N processes, via torchrun)
    descend evaluate RUN_DIR [--quiet] [--weights best|last]
    descend predict RUN_DIR INPUT... [--top-k K] [--output FILE.csv|.json] [--weights best|last]
    descend export RUN_DIR --format onnx [--output PATH] [--weights best|last]
    descend experiment NAME [options]     (descend experiment --list)
    descend bench                         Trainer overhead vs a hand-written loop
    descend --version                     descend's and torch's versions, the device

Every descend error (bad config, missing data, diverging loss, ...) is printed as one
message without a traceback, and the exit status is 2; so is a command line without a
command (after the help).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from descend import __version__
from descend.config import CHOICES
from descend.errors import ConfigError, DescendError, DistributedError, Interrupted


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", metavar="DIR", help="folder holding mnist/ (searched before $DESCEND_DATA and the cache)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")


def version_text() -> str:
    """``descend --version``: descend's version, torch's, and the device ``device = "auto"`` picks."""
    import torch

    if torch.cuda.is_available():
        device = f"cuda ({torch.cuda.get_device_name(0)}" + (
            f", {torch.cuda.device_count()} GPUs)" if torch.cuda.device_count() > 1 else ")")
    else:
        device = "cpu (no CUDA GPU)"
    return f"descend {__version__}\ntorch {torch.__version__}\ndevice: {device}"


class _Version(argparse.Action):
    """Like argparse's ``version`` action, but the text (which imports torch) is built only when asked."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit()


def _add_weights(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", choices=("last", "best"), default="last",
                   help="last: the final weights (model.safetensors, default); best: the best validation epoch's "
                   "(best.safetensors)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="descend",
        description="Train deep networks with every method of the reference texts; "
        "by default, a convolutional MNIST network that goes past Nielsen's chapter 6.",
    )
    parser.add_argument("--version", action=_Version, help="show descend's and torch's versions and the device, and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", help="descend COMMAND --help shows its options")

    p = sub.add_parser("train", help="train a network (default: a deeper chapter-6 network on MNIST)",
                       description="Train the network a config describes. Without --config: the bundled "
                       "default (Nielsen's chapter-6 network made deeper, on MNIST); --config nielsen: "
                       "his final network itself.")
    p.add_argument("--config", metavar="FILE", help="a TOML run config (see README); default: the bundled one")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=3 --set optimizer.lr=0.05 (repeatable)")
    p.add_argument("--run-dir", metavar="DIR", help="where to write the run (default: runs/<date-time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--epochs", type=int, help="shortcut for --set train.epochs=N")
    p.add_argument("--seed", type=int, help="shortcut for --set seed=N")
    p.add_argument("--ensemble", type=int, metavar="N", help="train N networks (seeds seed..seed+N-1) and combine them")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (shortcut for --set device=...)")
    p.add_argument("--amp", choices=CHOICES["train.amp"],
                   help="mixed precision for training (shortcut for --set train.amp=...)")
    p.add_argument("--nproc", type=int, metavar="N",
                   help="train on N processes of this machine (torchrun --standalone): data-parallel, "
                   "or N ensemble members at a time with --ensemble")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as TOML and exit")
    _add_common(p)

    p = sub.add_parser("evaluate", help="accuracy of a finished run (or ensemble) on validation and test data")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by descend train (or an ensemble's)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--tta", choices=CHOICES["data.tta"],
                   help="also report accuracies with test-time augmentation (default: the run's data.tta)")
    p.add_argument("--data-dir", metavar="DIR", help="folder holding mnist/ (searched before $DESCEND_DATA and the cache)")
    p.add_argument("--quiet", action="store_true",
                   help="print only the final accuracies: no line per ensemble member, no accuracies of the "
                   "first 1, 2, ... members")
    _add_weights(p)

    p = sub.add_parser("predict", help="classify pictures of digits (PNG/JPEG, .npy arrays) with a trained run",
                       description="Classify pictures with a trained run. Photos of digits are made into MNIST "
                       "digits first (inverted if dark on light, cropped to the ink, box normalized to 20x20, "
                       "centred by centre of mass in 28x28); pictures already in MNIST format are used as they are.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by descend train (or an ensemble's)")
    p.add_argument("images", nargs="+", metavar="INPUT", help="picture or .npy files, folders, or glob patterns")
    p.add_argument("--top-k", type=int, default=1, metavar="K", help="print the K most probable classes (default 1)")
    p.add_argument("--format", choices=("text", "csv", "json"),
                   help="output format (default: text, or from the --output file's suffix)")
    p.add_argument("--json", action="store_true", help="shortcut for --format json")
    p.add_argument("--output", "-o", metavar="FILE", help="write the predictions to FILE (.csv or .json) instead")
    _add_weights(p)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--as-is", "--mnist-format", dest="mode", action="store_const", const="as-is",
                       help="take every input as an MNIST-format picture, unchanged")
    group.add_argument("--preprocess", dest="mode", action="store_const", const="preprocess",
                       help="normalize every input like MNIST, even ones that look MNIST-format already")
    p.add_argument("--batch-size", type=int, default=1000, metavar="N", help="pictures per forward pass (default 1000)")

    p = sub.add_parser("export", help="write a trained network as an ONNX file (runs in onnxruntime)",
                       description="Export the network of a finished run for inference without descend: "
                       "inputs 'images' (N, C, H, W) float32 with pixels in [0, 1], outputs 'logits'. The file is "
                       "written only after onnxruntime has reproduced PyTorch's outputs. Needs "
                       "pip install \"descend[onnx]\".")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by descend train (an ensemble's member-N)")
    p.add_argument("--format", choices=("onnx",), default="onnx", help="the file format (default: onnx)")
    p.add_argument("--output", metavar="PATH",
                   help="where to write the file (default: RUN_DIR/model.onnx, or RUN_DIR/best.onnx with --weights best)")
    _add_weights(p)

    p = sub.add_parser("bench", help="training-loop overhead vs a hand-written PyTorch loop, and throughput",
                       description="Time one epoch of the configured model (default: Nielsen's final network, "
                       "--config nielsen) through descend's Trainer and through a hand-written PyTorch loop, "
                       "per batch size.")
    p.add_argument("--config", metavar="FILE", default="nielsen",
                   help="take the model from this run config (default: nielsen)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value of the model, e.g. --set model.conv=[32,64] (repeatable)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[10, 64, 256], metavar="B",
                   help="the batch sizes to time (default: 10 64 256)")
    p.add_argument("--images", type=int, default=2048, help="images per timed epoch")
    p.add_argument("--repeats", type=int, default=5, help="alternating timings per batch size (medians reported)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")

    p = sub.add_parser("experiment", help="run one of the texts' experiments (--list shows them)")
    p.add_argument("name", nargs="?", metavar="NAME", help="the experiment to run (see --list)")
    p.add_argument("--list", action="store_true", help="list the experiments")
    return parser


def _experiment(argv: list[str]) -> int:
    from descend import experiments

    # add_help=False: ``descend experiment NAME --help`` must reach the experiment's own parser.
    parser = argparse.ArgumentParser(prog="descend experiment", description="Run one of the texts' experiments.",
                                     add_help=False)
    parser.add_argument("name", nargs="?", metavar="NAME", help=f"one of: {', '.join(experiments.names())}")
    parser.add_argument("--list", action="store_true", help="list the experiments and exit")
    parser.add_argument("-h", "--help", action="store_true", help="show this help (or NAME's options) and exit")
    known, rest = parser.parse_known_args(argv)
    if known.help and known.name:
        rest.append("--help")
    elif known.help:
        parser.print_help()
        print("\nexperiments:")
    if known.list or not known.name:
        for name in experiments.names():
            print(f"{name:24s} {getattr(experiments.load(name), 'DESCRIPTION', '')}")
        return 0
    module = experiments.load(known.name)
    sub = argparse.ArgumentParser(prog=f"descend experiment {known.name}", description=module.DESCRIPTION)
    sub.add_argument("--run-dir", type=Path, help="where to write results (default: runs/<name>-<date-time>)")
    sub.add_argument("--data-dir", help="folder holding mnist/")
    sub.add_argument("--seed", type=int, default=0)
    sub.add_argument("--quiet", action="store_true")
    sub.add_argument("--budget", choices=("cpu", "full"), default="cpu",
                     help="cpu: shortened to run on a 2-core CPU; full: the text's settings")
    if hasattr(module, "add_arguments"):
        module.add_arguments(sub)
    args = sub.parse_args(rest)
    if args.run_dir is None:
        import time

        args.run_dir = Path("runs") / f"{known.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    args.run_dir.mkdir(parents=True, exist_ok=True)
    code = module.run(args)
    print(f"results in {args.run_dir}")
    return int(code or 0)


def _train(args: argparse.Namespace) -> int:
    from descend import config as cfg
    from descend import build, runs
    from descend.train import distributed

    overrides = list(args.overrides)
    for flag, key in (("epochs", "train.epochs"), ("seed", "seed"), ("ensemble", "train.ensemble"), ("device", "device"),
                      ("amp", "train.amp")):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={json.dumps(value) if isinstance(value, str) else value}")
    if args.data_dir:
        overrides.append(f"data.data_dir={json.dumps(args.data_dir)}")
    if args.quiet:
        overrides.append("quiet=true")

    if args.resume:
        run_dir = Path(args.resume)
        config_path = run_dir / runs.CONFIG
        if not config_path.is_file():
            raise ConfigError(f"--resume {run_dir}: no {runs.CONFIG} there; pass a run directory made by descend train")
        config = cfg.load_saved(config_path, overrides)
    else:
        run_dir = Path(args.run_dir) if args.run_dir else None
        config = cfg.load(args.config, overrides)
    if args.print_config:
        print(cfg.to_toml(config), end="")
        return 0
    if args.nproc is not None:
        if args.nproc < 1:
            raise ConfigError(f"--nproc {args.nproc}: the number of processes must be >= 1")
        if distributed.launched_world_size() > 1:
            raise ConfigError("--nproc starts torchrun itself; under torchrun, leave it out")
        if args.nproc > 1:
            if run_dir is None and not args.resume and not config.run_dir:
                run_dir = runs.default_run_dir()  # chosen once, for all processes
            device = build.resolve_device(config.device)
            if device.type == "cuda" and config.train.ensemble == 1:
                import torch

                if args.nproc > torch.cuda.device_count():
                    raise ConfigError(
                        f"--nproc {args.nproc}: data-parallel processes need one GPU each and this machine has "
                        f"{torch.cuda.device_count()}; use --nproc {torch.cuda.device_count()}, or --device cpu"
                    )
            target = run_dir or Path(config.run_dir or ".")
            if not args.resume and (target / runs.CONFIG).exists():  # refused once, not by every process
                raise ConfigError(f"{target} already holds a run; choose another run_dir or use --resume {target}")
            return _launch(args.nproc, args.argv, None if args.resume else run_dir)
    run_dir, results = runs.train(config, run_dir, resume=bool(args.resume))
    if distributed.launched_rank() == 0:
        _print_results(results)
        print(f"run directory: {run_dir}")
    return 0


def _launch(nproc: int, argv: list[str], run_dir: Path | None) -> int:
    """``descend train --nproc N ...`` = ``torchrun --standalone --nproc-per-node N -m descend train ...``."""
    import os

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    rest = _without_option(argv, "--nproc")
    if run_dir is not None and "--run-dir" not in rest:
        rest += ["--run-dir", str(run_dir)]
    # torchrun would set 1 thread per process; share the cores out instead.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    targs = get_args_parser().parse_args(["--standalone", f"--nproc-per-node={nproc}", "-m", "descend", *rest])
    try:
        run(targs)
    except ChildFailedError as exc:
        rank, failure = min(exc.failures.items())
        raise DistributedError(
            f"{len(exc.failures)} of the {nproc} processes failed (first: rank {rank}, exit status "
            f"{failure.exitcode}); their messages are above"
        ) from None
    return 0


def _without_option(argv: list[str], name: str) -> list[str]:
    """``argv`` without ``name VALUE`` / ``name=VALUE``."""
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == name:
            skip = True
        elif not item.startswith(name + "="):
            out.append(item)
    return out


def _print_results(results: dict, quiet: bool = False) -> None:
    """The accuracies of a run; ``quiet``: only the final ones (no member lines, no ensembles of the first k)."""
    for member in [] if quiet else results.get("members", []):
        accs = "  ".join(f"{k.replace('_accuracy', '')} {100 * v:.2f}%" for k, v in member.items()
                         if k.endswith(("accuracy", "accuracy_tta")))
        print(f"{member['member']}: {accs}")
    for key in ("val", "test"):
        if f"{key}_accuracy" in results:
            label = "validation" if key == "val" else "test"
            extra = ""
            if f"{key}_accuracy_vote" in results:
                extra = (f"  (average {100 * results[f'{key}_accuracy_average']:.2f}%, "
                         f"vote {100 * results[f'{key}_accuracy_vote']:.2f}%)")
            print(f"{label} accuracy: {100 * results[f'{key}_accuracy']:.2f}%{extra}")
        if f"{key}_accuracy_tta" in results:
            label = "validation" if key == "val" else "test"
            print(f"{label} accuracy with test-time augmentation: {100 * results[f'{key}_accuracy_tta']:.2f}%")
    for key in () if quiet else ("test_accuracy_by_members", "test_accuracy_tta_by_members"):
        if len(results.get(key, ())) > 2:
            label = "with test-time augmentation, " if "tta" in key else ""
            print(f"test accuracy {label}ensemble of the first 1, 2, ... members: "
                  + " ".join(f"{100 * a:.2f}" for a in results[key]))
    if "seconds" in results:
        print(f"wall time: {results['seconds']:.1f}s")


def _evaluate(args: argparse.Namespace) -> int:
    from descend import runs

    results = runs.evaluate(Path(args.run_dir), args.data_dir, args.tta, args.weights)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        _print_results(results, quiet=args.quiet)
    return 0


def _export(args: argparse.Namespace) -> int:
    from descend.export import export_run

    path = export_run(Path(args.run_dir), args.format, args.output, args.weights)
    print(f"wrote {path}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from descend.io import atomic_write_text
    from descend.predict import expand_inputs, format_rows, predict_files

    fmt = args.format or ("json" if args.json else None)
    if fmt is None and args.output:
        fmt = {".csv": "csv", ".json": "json"}.get(Path(args.output).suffix.lower())
        if fmt is None:
            raise ConfigError(f"--output {args.output}: name a .csv or .json file, or give --format")
    rows = predict_files(Path(args.run_dir), expand_inputs(args.images), top_k=args.top_k, weights=args.weights,
                         mode=args.mode or "auto", batch_size=args.batch_size)
    text = format_rows(rows, fmt or "text")
    if args.output:
        atomic_write_text(args.output, text)
        print(f"{len(rows)} predictions written to {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def _bench(args: argparse.Namespace) -> int:
    from descend import bench
    from descend import config as cfg
    from descend import build
    from descend.io import atomic_write_json

    if min(args.batch_sizes) < 1 or args.images < 1 or args.repeats < 1:
        raise ConfigError("--batch-sizes, --images and --repeats must be positive")
    config = cfg.load(args.config, args.overrides)
    shape = (1, 28, 28)
    result = bench.run(lambda: build.build_model(config, shape, 10), shape, args.batch_sizes, args.images, args.repeats)
    print(bench.table(result))
    if args.json:
        atomic_write_json(args.json, result)
    return 0


def _show_library_messages(quiet: bool) -> None:
    """Messages descend's modules log (early stopping: when, why, which weights) go to stderr,
    from the first process only; ``--quiet`` keeps only warnings."""
    logger = logging.getLogger("descend")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet or os.environ.get("RANK", "0") != "0" else logging.INFO)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv and argv[0] == "experiment":
            return _experiment(argv[1:])
        parser = _parser()
        args = parser.parse_args(argv)
        args.argv = list(argv)  # the --nproc launcher passes them on
        if args.command is None:  # like a missing required argument: usage, status 2
            parser.print_help(sys.stderr)
            return 2
        _show_library_messages(getattr(args, "quiet", False))
        commands = {"train": _train, "evaluate": _evaluate, "predict": _predict, "export": _export, "bench": _bench}
        return commands[args.command](args)
    except Interrupted as exc:
        print(f"descend: {exc}", file=sys.stderr)
        return exc.exit_code
    except DescendError as exc:
        print(f"descend: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("descend: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (``descend experiment --list | head``)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
