"""Supervised pretraining, Deep Learning sec. 8.7.4, and auxiliary heads, sec. 8.7.5.

"Strategies that involve training simple models on simple tasks before confronting the
challenge of training the desired model to perform the desired task are collectively
known as pretraining." Every stage below is a run of the one :class:`~descend.train.Trainer`.

* :func:`greedy_supervised_pretraining` (Bengio et al. 2007, fig. 8.7): train a shallow
  MLP (first hidden block + an output layer); keep the hidden block, discard the output
  layer, stack the next block and a fresh output layer on top, train again; repeat; then
  fine-tune all layers jointly.
* :func:`transfer` (Yosinski et al. 2014): initialize a network with the first k layers of
  another one trained on a related task, optionally frozen (:func:`freeze`).
* :func:`fitnets` (Romero et al. 2015): a thin, deep student learns, through a regressor,
  to predict the middle layer of a wide, shallow teacher ("hints"); then it learns the task.
* :class:`AuxiliaryHeads` (GoogLeNet, deeply-supervised nets): "extra copies of the output
  that are attached to the intermediate hidden layers ... trained to perform the same task
  as the primary output ... to ensure that the lower layers receive a large gradient";
  their weight in the loss decays, and they are discarded after training.

Networks are ``nn.Sequential`` stacks of blocks, so "the first k layers" and "the middle
layer" are indices.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from descend.data.tensors import Splits, TensorPair
from descend.errors import ConfigError, ShapeError

OptimizerFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]


def freeze(module: nn.Module) -> nn.Module:
    """Stop training ``module``: ``requires_grad = False`` on its parameters (build the
    optimizer afterwards, or use ``descend.optim.param_groups``, which skips them)."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def unfreeze(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(True)
    return module


