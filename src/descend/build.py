"""From a config to the objects it describes: data, model, optimizer, schedule, Trainer.

The config flows one way, down: ``descend.cli`` reads it, this module turns each of its
keys into the object that implements it, and the Trainer runs them. Nothing here writes
files or reads a run directory (that is :mod:`descend.runs`).

    load_data(config)                         [data]: the data set and its split
    build_model(config, input_shape, classes) [model] (+ a Preprocess layer for data.preprocess)
    prepare_model(config, model, splits)      fit that layer on the training data; [init] (sec. 8.4)
    build_optimizer(config, model)            [optimizer] (train.decay_biases: param groups)
    build_scheduler(config, optimizer, n)     [schedule]
    build_augment(config, splits)             data.augment / flip / color_jitter
    build_sampler(config, splits, seed)       train.curriculum / emphasis / bagging (sec. 8.7.6)
    build_loss(config)                        train.loss
    build_trainer(config, splits, ...)        all of the above, callbacks and the Trainer
    tta_results(config, model, splits)        data.tta: accuracies with test-time augmentation
    resolve_device / resolve_amp              device = "auto", train.amp = "auto"
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from descend import config as cfg
from descend.data import Splits, expand_mnist, load_dataset
from descend.errors import ConfigError, DataError
from descend.nn.capabilities import image_convolutions
from descend.train import AveragedEvaluation, BestWeights, CSVLogger, EarlyStopping, TensorBoardLogger, Trainer, distributed
from descend.train.loggers import CSV, TENSORBOARD, flat_hparams, require_tensorboard

BEST_WEIGHTS = "best.safetensors"


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
        verify=d.verify,
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
    return wrap_model(config, _call("model", cls, **options), input_shape)


def build_optimizer(config: cfg.Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    from descend.optim import OPTIMIZERS

    params = optimizer_params(config, model)
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
    prepare_model(config, model, splits)  # preprocessing fitted on training data; [init]
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
        if t.eval_every != 1:
            raise ConfigError(f"train.early_stopping counts epochs without improvement, but train.eval_every = "
                              f"{t.eval_every} skips evaluations; set train.eval_every = 1")
        callbacks.append(EarlyStopping(monitor=t.monitor, patience=t.early_stopping))

    batch_step = None
    if t.tbptt:
        from descend.train.tbptt import TruncatedBPTT

        batch_step = TruncatedBPTT(t.tbptt)
    augment = build_augment(config, splits)
    sampler, sampler_callbacks = build_sampler(config, splits, seed)
    callbacks += sampler_callbacks
    # Outputs beside metrics.jsonl, appended last (callback state is checkpointed by position):
    # the best weights by validation (never selected on the test set), metrics.csv, TensorBoard.
    if "tensorboard" in t.log:
        require_tensorboard()  # before any run directory exists
    if run_dir is not None:
        if splits.val is not None and len(splits.val) and t.monitor.startswith("val"):
            callbacks.append(BestWeights(run_dir / BEST_WEIGHTS, monitor=t.monitor))
        callbacks.append(CSVLogger(run_dir / CSV))
        if "tensorboard" in t.log:
            callbacks.append(TensorBoardLogger(run_dir / TENSORBOARD, hparams=flat_hparams(config.to_dict())))
    if hasattr(scheduler, "monitor") and scheduler.monitor.startswith("val") and splits.val is None:
        raise ConfigError(f"schedule {config.schedule['name']!r} monitors {scheduler.monitor} but there is no "
                          "validation set; use data.split = \"nndl\" or schedule.monitor = \"train_loss\"")
    # Channels-last pays off for image convolutions on GPUs (tensor cores) and on CPUs too,
    # where oneDNN has NHWC kernels (benchmarks/trainer_overhead.py measures it).
    channels_last = t.channels_last == "on" or (t.channels_last == "auto" and bool(image_convolutions(model)))
    return Trainer(
        model,
        optimizer,
        splits,
        epochs=t.epochs,
        batch_size=t.batch_size,
        eval_batch_size=t.eval_batch_size,
        scheduler=scheduler,
        scheduler_interval=getattr(scheduler, "interval", "batch"),
        callbacks=callbacks,
        run_dir=run_dir,
        seed=seed,
        augment=augment,
        sampler=sampler,
        batch_step=batch_step,
        loss=build_loss(config),
        quiet=config.quiet,
        device=device,
        evaluate_test=t.evaluate_test,
        eval_every=t.eval_every,
        checkpoint=t.checkpoint,
        amp=resolve_amp(t.amp, device),
        channels_last=channels_last,
        clip_norm=t.clip_norm,
        nonfinite=t.nonfinite,
        sync_batchnorm=t.sync_batchnorm,
        data_parallel=data_parallel,
    )


# ----------------------------------------------------------------------------- model
def wrap_model(config: cfg.Config, model: nn.Module, input_shape: tuple[int, ...]) -> nn.Module:
    """``nn.Sequential(Preprocess, model)`` when ``data.preprocess`` is set, else ``model``.

    The preprocessing statistics are buffers of layer 0, so they are saved with the weights
    and ``descend evaluate`` / ``predict`` use the training set's statistics."""
    if config.data.preprocess == "none":
        return model
    from descend.data.preprocessing import Preprocess, with_preprocessing

    return with_preprocessing(model, Preprocess(config.data.preprocess, input_shape, eps=config.data.whiten_eps))


