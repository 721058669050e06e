"""Run configurations: TOML files validated against a schema.

A config has top-level keys and six tables::

    seed = 0
    run_dir = ""                   # "" -> runs/<date-time>
    device = "auto"                # "auto" (CUDA if present, else CPU), "cpu", "cuda", "cuda:N"

    [data]      dataset, split, data_dir, path, limit, eval_limit, augment, max_shift, expand
    [model]     name = "nielsen", then the model's own options (conv, hidden, dropout, ...)
    [optimizer] name = "nesterov", then the optimizer's hyperparameters (lr, momentum, ...)
    [schedule]  name = "onecycle", then the schedule's options
    [train]     epochs, batch_size, eval_batch_size, early_stopping, average, ...
    [init]      scheme, gain, nonlinearity, sparse_k, hidden_bias, output_bias, lsuv_batch

``init = "orthogonal"`` is short for ``[init] scheme = "orthogonal"`` (sec. 8.4 schemes of
``descend.init``; "default" keeps each layer's own initialization).

``optimizer = "adam"`` (a string) is short for ``[optimizer] name = "adam"``; the same
for ``model`` and ``schedule``. The fixed tables are dataclasses below; the options of
a model, optimizer or schedule are checked against the signature of its constructor,
so every class in ``descend.models.MODELS`` / ``descend.optim.OPTIMIZERS`` is usable
by name. Unknown keys, wrong types and out-of-range values raise ConfigError naming
the key and what is allowed (with a "did you mean" for typos); so do integers that do
not fit in 64 bits (TOML's integers) and NaN anywhere. A config file that is empty,
unreadable or not UTF-8 text is a ConfigError naming the file, never the default run.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from descend.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class DataConfig:
    dataset: str = "mnist"
    split: str = "nndl"
    data_dir: str = ""
    path: str = ""
    limit: int = 0
    eval_limit: int = 0
    augment: str = "affine"  # none | shift | affine | elastic | affine+elastic (descend.data.transforms)
    max_shift: int = 2
    affine_rotation: float = 10.0  # augment = "affine": rotations up to +-degrees
    affine_scale: float = 0.1  # ... scalings by a factor in [1 - s, 1 + s]
    affine_shear: float = 10.0  # ... shears up to +-degrees (translations: max_shift pixels)
    elastic_alpha: float = 34.0  # augment = "elastic" (or "affine+elastic"): displacement scale (Simard et al.)
    elastic_sigma: float = 4.0  # ... smoothness (Gaussian width, pixels)
    expand: bool = False
    flip: bool = False  # random left-right mirroring (not for digits)
    color_jitter: float = 0.0  # AlexNet PCA colour jitter std (0.1 in the paper); 0: off
    tta: str = "none"  # test-time augmentation: none | flip | five-crop | ten-crop
    verify: bool = True  # check MNIST files against the published content's SHA-256; false: accept modified files
    preprocess: str = "none"  # none | center | standardize | pca | zca, fitted on training data
    whiten_eps: float = 0.01  # added to variances / eigenvalues by preprocess


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int = 1000
    early_stopping: int = 0
    monitor: str = "val_accuracy"
    average: str = "none"
    ema_decay: float = 0.999
    clip_norm: float = 0.0
    ensemble: int = 1
    combine: str = "average"
    evaluate_test: bool = True
    eval_every: int = 1  # epochs between evaluations (and after the last); 0: after the last epoch only
    checkpoint: bool = True
    amp: str = "none"  # mixed precision of the training forward pass: none | bf16 | fp16 | auto (bf16 if native)
    channels_last: str = "auto"  # auto (on for models with convolutions) | on | off
    sync_batchnorm: bool = False  # data-parallel: global-batch statistics instead of per-rank
    dist_timeout: float = 300.0  # seconds a collective waits for the other processes
    loss: str = "cross-entropy"  # cross-entropy | sigmoid-cross-entropy | quadratic (descend.losses)
    decay_biases: bool = True  # false: the optimizer's weight_decay spares the biases (CS189)
    bagging: bool = False  # each (ensemble) network trains on its own bootstrap resample
    curriculum: str = "none"  # none | deterministic | stochastic (descend.train.curriculum)
    curriculum_scores: str = ""  # .npy of one difficulty per training example; "": a linear probe's loss
    curriculum_ramp: int = 0  # epochs until all data is in use; 0: half of the epochs
    emphasis: str = "none"  # none | loss | misclassified | rare-class
    emphasis_floor: float = 0.2  # the smallest sampling weight, relative to the mean
    tbptt: int = 0  # truncated BPTT: time steps per chunk (recurrent models); 0: full BPTT
    nonfinite: str = "off"  # a NaN/inf gradient: off (not checked) | skip (the step) | raise (stop training)
    log: list[str] = field(default_factory=list)  # extra logs beside metrics.jsonl/.csv: ["tensorboard"]


@dataclass
class InitConfig:
    scheme: str = "default"  # descend.init.SCHEMES
    gain: float = 0.0  # 0: the scheme's gain for the nonlinearity
    nonlinearity: str = ""  # "": the model's activation option, if it has one, else linear
    sparse_k: int = 15
    hidden_bias: float = 0.0  # 0.1 for ReLU units (sec. 8.4)
    output_bias: str = "zero"  # zero | marginals (softmax(b) = class frequencies)
    lsuv_batch: int = 256  # training examples LSUV measures variances on


@dataclass
class Config:
    seed: int = 0
    run_dir: str = ""
    device: str = "auto"
    quiet: bool = False
    data: DataConfig = field(default_factory=DataConfig)
    # The defaults here equal configs/default.toml (a test holds them together).
    model: dict[str, Any] = field(default_factory=lambda: {
        "name": "nielsen", "conv": [16, 32, 64], "convs_per_pool": 2, "kernel_size": 3, "padding": 1,
        "hidden": [512], "dropout": 0.25, "batch_norm": True, "activation": "relu"})
    optimizer: dict[str, Any] = field(default_factory=lambda: {
        "name": "nesterov-reformulated", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0005})
    schedule: dict[str, Any] = field(default_factory=lambda: {"name": "onecycle"})
    train: TrainConfig = field(default_factory=TrainConfig)
    init: InitConfig = field(default_factory=InitConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Allowed values and ranges of the fixed keys; checked after types.
CHOICES = {
    "data.split": ("nndl", "standard"),
    "data.augment": ("none", "shift", "affine", "elastic", "affine+elastic"),
    "train.average": ("none", "ema", "uniform"),
    "train.combine": ("average", "vote"),
    "train.amp": ("none", "bf16", "fp16", "auto"),
    "train.nonfinite": ("off", "skip", "raise"),
    "train.log": ("tensorboard",),
    "train.channels_last": ("auto", "on", "off"),
    "data.preprocess": ("none", "center", "standardize", "pca", "zca"),
    "data.tta": ("none", "flip", "five-crop", "ten-crop"),
    "train.loss": ("cross-entropy", "sigmoid-cross-entropy", "quadratic"),
    "train.curriculum": ("none", "deterministic", "stochastic"),
    "train.emphasis": ("none", "loss", "misclassified", "rare-class"),
    "init.scheme": ("default", "uniform", "normalized", "lecun", "lecun-uniform", "he", "he-uniform",
                    "orthogonal", "delta-orthogonal", "sparse", "lsuv"),
    "init.nonlinearity": ("", "linear", "sigmoid", "tanh", "relu", "leaky_relu", "selu"),
    "init.output_bias": ("zero", "marginals"),
}
# The largest seed: per-epoch generators are seeded with ((seed * 1_000_003 + epoch) * 7
# + stream) and data-parallel ranks with that times 10_007 plus the rank, which must stay
# below 2**64 (torch.manual_seed) for every ensemble member (seed + 999) and epoch.
SEED_MAX = 2**27 - 1
INT64 = (-(2**63), 2**63 - 1)
RANGES = {  # key: (low, high), inclusive
    "seed": (0, SEED_MAX),
    "data.limit": (0, math.inf),
    "data.eval_limit": (0, math.inf),
    "data.max_shift": (0, 27),
    "data.affine_rotation": (0.0, 180.0),
    "data.affine_scale": (0.0, 0.9),
    "data.affine_shear": (0.0, 60.0),
    "data.elastic_alpha": (0.0, 1000.0),
    "data.elastic_sigma": (0.1, 100.0),
    "train.epochs": (0, 100_000),
    "train.batch_size": (1, 1 << 20),
    "train.eval_every": (0, 100_000),
    "train.eval_batch_size": (1, 1 << 20),
    "train.early_stopping": (0, 100_000),
    "train.ema_decay": (0.0, 1.0),
    "train.clip_norm": (0.0, math.inf),
    "train.ensemble": (1, 1000),
    "train.dist_timeout": (1.0, 7 * 86400.0),
    "data.color_jitter": (0.0, 10.0),
    "data.whiten_eps": (0.0, math.inf),
    "train.curriculum_ramp": (0, 100_000),
    "train.emphasis_floor": (0.001, 1.0),
    "train.tbptt": (0, 1 << 20),
    "init.gain": (0.0, 1000.0),
    "init.sparse_k": (1, 1 << 20),
    "init.hidden_bias": (-10.0, 10.0),
    "init.lsuv_batch": (2, 1 << 20),
}


def _suggest(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{hint}; allowed: {', '.join(sorted(allowed))}"


def _type_name(t: Any) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(t, str(t))


def check_value(key: str, value: Any, expected: Any) -> Any:
    """Check ``value`` against the type of a default value/annotation; return it (ints promoted to float)."""
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected in (int, float, str, bool):
        if isinstance(value, bool) and expected is not bool or not isinstance(value, expected):
            raise ConfigError(f"{key} must be {_type_name(expected)}, got {value!r}")
    if expected == list[str] and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise ConfigError(f"{key} must be a list of strings, e.g. [\"tensorboard\"], got {value!r}")
    return value


def _check_range(key: str, value: Any) -> None:
    if key in RANGES:
        low, high = RANGES[key]
        if not low <= value <= high:
            raise ConfigError(f"{key} = {value!r} is out of range; it must be in [{low}, {high}]")


def check_numbers(key: str, value: Any) -> None:
    """Refuse integers beyond 64 bits and NaN anywhere in ``value`` (tables and lists included)."""
    if isinstance(value, bool):
        return
    if isinstance(value, int) and not INT64[0] <= value <= INT64[1]:
        raise ConfigError(f"{key} = {value} does not fit in a 64-bit integer (TOML's integers); use a smaller value")
    if isinstance(value, float) and math.isnan(value):
        raise ConfigError(f"{key} = nan is not a number; give a finite value")
    if isinstance(value, dict):
        for k, v in value.items():
            check_numbers(f"{key}.{k}" if key else str(k), v)
    if isinstance(value, list):
        for i, v in enumerate(value):
            check_numbers(f"{key}[{i}]", v)


def _fill_dataclass(cls: type, values: dict[str, Any], prefix: str) -> Any:
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"unknown config key {full!r}" + _suggest(key, names))
        kwargs[key] = check_value(full, value, hints[key])
        for item in value if isinstance(value, list) else [value]:
            if full in CHOICES and item not in CHOICES[full]:
                raise ConfigError(f"{full} = {value!r} is not allowed; choose one of {', '.join(CHOICES[full])}")
        _check_range(full, kwargs[key])
    return cls(**kwargs)


def _named_table(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return {"name": value}
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise ConfigError(f"{key} must be a name (string) or a table with a 'name' key, got {value!r}")
    return dict(value)


def from_dict(values: dict[str, Any]) -> Config:
    """Validate a nested dict (as read from TOML) into a Config."""
    if not isinstance(values, dict):
        raise ConfigError(f"a config must be a table of keys, got {values!r:.60}")
    check_numbers("", values)
    top = {f.name: f for f in dataclasses.fields(Config)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in top:
            raise ConfigError(f"unknown config key {key!r}" + _suggest(key, list(top)))
        if key == "data":
            kwargs[key] = _fill_dataclass(DataConfig, _table(key, value), "data.")
        elif key == "train":
            kwargs[key] = _fill_dataclass(TrainConfig, _table(key, value), "train.")
        elif key == "init":
            value = {"scheme": value} if isinstance(value, str) else value
            kwargs[key] = _fill_dataclass(InitConfig, _table(key, value), "init.")
        elif key in ("model", "optimizer", "schedule"):
            kwargs[key] = _named_table(key, value)
        else:
            kwargs[key] = check_value(key, value, get_type_hints(Config)[key])
            _check_range(key, kwargs[key])
    config = Config(**kwargs)
    check_device(config.device)
    validate_components(config)
    return config


def check_device(name: str) -> None:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (whether the GPU exists is checked when a run starts)."""
    kind, _, index = name.partition(":")
    if kind in ("auto", "cpu") and not index or kind == "cuda" and (not index or index.isdigit()):
        return
    raise ConfigError(f"device = {name!r} is not a device; use auto, cpu, cuda or cuda:N")