def trainable(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def _as_splits(data: Splits | TensorPair | tuple) -> Splits:
    if isinstance(data, Splits):
        return data
    if isinstance(data, TensorPair):
        return Splits(data)
    return Splits(*data)


def _train(model: nn.Module, make_optimizer: OptimizerFactory, data: Splits, epochs: int, stage: str,
           trainer_options: dict[str, Any], **overrides) -> list[dict]:
    from descend.train.trainer import Trainer

    options = {"quiet": True, "checkpoint": False, **trainer_options, **overrides}
    params = trainable(model)
    if not params:
        raise ConfigError(f"pretraining stage {stage!r} has no trainable parameters")
    trainer = Trainer(model, make_optimizer(params), data, epochs=epochs, **options)
    history = trainer.fit()
    return [{"stage": stage, **h} for h in history]


def _flat_width(module: nn.Module, x: Tensor) -> int:
    was_training = module.training
    module.eval()
    with torch.no_grad():
        width = int(math.prod(module(x[:2]).shape[1:]))
    module.train(was_training)
    return width


# ----------------------------------------------------------------------------- greedy layer-wise
def greedy_supervised_pretraining(
    blocks: Sequence[nn.Module],
    data: Splits | TensorPair | tuple,
    make_optimizer: OptimizerFactory,
    *,
    num_classes: int | None = None,
    epochs_per_stage: int = 1,
    fine_tune_epochs: int = 1,
    freeze_lower: bool = False,
    make_head: Callable[[int, int], nn.Module] | None = None,
    **trainer_options: Any,
) -> tuple[nn.Sequential, list[dict]]:
    """Greedy supervised pretraining (fig. 8.7), then joint fine-tuning.

    Args:
        blocks: the hidden blocks of the final network, bottom first (e.g.
            ``nn.Sequential(nn.Linear(784, 100), nn.ReLU())`` each).
        data: training (and validation/test) data.
        make_optimizer: ``params -> optimizer``, called for every stage.
        epochs_per_stage: epochs of training after each block is added.
        fine_tune_epochs: epochs of joint training of the whole stack at the end (0: none).
        freeze_lower: keep the already trained blocks fixed while a new one trains
            (the purely greedy variant); by default all blocks so far train (the figure's
            "jointly fine-tune all the layers ... at each stage").
        make_head: ``(width, num_classes) -> output layer`` on the flattened features;
            default a linear layer (logits).
        trainer_options: passed to every Trainer (batch_size, seed, augment, ...).

    Returns the final network ``nn.Sequential(*blocks, nn.Flatten(), head)`` and the
    per-epoch history of all stages (each entry tagged with its ``stage``).
    """
    data = _as_splits(data)
    blocks = list(blocks)
    if not blocks:
        raise ConfigError("greedy pretraining needs at least one hidden block")
    if epochs_per_stage < 1 or fine_tune_epochs < 0:
        raise ConfigError(f"need epochs_per_stage >= 1 and fine_tune_epochs >= 0, got {epochs_per_stage}, {fine_tune_epochs}")
    num_classes = num_classes or data.num_classes
    make_head = make_head or (lambda width, classes: nn.Linear(width, classes))
    history: list[dict] = []
    head: nn.Module | None = None
    for k in range(len(blocks)):
        stack = nn.Sequential(*blocks[: k + 1])
        head = make_head(_flat_width(stack, data.train.x), num_classes)  # a fresh output layer each stage
        model = nn.Sequential(*blocks[: k + 1], nn.Flatten(), head)
        for block in blocks[:k]:
            (freeze if freeze_lower else unfreeze)(block)
        history += _train(model, make_optimizer, data, epochs_per_stage, f"layer {k + 1}", trainer_options)
    for block in blocks:
        unfreeze(block)
    final = nn.Sequential(*blocks, nn.Flatten(), head)
    if fine_tune_epochs:
        history += _train(final, make_optimizer, data, fine_tune_epochs, "fine-tune", trainer_options)
    return final, history


# ----------------------------------------------------------------------------- transfer
def transfer(source: nn.Sequential, target: nn.Sequential, layers: int, freeze_copied: bool = True) -> list[str]:
    """Copy the parameters and buffers of the first ``layers`` modules of ``source`` into
    ``target`` (Yosinski et al. 2014) and, with ``freeze_copied``, freeze them there.
    Returns the names of the copied entries; mismatched shapes raise ShapeError."""
    if not 0 < layers <= min(len(source), len(target)):
        raise ConfigError(f"transfer layers must be in [1, {min(len(source), len(target))}], got {layers}")
    copied = []
    with torch.no_grad():
        for i in range(layers):
            src, dst = source[i].state_dict(), target[i].state_dict()
            if src.keys() != dst.keys():
                raise ShapeError(f"layer {i} differs between source and target: {sorted(src)} vs {sorted(dst)}")
            for name, value in src.items():
                if dst[name].shape != value.shape:
                    raise ShapeError(f"layer {i} {name}: source shape {tuple(value.shape)} vs target {tuple(dst[name].shape)}")
            target[i].load_state_dict(src)
            copied += [f"{i}.{name}" for name in src]
            if freeze_copied:
                freeze(target[i])
    return copied


# ----------------------------------------------------------------------------- FitNets
class HintStep:
    """``batch_step`` of FitNets stage 1: minimize 1/2 ||u_h(x) - r(v_g(x))||^2, the distance
    between the teacher's hint layer u_h and the regressed guided layer of the student
    (Romero et al. 2015, eq. 3), averaged over the batch and divided by the number of hint
    units: a wide hint layer then does not need a smaller learning rate than the task."""

    def __init__(self, teacher_hint: nn.Module) -> None:
        self.teacher_hint = teacher_hint.eval()

    def __call__(self, trainer, x: Tensor, y: Tensor) -> Tensor:
        with torch.no_grad():
            target = self.teacher_hint(x).float()

        def hint_loss() -> Tensor:
            guess = trainer.model(x)
            if guess.shape != target.shape:
                raise ShapeError(f"the regressor outputs {tuple(guess.shape)} but the teacher's hint is {tuple(target.shape)}")
            return 0.5 * (guess.float() - target).pow(2).mean()

        return trainer.update(hint_loss)


def default_regressor(student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]) -> nn.Module:
    """Linear for flat features; a 1x1 convolution for feature maps of the same spatial size."""
    if len(student_shape) == 1 and len(teacher_shape) == 1:
        return nn.Linear(student_shape[0], teacher_shape[0])
    if len(student_shape) == 3 and len(teacher_shape) == 3 and student_shape[1:] == teacher_shape[1:]:
        return nn.Conv2d(student_shape[0], teacher_shape[0], 1)
    raise ShapeError(
        f"no default regressor from student features {student_shape} to teacher features {teacher_shape}; "
        "pass regressor=... (e.g. a convolution that maps one onto the other)"
    )