def _nonlinearity(config: cfg.Config) -> str:
    from descend.init import NONLINEARITIES
    from descend.models import MODELS

    if config.init.nonlinearity:
        return config.init.nonlinearity
    activation = config.model.get("activation")
    if activation is None:
        parameter = inspect.signature(MODELS[config.model["name"]].__init__).parameters.get("activation")
        activation = parameter.default if parameter is not None else None
    return activation if activation in NONLINEARITIES else "linear"


def prepare_model(config: cfg.Config, model: nn.Module, splits: Splits) -> None:
    """Fit the preprocessing layer on the training inputs (only those) and apply ``[init]``."""
    from descend.data.preprocessing import Preprocess

    first = model[0] if isinstance(model, nn.Sequential) and len(model) else None
    if isinstance(first, Preprocess):
        first.fit(splits.train.x)
    i = config.init
    if i.scheme == "default" and i.hidden_bias == 0 and i.output_bias == "zero":
        return  # the layers' own initialization, untouched
    from descend.init import apply_init, class_marginals

    output_bias = None
    if i.output_bias == "marginals":
        # Laplace smoothing (+1 per class) keeps log c finite for a class absent from a small subset.
        output_bias = class_marginals(splits.train.y, splits.num_classes, smoothing=1.0)
    batch = None
    if i.scheme == "lsuv":
        pick = torch.randperm(len(splits.train))[: i.lsuv_batch]
        batch = splits.train.x[pick]
    apply_init(model, i.scheme, i.gain or None, nonlinearity=_nonlinearity(config), sparse_k=i.sparse_k,
               hidden_bias=i.hidden_bias, output_bias=output_bias, data=batch)


def optimizer_params(config: cfg.Config, model: nn.Module):
    """``model.parameters()``, or param groups without weight decay on the biases when
    ``train.decay_biases = false`` (CS189: "try both ways and use validation")."""
    weight_decay = float(config.optimizer.get("weight_decay", 0.0) or 0.0)
    if config.train.decay_biases or weight_decay == 0:
        return model.parameters()
    from descend.optim import param_groups

    return param_groups(model, weight_decay=weight_decay, no_decay_on_bias=True)


def build_loss(config: cfg.Config):
    from descend.losses import get_loss

    return get_loss(config.train.loss)