def _table(key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"[{key}] must be a table of options, got {value!r}")
    return value


def load(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """The default run, with a TOML file's values and then ``key=value`` overrides on top.

    A file states what differs from the default run (``descend/configs/default.toml``):
    its tables are merged into the default's key by key, except that a ``model``,
    ``optimizer`` or ``schedule`` naming another class than the default's replaces it
    whole (another class has other options). ``path`` may also name a bundled config
    (``mnist-fast``, ``mnist-ensemble``, ...).
    """
    values = default_values()
    if path is not None:
        for key, value in read_toml(path).items():
            base = values.get(key)
            same_class = (isinstance(value, dict) and isinstance(base, dict)
                          and value.get("name", base.get("name")) == base.get("name"))
            values[key] = {**base, **value} if same_class else value
    for item in overrides:
        apply_override(values, item)
    return from_dict(values)


# Keys every run's config.toml has had (to_toml writes all of Config's fields).
SAVED_KEYS = ("seed", "run_dir", "device", "data", "model", "optimizer", "schedule", "train")


def load_saved(path: str | Path, overrides: list[str] = ()) -> Config:
    """The resolved config a run directory saved (``config.toml``), with ``key=value`` overrides.

    Unlike ``load``, it is not merged into the current default run: a run made when the
    default was another network rebuilds its own network on resume and evaluate (options
    its ``[model]`` table leaves out take the model constructor's defaults, as they did).
    """
    values = read_toml(path, saved=True)
    missing = [key for key in SAVED_KEYS if key not in values]
    if missing:
        raise ConfigError(
            f"{path} lacks {', '.join(missing)}; a run's saved config is complete, so this one is damaged "
            "or was not written by descend train (restore it, or start a new run)"
        )
    for item in overrides:
        apply_override(values, item)
    return from_dict(values)


def bundled() -> list[str]:
    """Names of the configs that come with descend (``descend train --config NAME``)."""
    from importlib.resources import files

    return sorted(p.name[:-5] for p in files("descend").joinpath("configs").iterdir() if p.name.endswith(".toml"))


def _parse(text: str, origin: str | Path) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        raise ConfigError(f"{origin} is not valid TOML: {exc}") from None


def _bundled(name: str) -> dict[str, Any]:
    from importlib.resources import files

    return _parse(files("descend").joinpath(f"configs/{name}.toml").read_text(encoding="utf-8"), f"{name}.toml")


def read_toml(path: str | Path, saved: bool = False) -> dict[str, Any]:
    """A TOML file as a dict; ``path`` may be a bundled config's name (``mnist-fast``).

    A file that cannot be read, is not UTF-8 text, is not TOML or sets nothing (empty,
    only comments) is a ConfigError naming it (``saved``: a run's ``config.toml``, for
    the message).
    """
    path = Path(path)
    if path.is_file():
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}; check its permissions") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"config file {path} is not UTF-8 text (byte {exc.start}: {data[exc.start:exc.start + 1]!r}); "
                "a config is a TOML text file: save it as UTF-8"
            ) from None
        values = _parse(text, path)
        if not values:
            fix = ("a run's saved config lists every key, so this one is damaged: restore it or start a new run"
                   if saved else "write the keys that differ from the default run, or leave out --config to "
                   "train the default run")
            raise ConfigError(f"config file {path} is empty (it sets no key); {fix}")
        return values
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder; pass a .toml file (or a run directory to --resume)")
    name = path.name[: -len(".toml")] if path.name.endswith(".toml") else path.name  # "mnist-99.5" has a dot
    if path.parent == Path(".") and name in bundled():
        return _bundled(name)
    raise ConfigError(f"config file {path} does not exist; bundled configs: {', '.join(bundled())}")


