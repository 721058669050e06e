"""From config keys to the strategy objects of sec. 8.4, 8.7.4-8.7.6 and the CS189 heuristics.

``descend.runs`` builds every run from a config; this module turns the keys of those
strategies into the objects the Trainer takes, so that ``runs`` only calls:

    wrap_model(config, model, input_shape)   data.preprocess: a Preprocess layer in front
    prepare_model(config, model, splits)     fit that layer on the training data; [init]
    optimizer_params(config, model)          train.decay_biases via descend.optim.param_groups
    build_augment(config, splits)            data.augment / flip / color_jitter
    build_sampler(config, splits, seed)      train.curriculum / emphasis / bagging
    build_loss(config)                       train.loss
    tta_results(config, model, splits)       data.tta: accuracies with test-time augmentation
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from descend import config as cfg
from descend.data.tensors import Splits
from descend.errors import ConfigError, DataError


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