# ----------------------------------------------------------------------------- data
def build_augment(config: cfg.Config, splits: Splits):
    """The training augmentation of ``data.augment``, ``data.flip`` and ``data.color_jitter``."""
    from descend.data import RandomShift
    from descend.data.transforms import AffineElastic, Compose, ElasticDistortion, PCAColorJitter, RandomAffine, RandomFlip

    d = config.data
    parts: list[Any] = []
    if d.augment == "shift":
        parts.append(RandomShift(d.max_shift))
    elif d.augment in ("affine", "elastic", "affine+elastic"):
        # affine: small rotations, scalings, shears, +-max_shift pixels; elastic: Simard et al.
        # (2003); both: one resampling along the sum of the two (Ciresan et al. 2012).
        rand_affine = RandomAffine(degrees=d.affine_rotation, scale=d.affine_scale, shear=d.affine_shear,
                                   translate=float(d.max_shift))
        elastic = ElasticDistortion(alpha=d.elastic_alpha, sigma=d.elastic_sigma)
        parts.append({"affine": rand_affine, "elastic": elastic,
                      "affine+elastic": AffineElastic(rand_affine, elastic)}[d.augment])
    if d.flip:
        parts.append(RandomFlip(0.5))
    if d.color_jitter > 0:
        channels = splits.input_shape[0]
        if channels != 3:
            raise ConfigError(f"data.color_jitter needs RGB images (3 channels); {d.dataset} has {channels}")
        parts.append(PCAColorJitter(d.color_jitter).fit(splits.train.x))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else Compose(*parts)


def _curriculum_scores(config: cfg.Config, splits: Splits, seed: int) -> torch.Tensor:
    path = config.train.curriculum_scores
    n = len(splits.train)
    if not path:
        from descend.train.curriculum import probe_scores

        return probe_scores(splits.train, seed=seed)
    try:
        scores = np.load(Path(path), allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"train.curriculum_scores: {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"train.curriculum_scores: {path} is not a readable .npy array ({exc})") from None
    if scores.shape != (n,) or scores.dtype.kind not in "fiu":
        raise DataError(f"train.curriculum_scores: {path} holds {scores.dtype} {scores.shape}; it needs one number "
                        f"per training example, shape ({n},) (after data.limit / data.expand)")
    return torch.from_numpy(scores.astype(np.float64))


def build_sampler(config: cfg.Config, splits: Splits, seed: int) -> tuple[Any, list[Any]]:
    """(sampler, extra callbacks) for ``train.curriculum``, ``train.emphasis`` or ``train.bagging``."""
    t = config.train
    chosen = [name for name, on in (("train.curriculum", t.curriculum != "none"),
                                    ("train.emphasis", t.emphasis != "none"), ("train.bagging", t.bagging)) if on]
    if len(chosen) > 1:
        raise ConfigError(f"{' and '.join(chosen)} each choose the training examples; use only one of them")
    if t.bagging:
        from descend.train.bagging import Bootstrap

        return Bootstrap(seed), []
    if t.curriculum != "none":
        from descend.train.curriculum import DeterministicCurriculum, StochasticCurriculum

        scores = _curriculum_scores(config, splits, seed)
        ramp = t.curriculum_ramp or max(1, t.epochs // 2)
        if t.curriculum == "deterministic":
            return DeterministicCurriculum(scores, start=0.25, ramp_epochs=ramp), []
        return StochasticCurriculum(scores, ramp_epochs=ramp), []
    if t.emphasis == "rare-class":
        from descend.train.curriculum import ClassBalanced

        return ClassBalanced(), []
    if t.emphasis != "none":
        from descend.train.curriculum import Emphasis

        emphasis = Emphasis(mode=t.emphasis, floor=t.emphasis_floor)
        return emphasis, [emphasis]  # as a callback too: its weights go into checkpoints
    return None, []


def tta_results(config: cfg.Config, model: nn.Module, splits: Splits) -> dict[str, float]:
    """``{val,test}_accuracy_tta``: accuracies with the softmax averaged over ``data.tta`` views."""
    if config.data.tta == "none":
        return {}
    from descend.data.transforms import tta_predict

    results = {}
    for name in ("val", "test"):
        pair = getattr(splits, name)
        if pair is not None and len(pair) and (name == "val" or config.train.evaluate_test):
            probs = tta_predict(model, pair.x, config.data.tta, padding=max(1, config.data.max_shift),
                                batch_size=config.train.eval_batch_size)
            results[f"{name}_accuracy_tta"] = float((probs.argmax(1) == pair.y).double().mean())
    return results