def default_values() -> dict[str, Any]:
    """The bundled default config (``descend/configs/default.toml``) as a dict."""
    return _bundled("default")


def parse_value(text: str) -> Any:
    """A TOML value (``3``, ``0.1``, ``true``, ``[20, 40]``, ``"x"``); bare words are strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except (tomllib.TOMLDecodeError, RecursionError):
        return text


def apply_override(values: dict[str, Any], item: str) -> None:
    """Apply ``section.key=value`` to the nested dict ``values``."""
    if "=" not in item:
        raise ConfigError(f"--set expects key=value (e.g. train.epochs=3), got {item!r}")
    key, text = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set key {key!r} is malformed; use e.g. optimizer.lr=0.05")
    node = values
    for part in parts[:-1]:
        child = node.get(part)
        if isinstance(child, str) and part in ("model", "optimizer", "schedule"):
            child = {"name": child}
        elif isinstance(child, str) and part == "init":
            child = {"scheme": child}
        if child is None:
            child = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part!r} is not a table")
        node[part] = child
        node = child
    node[parts[-1]] = parse_value(text.strip())


# -------------------------------------------------------------- components
def _components() -> dict[str, dict[str, Any]]:
    from descend.models import MODELS
    from descend.optim import OPTIMIZERS, SCHEDULES

    return {"model": MODELS, "optimizer": OPTIMIZERS, "schedule": SCHEDULES}


# Filled in by the builder, never by the user.
AUTOMATIC = {
    "model": ("in_channels", "image_size", "num_classes"),
    "optimizer": ("params",),
    "schedule": ("optimizer", "total_steps", "steps_per_epoch"),
}


def component_options(kind: str, name: str) -> dict[str, inspect.Parameter]:
    """The user-settable options of a model/optimizer/schedule, from its signature."""
    table = _components()[kind]
    if name not in table:
        raise ConfigError(f"unknown {kind} {name!r}" + _suggest(name, list(table)))
    target = table[name]
    signature = inspect.signature(target.__init__ if inspect.isclass(target) else target)
    return {
        p.name: p
        for p in signature.parameters.values()
        if p.name != "self" and p.name not in AUTOMATIC[kind] and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def validate_components(config: Config) -> None:
    """Check model/optimizer/schedule names and option names and types."""
    for kind in ("model", "optimizer", "schedule"):
        table = getattr(config, kind)
        options = component_options(kind, table["name"])
        for key, value in table.items():
            if key == "name":
                continue
            if key not in options:
                raise ConfigError(
                    f"{kind} {table['name']!r} has no option {key!r}" + _suggest(key, list(options))
                )
            default = options[key].default
            if default is not inspect.Parameter.empty and default is not None:
                expected = type(default) if not isinstance(default, (tuple, list)) else list
                if expected is list:
                    if not isinstance(value, list):
                        raise ConfigError(f"{kind}.{key} must be a list, got {value!r}")
                else:
                    table[key] = check_value(f"{kind}.{key}", value, expected)
                    if expected is float and math.isfinite(default) and not math.isfinite(table[key]):
                        raise ConfigError(f"{kind}.{key} = {value!r} must be a finite number")


# -------------------------------------------------------------- writing
def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if not (isinstance(value, float) and not math.isfinite(value)) else ("nan" if value != value else ("inf" if value > 0 else "-inf"))
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ConfigError(f"cannot write {value!r} to TOML")


def to_toml(config: Config) -> str:
    """The config as TOML text that :func:`load` reads back to an equal Config."""
    d = config.to_dict()
    lines = [f"{k} = {_toml_value(v)}" for k, v in d.items() if not isinstance(v, dict)]
    for section in ("data", "model", "optimizer", "schedule", "train", "init"):
        lines.append(f"\n[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in d[section].items()]
    return "\n".join(lines) + "\n"
