"""Per-layer learning rates and weight decay with or without biases (CS189 heuristics;
Deep Learning sec. 8.5 on per-parameter rates), as torch param-group dicts."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Mapping, Sequence

import torch

from descend.errors import ConfigError
from descend.optim._common import check_lr, check_nonnegative


def is_bias(name: str) -> bool:
    """A bias by name: the last component starts with "bias" (``fc.bias``, ``rnn.bias_ih_l0``)."""
    return name.rsplit(".", 1)[-1].startswith("bias")


def param_groups(
    model: torch.nn.Module,
    lr_by_pattern: Mapping[str, float] | None = None,
    weight_decay: float = 0.0,
    no_decay_on_bias: bool = True,
    no_decay_patterns: Sequence[str] = (),
) -> list[dict]:
    """Torch-style param groups with a learning rate per layer and selective weight decay.

    CS189: "Different learning rate for each layer of weights. Earlier layers have smaller
    gradients, need larger learning rate." and, on L2 regularization, "it's not clear
    whether penalizing the bias terms is bad or good ... try both ways and use validation".

    ``lr_by_pattern`` maps shell-style patterns on parameter names (``fnmatch``: ``"0.*"``,
    ``"features.*"``, ``"*.bias"``) to learning rates; a parameter takes the rate of the first
    pattern it matches, or the optimizer's default ``lr`` when none matches (its group then
    has no ``"lr"`` key). ``weight_decay`` goes to every parameter except biases (when
    ``no_decay_on_bias``) and names matching ``no_decay_patterns`` (e.g. ``"*norm*"``), which
    get 0. Whether the decay is coupled L2 or decoupled is the optimizer's choice
    (``decoupled_weight_decay``).

    Parameters with ``requires_grad=False`` are left out. Each group carries
    ``param_names``, which torch.optim keeps and the non-finite guard uses in its messages.
    A pattern that matches no parameter raises :class:`ConfigError` (it is usually a typo).

    Example::

        groups = param_groups(net, {"0.*": 0.1, "2.*": 0.03}, weight_decay=5e-4)
        opt = descend.optim.Momentum(groups, lr=0.01, momentum=0.9)
    """
    lr_by_pattern = dict(lr_by_pattern or {})
    for lr in lr_by_pattern.values():
        check_lr(lr)
    weight_decay = check_nonnegative("weight_decay", weight_decay)

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    used = set()
    groups: dict[tuple, dict] = {}
    for name, p in named:
        lr = None
        for pattern, rate in lr_by_pattern.items():
            if fnmatchcase(name, pattern):
                lr = float(rate)
                used.add(pattern)
                break
        exempt = (no_decay_on_bias and is_bias(name)) or any(fnmatchcase(name, pat) for pat in no_decay_patterns)
        wd = 0.0 if exempt else weight_decay
        key = (lr, wd)
        if key not in groups:
            groups[key] = {"params": [], "param_names": [], "weight_decay": wd}
            if lr is not None:
                groups[key]["lr"] = lr
        groups[key]["params"].append(p)
        groups[key]["param_names"].append(name)

    unused = [pat for pat in lr_by_pattern if pat not in used]
    if unused:
        sample = ", ".join(n for n, _ in named[:8])
        raise ConfigError(
            f"Learning-rate pattern(s) {unused} match no trainable parameter; "
            f"parameter names look like: {sample}{', ...' if len(named) > 8 else ''}"
        )
    if not groups:
        raise ConfigError("The model has no trainable parameters (all have requires_grad=False)")
    return list(groups.values())
