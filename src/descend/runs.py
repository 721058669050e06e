"""From a config to a finished run directory: what ``descend train`` and ``evaluate`` do.

``build(config)`` makes the data, model, optimizer, schedule and Trainer that a config
describes; ``train(config)`` runs it (or an ensemble of such runs) and leaves in the
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

import dataclasses
import inspect
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from descend import config as cfg
from descend import strategies
from descend.data import Splits, expand_mnist, load_dataset, tta_predict
from descend.errors import CheckpointError, ConfigError
from descend.io import atomic_write_json, atomic_write_text
from descend.train import AveragedEvaluation, EarlyStopping, Trainer, distributed, load_weights
from descend.train.ensemble import combine
from descend.train.trainer import CHECKPOINT, WEIGHTS

CONFIG = "config.toml"
META = "data.json"
RESULTS = "results.json"


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; anything else must be available."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device = {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device = {name!r} but no CUDA GPU is available; use device = \"cpu\" or \"auto\"")
    return device


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bfloat16 in hardware: a CUDA GPU that supports it, or a
    CPU whose oneDNN has bf16 instructions (AVX512-BF16 or AMX). Elsewhere bf16 is emulated
    and slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # a build without oneDNN's bf16 query
            return False
    return False


def resolve_amp(name: str, device: torch.device) -> str:
    """``train.amp``: ``auto`` -> bf16 where the device has it in hardware, else none."""
    if name == "auto":
        return "bf16" if native_bf16(device) else "none"
    return name


def load_data(config: cfg.Config) -> Splits:
    d = config.data
    splits = load_dataset(
        d.dataset,
        split=d.split,
        data_dir=d.data_dir or None,
        path=d.path or None,
        limit=d.limit or None,
        eval_limit=d.eval_limit or None,
    )
    if d.expand:
        splits = dataclasses.replace(splits, train=expand_mnist(splits.train, seed=config.seed))
    return splits


def _options(config_table: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config_table.items() if k != "name"}


def _call(kind: str, target: Any, *args: Any, **kwargs: Any) -> Any:
    """Construct a component, turning its validation errors into ConfigErrors that name it."""
    try:
        return target(*args, **kwargs)
    except ConfigError as exc:
        raise ConfigError(f"[{kind}] {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[{kind}] invalid options: {exc}") from None


def build_model(config: cfg.Config, input_shape: tuple[int, ...], num_classes: int) -> torch.nn.Module:
    from descend.models import MODELS

    cls = MODELS[config.model["name"]]
    options = _options(config.model)
    accepted = inspect.signature(cls.__init__).parameters
    automatic = {"in_channels": input_shape[0], "image_size": input_shape[-1], "num_classes": num_classes}
    options.update({k: v for k, v in automatic.items() if k in accepted})
    return strategies.wrap_model(config, _call("model", cls, **options), input_shape)


def build_optimizer(config: cfg.Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    from descend.optim import OPTIMIZERS

    params = strategies.optimizer_params(config, model)
    return _call("optimizer", OPTIMIZERS[config.optimizer["name"]], params, **_options(config.optimizer))


def build_scheduler(config: cfg.Config, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    from descend.optim import SCHEDULES

    total = max(1, steps_per_epoch * config.train.epochs)
    return _call(
        "schedule",
        SCHEDULES[config.schedule["name"]],
        optimizer,
        total_steps=total,
        steps_per_epoch=steps_per_epoch,
        **_options(config.schedule),
    )


def build_trainer(config: cfg.Config, splits: Splits, run_dir: Path | None, seed: int,
                  data_parallel: bool | None = None) -> Trainer:
    """Model, optimizer, schedule, callbacks and Trainer for one network of the config.

    ``data_parallel``: None trains data-parallel if a process group is initialized,
    False trains in this process alone.
    """
    torch.manual_seed(seed)  # the model's initial weights
    device = distributed.local_device(resolve_device(config.device))
    model = build_model(config, splits.input_shape, splits.num_classes)
    strategies.prepare_model(config, model, splits)  # preprocessing fitted on training data; [init]
    optimizer = build_optimizer(config, model)
    t = config.train
    steps_per_epoch = -(-len(splits.train) // t.batch_size)
    scheduler = build_scheduler(config, optimizer, steps_per_epoch)

    callbacks: list[Any] = []
    if t.average != "none":
        from descend.optim import PolyakAverage

        averager = PolyakAverage(model, mode=t.average, decay=t.ema_decay, include_buffers=True)
        callbacks.append(AveragedEvaluation(averager))
    if t.early_stopping:
        if splits.val is None and t.monitor.startswith("val"):
            raise ConfigError("train.early_stopping needs a validation set; use data.split = \"nndl\"")
        callbacks.append(EarlyStopping(monitor=t.monitor, patience=t.early_stopping))
    if t.clip_norm > 0:
        from descend.optim import register_grad_clipping

        register_grad_clipping(optimizer, max_norm=t.clip_norm)

    batch_step = None
    if t.tbptt:
        from descend.train.tbptt import TruncatedBPTT

        batch_step = TruncatedBPTT(t.tbptt)
    augment = strategies.build_augment(config, splits)
    sampler, sampler_callbacks = strategies.build_sampler(config, splits, seed)
    callbacks += sampler_callbacks
    # Channels-last pays off for convolutions on GPUs (tensor cores) and on CPUs too, where
    # oneDNN's NHWC kernels train Nielsen's network ~1.3x faster (benchmarks/trainer_overhead.py).
    has_conv = any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    channels_last = t.channels_last == "on" or (t.channels_last == "auto" and has_conv)
    return Trainer(
        model,
        optimizer,
        splits,
        epochs=t.epochs,
        batch_size=t.batch_size,
        eval_batch_size=t.eval_batch_size,
        scheduler=scheduler,
        callbacks=callbacks,
        run_dir=run_dir,
        seed=seed,
        augment=augment,
        sampler=sampler,
        batch_step=batch_step,
        loss=strategies.build_loss(config),
        quiet=config.quiet,
        device=device,
        evaluate_test=t.evaluate_test,
        checkpoint=t.checkpoint,
        amp=resolve_amp(t.amp, device),
        channels_last=channels_last,
        sync_batchnorm=t.sync_batchnorm,
        data_parallel=data_parallel,
    )


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
    first_conv = next((m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d)), None)
    if first_conv is not None:
        from descend.viz import save_filters

        save_filters(first_conv, run_dir / "filters.png", title="first-layer filters")
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
        run_dir.mkdir(parents=True, exist_ok=True)
    trainer = build_trainer(config, splits, run_dir, seed, data_parallel=data_parallel)
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
    # After training the model holds its final weights (averaged / best, if so configured):
    # report those, not the last epoch's raw numbers.
    for name in ("val", "test"):
        pair = getattr(splits, name)
        if pair is not None and len(pair) and (name == "val" or config.train.evaluate_test):
            r = trainer.evaluate(pair)
            results[f"{name}_accuracy"], results[f"{name}_loss"] = r["accuracy"], r["loss"]
    results.update(strategies.tta_results(config, trainer.model, splits))
    results["last_epoch"] = final
    if writer:
        atomic_write_json(run_dir / RESULTS, results)
        if pictures:
            _write_pictures(trainer, splits, run_dir)
    return results


def train(config: cfg.Config, run_dir: Path | None = None, resume: bool = False) -> tuple[Path, dict[str, Any]]:
    """Run ``descend train``: one network or an ensemble. Returns the run directory and results.

    Started by torchrun, this joins the process group first (gloo for ensembles, whose
    processes only wait for each other; NCCL for data-parallel CUDA runs) and leaves it
    at the end. Ranks other than 0 return the results of the network they helped to
    train, or ``{}`` for an ensemble.
    """
    device = distributed.local_device(resolve_device(config.device))
    joined = distributed.init_from_env(device, timeout=config.train.dist_timeout,
                                       backend="gloo" if config.train.ensemble > 1 else None)
    try:
        return _train(config, run_dir, resume)
    finally:
        if joined:
            distributed.teardown()


def _train(config: cfg.Config, run_dir: Path | None, resume: bool) -> tuple[Path, dict[str, Any]]:
    rank, processes = distributed.world()
    if not (run_dir or config.run_dir):
        run_dir = Path(distributed.broadcast_string(str(default_run_dir())))  # one folder for every rank
    run_dir = Path(run_dir or config.run_dir)
    if not resume and (run_dir / CONFIG).exists():
        raise ConfigError(f"{run_dir} already holds a run; choose another run_dir or use --resume {run_dir}")
    # Everything that can be wrong with the config or the data fails here, before the run
    # directory is created: a failed start leaves nothing behind.
    splits = load_data(config)
    build_trainer(config, splits, None, config.seed, data_parallel=False)
    distributed.barrier()  # every rank has looked at run_dir before rank 0 writes there
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / CONFIG, cfg.to_toml(config))
        atomic_write_json(run_dir / META, {"input_shape": list(splits.input_shape), "classes": list(splits.classes),
                                           "num_classes": splits.num_classes})
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


def load_trained(config: cfg.Config, splits: Splits, run_dir: Path) -> Trainer:
    """A Trainer holding the final weights of the run in ``run_dir`` (for evaluation)."""
    trainer = build_trainer(dataclasses.replace(config, quiet=True), splits, None, config.seed, data_parallel=False)
    load_weights(run_dir / WEIGHTS, trainer.model)
    return trainer


def load_model(run_dir: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained model of a run directory (in eval mode, on the CPU) and its data description."""
    run_dir = Path(run_dir)
    top = run_dir if (run_dir / CONFIG).is_file() else run_dir.parent
    config = read_config(top)
    try:
        meta = json.loads((top / META).read_text())
    except (OSError, ValueError):
        raise CheckpointError(f"{top} lacks a readable {META}; was it written by descend train?") from None
    torch.manual_seed(config.seed)
    model = build_model(config, tuple(meta["input_shape"]), meta["num_classes"])
    load_weights(run_dir / WEIGHTS, model)
    return model.eval(), meta


