"""The life of a run directory: what ``descend train``, ``evaluate`` and ``predict`` do with it.

:mod:`descend.build` makes the data, model, optimizer, schedule and Trainer that a config
describes; ``train(config)`` runs them (or an ensemble of such runs) and leaves in the
run directory:

    config.toml                the resolved config (resume and evaluate read it)
    metrics.jsonl              one line per epoch
    checkpoint.safetensors     + .json: the state after the last finished epoch
    model.safetensors          the final weights
    results.json               final accuracies, wall time
    learning_curves.png, filters.png, misclassified.png, confusion_matrix.png

An ensemble run (``train.ensemble = N``) holds ``member-1`` ... ``member-N``, each a run
directory as above trained with seed ``seed + i - 1``, and a ``results.json`` with each
member's and the combined test accuracy.

Under torchrun (``descend train --nproc P``) every process runs :func:`train`: one
network is trained data-parallel by all P processes (:mod:`descend.train.distributed`);
the members of an ensemble are shared out, process r training members r+1, r+1+P, ...,
each alone. Only rank 0 writes into the run directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import torch

from descend import build
from descend import config as cfg
from descend.data import Splits, tta_predict
from descend.errors import CheckpointError, ConfigError, DescendError, Diverged, Interrupted
from descend.io import atomic_write_json, atomic_write_text, disk_error, ensure_dir
from descend.train import EarlyStopping, Trainer, distributed, load_weights
from descend.train.callbacks import AveragedEvaluation, BestWeights
from descend.train.summary import model_summary
from descend.train.ensemble import combine
from descend.train.trainer import CHECKPOINT, WEIGHTS

CONFIG = "config.toml"
META = "data.json"
RESULTS = "results.json"


def default_run_dir() -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path("runs") / stamp
    n = 1
    while path.exists():
        n += 1
        path = Path("runs") / f"{stamp}-{n}"
    return path


def _write_pictures(trainer: Trainer, splits: Splits, run_dir: Path) -> None:
    from descend import plots

    plots.learning_curves(trainer.history, run_dir / "learning_curves.png")
    from descend.viz import conv_layers, save_filters

    layers = conv_layers(trainer.model)
    if layers:
        name, layer = next(iter(layers.items()))
        save_filters(layer, run_dir / "filters.png", title=f"first-layer filters ({name})")
    if splits.test is not None and len(splits.test) and splits.test.x.ndim == 4:
        predictions = trainer.predict(splits.test.x).argmax(1)
        plots.misclassified(splits.test.x, splits.test.y, predictions, run_dir / "misclassified.png", splits.classes)
        plots.confusion_matrix_plot(splits.test.y, predictions, run_dir / "confusion_matrix.png", splits.classes)


def train_one(config: cfg.Config, splits: Splits, run_dir: Path, seed: int, resume: bool = False,
              pictures: bool = True, data_parallel: bool | None = None) -> dict[str, Any]:
    """Train (or resume) one network into ``run_dir``; return its results.

    Data-parallel (a process group and ``data_parallel`` not False), every rank calls
    this and gets the same results; rank 0 writes the files.
    """
    writer = data_parallel is False or distributed.is_rank0()
    if writer:
        ensure_dir(run_dir)
    trainer = build.build_trainer(config, splits, run_dir, seed, data_parallel=data_parallel)
    found = (run_dir / CHECKPOINT).exists() if resume else False
    if resume and trainer.world_size > 1:  # every rank reads the checkpoint rank 0 wrote
        seen_by = int(distributed.all_reduce_sum(torch.tensor([float(found)])))
        if 0 < seen_by < trainer.world_size:
            raise CheckpointError(
                f"{run_dir / CHECKPOINT} is visible to {seen_by} of {trainer.world_size} processes; "
                "a multi-node resume needs the run directory on a file system all nodes share"
            )
    if found:
        trainer.resume(run_dir / CHECKPOINT)
    if writer and not config.quiet:
        print(f"{model_summary(trainer.model, splits.input_shape)}; {len(splits.train):,} training images, "
              f"{config.train.epochs} epochs on {trainer.device} ({trainer.amp if trainer.amp != 'none' else 'float32'}); "
              f"writing to {run_dir}", flush=True)
    start = time.perf_counter()
    history = trainer.fit()
    seconds = time.perf_counter() - start
    final = history[-1] if history else {}
    results = {
        "epochs": trainer.epoch,
        "seconds": seconds,
        "train_seconds": sum(h["seconds"] for h in history),
        "seed": seed,
    }
    stop = next((cb for cb in trainer.callbacks if isinstance(cb, EarlyStopping)), None)
    if stop is not None and stop.stopped_epoch:
        results["stopped_epoch"], results["stop_reason"] = stop.stopped_epoch, stop.reason
    best = next((cb for cb in trainer.callbacks if isinstance(cb, BestWeights)), None)
    if best is not None and best.best_epoch:
        results["best_epoch"], results[f"best_{best.monitor}"] = best.best_epoch, best.best
    # Report the weights the model holds after training. The last epoch evaluated those same
    # weights (the averaged ones, under averaging), so its numbers stand, unless early
    # stopping restored an earlier epoch's weights or the averaged weights were not kept.
    restored = (stop is not None and stop.restore_best and stop.best_state is not None
                and stop.best_epoch != trainer.epoch)
    unkept = any(isinstance(cb, AveragedEvaluation) and not cb.final for cb in trainer.callbacks)
    for name in ("val", "test"):
        pair = getattr(splits, name)
        if pair is not None and len(pair) and (name == "val" or config.train.evaluate_test):
            keys = (f"{name}_accuracy", f"{name}_loss")
            if restored or unkept or not all(k in final for k in keys):
                r = trainer.evaluate(pair)
                final_numbers = (r["accuracy"], r["loss"])
            else:
                final_numbers = (final[keys[0]], final[keys[1]])
            results[keys[0]], results[keys[1]] = final_numbers
    results.update(build.tta_results(config, trainer.model, splits))
    results["last_epoch"] = final
    if writer:
        atomic_write_json(run_dir / RESULTS, results)
        if pictures:
            _write_pictures(trainer, splits, run_dir)
    return results


class RunLock:
    """The run directory's lock, held for the life of a run: two runs never share a directory.

    ``fcntl.flock`` on ``RUN_DIR/.lock``, which records the holder's PID and host; the kernel
    releases it when the process ends, however it ends, so a killed run leaves no stale lock.
    A second ``descend train`` into the directory, or a ``--resume`` of a run that is still
    training, is refused with a ConfigError naming the holder. Under torchrun rank 0 takes
    it for all the run's processes (its data-parallel ranks and ``--nproc`` ensemble members)
    and tells them the outcome. If the run created the directory and fails before training
    starts (:meth:`started`), the directory is removed again. Where ``fcntl`` does not exist
    (Windows) runs are not locked.
    """

    NAME = ".lock"

    def __init__(self, run_dir: Path, resume: bool) -> None:
        self.run_dir, self.resume = Path(run_dir), resume
        self.fd: int | None = None
        self.created = False
        self._started = False

    def __enter__(self) -> "RunLock":
        rank, size = distributed.world()
        error: DescendError | None = None
        if rank == 0:
            try:
                self._acquire()
            except DescendError as exc:
                error = exc
        if size > 1:  # every process learns rank 0's outcome
            message = distributed.broadcast_string(str(error) if error is not None else "")
            if message and error is None:
                raise ConfigError(message)
        if error is not None:
            raise error
        return self

    def _acquire(self) -> None:
        self.created = not self.run_dir.exists()
        ensure_dir(self.run_dir)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return
        try:
            fd = os.open(self.run_dir / self.NAME, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise disk_error(exc, self.run_dir / self.NAME) or exc from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise ConfigError(f"{self.run_dir} is in use by a run that is still training ({holder}); wait for it "
                              "to finish, or choose another run directory") from None
        self.fd = fd
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        # Checked again under the lock: a run that started at the same moment may have won it.
        if not self.resume and (self.run_dir / CONFIG).exists():
            self._release()
            raise ConfigError(f"{self.run_dir} already holds a run; choose another run_dir or use "
                              f"--resume {self.run_dir}")
        if self.resume and not (self.run_dir / CONFIG).exists():
            if self.created:  # under our lock, so no other run is using it
                shutil.rmtree(self.run_dir, ignore_errors=True)
            self._release()
            raise CheckpointError(f"{self.run_dir} holds no run to resume (no {CONFIG})")

    def started(self) -> None:
        """Training has begun: from now on the directory is the run's, whatever happens."""
        self._started = True

    def _release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None

    def __exit__(self, kind, exc, tb) -> None:
        failed_start = kind is not None and not self._started
        if failed_start and self.created and self.fd is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        self._release()