def fitnets(
    teacher: nn.Sequential,
    student: nn.Sequential,
    hint_layer: int,
    guided_layer: int,
    data: Splits | TensorPair | tuple,
    make_optimizer: OptimizerFactory,
    *,
    hint_epochs: int = 1,
    task_epochs: int = 1,
    regressor: nn.Module | None = None,
    loss: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
    **trainer_options: Any,
) -> tuple[nn.Sequential, list[dict]]:
    """FitNets training of ``student`` with hints from a trained ``teacher`` (sec. 8.7.4).

    Stage 1 trains ``student[: guided_layer + 1]`` and a ``regressor`` to predict
    ``teacher[: hint_layer + 1](x)`` (the teacher is frozen); stage 2 trains the whole
    student on the task with ``loss``. (Romero et al. use knowledge distillation in
    stage 2; the text's description, and this function, use the task's own labels.)
    Returns the student and the history of both stages.
    """
    data = _as_splits(data)
    if not (0 <= hint_layer < len(teacher) and 0 <= guided_layer < len(student)):
        raise ConfigError(f"hint_layer must index the teacher (< {len(teacher)}) and guided_layer the student "
                          f"(< {len(student)}); got {hint_layer}, {guided_layer}")
    teacher_hint = freeze(nn.Sequential(*teacher[: hint_layer + 1])).eval()
    student_lower = nn.Sequential(*student[: guided_layer + 1])
    sample = data.train.x[:2]
    with torch.no_grad():
        s_shape = tuple(student_lower.eval()(sample).shape[1:])
        t_shape = tuple(teacher_hint(sample).shape[1:])
    student_lower.train()
    regressor = regressor or default_regressor(s_shape, t_shape)
    hinted = nn.Sequential(student_lower, regressor)
    history = _train(hinted, make_optimizer, Splits(data.train), hint_epochs, "hints", trainer_options,
                     batch_step=HintStep(teacher_hint))
    history += _train(student, make_optimizer, data, task_epochs, "task", trainer_options, loss=loss)
    return student, history


# ----------------------------------------------------------------------------- auxiliary heads
class AuxiliaryHeads(nn.Module):
    """A ``trunk`` (``nn.Sequential``) with extra output heads on intermediate layers (sec. 8.7.5).

    ``heads[i]`` is applied to the output of ``trunk[i]``. In training mode the forward
    pass returns the trunk's output and keeps the heads' outputs in ``aux_outputs``; the
    loss from :meth:`loss` is

        L = L(main output, y) + w(e) sum_heads L(head output, y)

    with w(e) = weight (1 - (e - 1) / decay_epochs), clipped at 0 (constant if
    ``decay_epochs`` is 0), set each epoch by the callback :meth:`schedule`::

        net = AuxiliaryHeads(trunk, {2: head}, weight=0.3, decay_epochs=5)
        Trainer(net, opt, data, loss=net.loss(), callbacks=[net.schedule()]).fit()

    In evaluation mode the heads are not run. :meth:`discard` returns the trunk.
    """

    def __init__(self, trunk: nn.Sequential, heads: dict[int, nn.Module], weight: float = 0.3,
                 decay_epochs: int = 0) -> None:
        super().__init__()
        if not heads or any(not 0 <= int(i) < len(trunk) - 1 for i in heads):
            raise ConfigError(f"auxiliary heads must sit on intermediate layers 0..{len(trunk) - 2}, got {sorted(heads)}")
        if weight < 0 or decay_epochs < 0:
            raise ConfigError(f"weight and decay_epochs must be >= 0, got {weight}, {decay_epochs}")
        self.trunk = trunk
        self.heads = nn.ModuleDict({str(int(i)): h for i, h in heads.items()})
        self.initial_weight, self.weight, self.decay_epochs = float(weight), float(weight), decay_epochs
        self.aux_outputs: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        aux = []
        for i, layer in enumerate(self.trunk):
            x = layer(x)
            if self.training and self.weight > 0 and str(i) in self.heads:
                aux.append(self.heads[str(i)](x))
        self.aux_outputs = aux
        return x

    def loss(self, base: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy) -> Callable[[Tensor, Tensor], Tensor]:
        def total(outputs: Tensor, targets: Tensor) -> Tensor:
            value = base(outputs, targets)
            for aux in self.aux_outputs:
                value = value + self.weight * base(aux, targets)
            return value

        return total

    def weight_at(self, epoch: int) -> float:
        if not self.decay_epochs:
            return self.initial_weight
        return self.initial_weight * max(0.0, 1.0 - (epoch - 1) / self.decay_epochs)

    def schedule(self) -> "AuxiliaryWeightSchedule":
        """The callback that sets w(e) at the start of each epoch."""
        return AuxiliaryWeightSchedule(self)

    def discard(self) -> nn.Sequential:
        """The trunk alone: the network to keep once training is over."""
        return self.trunk

    def extra_repr(self) -> str:
        return f"heads at {list(self.heads)}, weight={self.initial_weight}, decay_epochs={self.decay_epochs}"


class AuxiliaryWeightSchedule:
    """Callback: the auxiliary heads' loss weight w(e) at the start of every epoch."""

    def __init__(self, heads: AuxiliaryHeads) -> None:
        self.heads = heads

    def on_epoch_start(self, trainer, epoch: int) -> None:
        self.heads.weight = self.heads.weight_at(epoch)