def member_dirs(run_dir: Path) -> list[Path]:
    return sorted((p for p in Path(run_dir).glob("member-*") if p.is_dir()), key=lambda p: int(p.name.split("-")[1]))


def evaluate_ensemble(config: cfg.Config, splits: Splits, run_dir: Path) -> dict[str, Any]:
    """Each member's accuracy and the combined accuracy (average and vote) on val and test,
    and (``*_by_members``) the accuracy of the ensemble of the first k members, k = 1..N."""
    results: dict[str, Any] = {"members": []}
    parts = {name: getattr(splits, name) for name in ("val", "test") if getattr(splits, name) is not None}
    outputs: dict[str, list[torch.Tensor]] = {name: [] for name in parts}
    # data.tta: each member's softmax averaged over the views; its log stands in for the
    # logits, so the ensemble averages (or votes on) the members' test-time-augmented outputs
    tta_outputs: dict[str, list[torch.Tensor]] = {name: [] for name in parts}
    for member in member_dirs(run_dir):
        trainer = load_trained(config, splits, member)
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


def evaluate(run_dir: Path, data_dir: str | None = None, tta: str | None = None) -> dict[str, Any]:
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
    splits = load_data(config)
    if member_dirs(run_dir):
        return evaluate_ensemble(config, splits, run_dir)
    trainer = load_trained(config, splits, run_dir)
    results = {}
    for name in ("val", "test"):
        pair = getattr(splits, name)
        if pair is not None and len(pair):
            r = trainer.evaluate(pair)
            results[f"{name}_accuracy"], results[f"{name}_loss"] = r["accuracy"], r["loss"]
    results.update(strategies.tta_results(config, trainer.model, splits))
    return results