def train(config: cfg.Config, run_dir: Path | None = None, resume: bool = False) -> tuple[Path, dict[str, Any]]:
    """Run ``descend train``: one network or an ensemble. Returns the run directory and results.

    Started by torchrun, this joins the process group first (gloo for ensembles, whose
    processes only wait for each other; NCCL for data-parallel CUDA runs) and leaves it
    at the end. Ranks other than 0 return the results of the network they helped to
    train, or ``{}`` for an ensemble.

    Ctrl-C (SIGINT) and SIGTERM end the run with :class:`~descend.errors.Interrupted`
    (exit status 130 / 143), whose message says what the run directory holds; so does a
    diverging loss (:class:`~descend.errors.Diverged`).
    """
    device = distributed.local_device(build.resolve_device(config.device))
    joined = distributed.init_from_env(device, timeout=config.train.dist_timeout,
                                       backend="gloo" if config.train.ensemble > 1 else None)
    finished = False
    try:
        if not (run_dir or config.run_dir):
            run_dir = Path(distributed.broadcast_string(str(default_run_dir())))  # one folder for every rank
        run_dir = Path(run_dir or config.run_dir)
        try:
            with _sigterm_interrupts():
                result = _train(config, run_dir, resume)
                finished = True
                return result
        except KeyboardInterrupt as exc:
            code, name = (143, "SIGTERM") if isinstance(exc, Terminated) else (130, "Ctrl-C")
            raise Interrupted(f"interrupted by {name}; {checkpoint_status(run_dir)}", code) from None
        except Diverged as exc:
            raise Diverged(f"{exc}; {checkpoint_status(run_dir)}") from None
    finally:
        if joined:
            distributed.teardown(wait=finished)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process was, like Ctrl-C's KeyboardInterrupt."""


@contextlib.contextmanager
def _sigterm_interrupts():
    """While training, SIGTERM (a scheduler's or ``kill``'s stop) interrupts like Ctrl-C, so the
    run ends with a message instead of silently; the previous handler comes back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def checkpoint_status(run_dir: Path) -> str:
    """What ``run_dir`` holds after a run stopped early, in words that are true of it."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        return "nothing was written (the run had not started)"
    checkpoints = sorted(run_dir.rglob(CHECKPOINT))
    if not checkpoints:
        return (f"no epoch had finished, so {run_dir} holds no checkpoint; `descend train --resume {run_dir}` "
                "starts the run again from its beginning")
    where = checkpoints[0] if len(checkpoints) == 1 else f"{len(checkpoints)} member checkpoints under {run_dir}"
    return f"the last finished epoch's checkpoint is kept ({where}); continue with `descend train --resume {run_dir}`"


def _train(config: cfg.Config, run_dir: Path, resume: bool) -> tuple[Path, dict[str, Any]]:
    rank = distributed.world()[0]
    if not resume and (run_dir / CONFIG).exists():
        raise ConfigError(f"{run_dir} already holds a run; choose another run_dir or use --resume {run_dir}")
    # Everything that can be wrong with the config or the data fails here, before the run
    # directory is created: the data are loaded and validated, and a throwaway network takes
    # one step on the first batch (the model takes the data, its layers run under amp, the
    # loss is finite). A failed start leaves nothing behind.
    splits = build.load_data(config)
    build.build_trainer(dataclasses.replace(config, quiet=True), splits, None, config.seed,
                        data_parallel=False).try_first_batch()
    with RunLock(run_dir, resume) as lock:
        if rank == 0 and not resume:
            atomic_write_text(run_dir / CONFIG, cfg.to_toml(config))
            atomic_write_json(run_dir / META, {"input_shape": list(splits.input_shape),
                                               "classes": list(splits.classes), "num_classes": splits.num_classes})
        lock.started()
        return _train_locked(config, splits, run_dir, resume)


def _train_locked(config: cfg.Config, splits: Splits, run_dir: Path, resume: bool) -> tuple[Path, dict[str, Any]]:
    rank, processes = distributed.world()
    members = config.train.ensemble
    if members == 1:
        return run_dir, train_one(config, splits, run_dir, config.seed, resume)

    start = time.perf_counter()
    own = config if rank == 0 else dataclasses.replace(config, quiet=True)
    for i in range(1 + rank, members + 1, processes):  # with P processes, rank r trains r+1, r+1+P, ...
        member_dir = run_dir / f"member-{i}"
        if resume and (member_dir / RESULTS).exists():
            continue
        if not own.quiet:
            print(f"ensemble member {i}/{members}", flush=True)
        train_one(own, splits, member_dir, config.seed + i - 1, resume, data_parallel=False)
    distributed.barrier(timeout=7 * 86400.0)  # members take long; a rank that dies is reported at once
    if rank != 0:
        return run_dir, {}
    member_results = [json.loads((run_dir / f"member-{i}" / RESULTS).read_text()) for i in range(1, members + 1)]
    results = evaluate_ensemble(config, splits, run_dir)
    results["seconds"] = time.perf_counter() - start
    results["train_seconds"] = sum(r["train_seconds"] for r in member_results)
    atomic_write_json(run_dir / RESULTS, results)
    return run_dir, results


# ------------------------------------------------------------------ evaluation
def read_config(run_dir: Path) -> cfg.Config:
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise CheckpointError(f"{run_dir} is not a descend run directory (no {CONFIG}); pass the folder `descend train` printed")
    return cfg.load_saved(path)


WEIGHT_FILES = {"last": WEIGHTS, "best": build.BEST_WEIGHTS}


def weights_file(run_dir: Path, weights: str = "last") -> Path:
    """The weights of a run: ``last`` (the final ones) or ``best`` (the best validation epoch's)."""
    if weights not in WEIGHT_FILES:
        raise ConfigError(f"weights {weights!r}: choose one of {', '.join(WEIGHT_FILES)}")
    path = Path(run_dir) / WEIGHT_FILES[weights]
    if weights == "best" and not path.is_file() and (Path(run_dir) / WEIGHTS).is_file():
        raise CheckpointError(f"{run_dir} has no {path.name}: it is written by runs with a validation set "
                              "(data.split = \"nndl\") and a val_* monitor; use --weights last")
    return path


def load_trained(config: cfg.Config, splits: Splits, run_dir: Path, weights: str = "last") -> Trainer:
    """A Trainer holding the final (or best) weights of the run in ``run_dir`` (for evaluation)."""
    trainer = build.build_trainer(dataclasses.replace(config, quiet=True), splits, None, config.seed, data_parallel=False)
    load_weights(weights_file(run_dir, weights), trainer.model)
    return trainer


def load_model(run_dir: Path, weights: str = "last") -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained model of a run directory (in eval mode, on the CPU) and its data description."""
    run_dir = Path(run_dir)
    top = run_dir if (run_dir / CONFIG).is_file() else run_dir.parent
    config = read_config(top)
    try:
        meta = json.loads((top / META).read_text())
    except (OSError, ValueError):
        raise CheckpointError(f"{top} lacks a readable {META}; was it written by descend train?") from None
    torch.manual_seed(config.seed)
    model = build.build_model(config, tuple(meta["input_shape"]), meta["num_classes"])
    load_weights(weights_file(run_dir, weights), model)
    return model.eval(), meta


def member_dirs(run_dir: Path) -> list[Path]:
    return sorted((p for p in Path(run_dir).glob("member-*") if p.is_dir()), key=lambda p: int(p.name.split("-")[1]))


def evaluate_ensemble(config: cfg.Config, splits: Splits, run_dir: Path, weights: str = "last") -> dict[str, Any]:
    """Each member's accuracy and the combined accuracy (average and vote) on val and test,
    and (``*_by_members``) the accuracy of the ensemble of the first k members, k = 1..N."""
    results: dict[str, Any] = {"members": []}
    parts = {name: getattr(splits, name) for name in ("val", "test") if getattr(splits, name) is not None}
    outputs: dict[str, list[torch.Tensor]] = {name: [] for name in parts}
    # data.tta: each member's softmax averaged over the views; its log stands in for the
    # logits, so the ensemble averages (or votes on) the members' test-time-augmented outputs
    tta_outputs: dict[str, list[torch.Tensor]] = {name: [] for name in parts}
    for member in member_dirs(run_dir):
        trainer = load_trained(config, splits, member, weights)
        entry = {"member": member.name}
        for name, pair in parts.items():
            logits = trainer.predict(pair.x)
            outputs[name].append(logits)
            entry[f"{name}_accuracy"] = float((logits.argmax(1) == pair.y).double().mean())
            if config.data.tta != "none":
                probs = tta_predict(trainer.model, pair.x, config.data.tta, padding=max(1, config.data.max_shift),
                                    batch_size=config.train.eval_batch_size)
                tta_outputs[name].append(probs.clamp_min(1e-30).log())
                entry[f"{name}_accuracy_tta"] = float((probs.argmax(1) == pair.y).double().mean())
        results["members"].append(entry)
    if not results["members"]:
        raise CheckpointError(f"{run_dir} holds no trained members (member-1, ...)")
    for name, pair in parts.items():
        for suffix, outs in (("", outputs[name]), ("_tta", tta_outputs[name])):
            if not outs:
                continue
            stacked = torch.stack(outs)
            for method in ("average", "vote"):
                acc = float((combine(stacked, method) == pair.y).double().mean())
                results[f"{name}_accuracy_{method}{suffix}"] = acc
            results[f"{name}_accuracy{suffix}"] = results[f"{name}_accuracy_{config.train.combine}{suffix}"]
            # The ensemble of the first k members, k = 1..N: what more members buy.
            results[f"{name}_accuracy{suffix}_by_members"] = [
                float((combine(stacked[:k], config.train.combine) == pair.y).double().mean())
                for k in range(1, len(stacked) + 1)]
    results["combine"] = config.train.combine
    return results


def evaluate(run_dir: Path, data_dir: str | None = None, tta: str | None = None,
             weights: str = "last") -> dict[str, Any]:
    """``descend evaluate``: accuracies of a finished run (or ensemble) on its data.

    ``tta`` (none | flip | five-crop | ten-crop) overrides the run's ``data.tta``: the
    accuracies with test-time augmentation are reported beside the plain ones.
    """
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    if data_dir:
        config.data.data_dir = data_dir
    if tta is not None:
        if tta not in cfg.CHOICES["data.tta"]:
            raise ConfigError(f"unknown test-time augmentation {tta!r}; choose one of {', '.join(cfg.CHOICES['data.tta'])}")
        config.data.tta = tta
    splits = build.load_data(config)
    if member_dirs(run_dir):
        return evaluate_ensemble(config, splits, run_dir, weights)
    trainer = load_trained(config, splits, run_dir, weights)
    results = {}
    for name in ("val", "test"):
        pair = getattr(splits, name)
        if pair is not None and len(pair):
            r = trainer.evaluate(pair)
            results[f"{name}_accuracy"], results[f"{name}_loss"] = r["accuracy"], r["loss"]
    results.update(build.tta_results(config, trainer.model, splits))
    return results
