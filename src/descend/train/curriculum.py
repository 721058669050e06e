"""Which examples to train on, and when: curricula (Deep Learning sec. 8.7.6) and
emphasizing schemes (CS189), as samplers of the one Trainer.

A sampler is ``sampler(trainer, epoch, generator) -> LongTensor`` of training-set indices
for the epoch (see :class:`~descend.train.Trainer`); the Trainer cuts it into minibatches.
Every sampler here draws only from ``generator`` (seeded by the Trainer from
(seed, epoch)), so the order is reproducible and a resumed run sees the same one.

Curriculum learning "can be interpreted as a continuation method, where earlier J^(i) are
made easier by increasing the influence of simpler examples ... by sampling them more
frequently" (Bengio et al. 2009). Both kinds of the text are here, driven by a difficulty
score per example (given, or the loss of a scoring model, :func:`loss_scores`):

* :class:`DeterministicCurriculum`: at epoch e only the easiest fraction p(e) of the
  examples is used, p rising linearly to 1 (easy-to-hard; within the pool in random or
  strictly easy-to-hard order);
* :class:`StochasticCurriculum` (Zaremba & Sutskever 2014): "a random mix of easy and
  difficult examples is always presented to the learner, but where the average
  proportion of the more difficult examples ... is gradually increased".

Emphasizing schemes (CS189: "Present examples from rare classes more often ... Same for
misclassified examples"): :class:`Emphasis` samples in proportion to each example's
recent loss or misclassification, refreshed every epoch, with a floor so that no example
is ever dropped; :class:`ClassBalanced` samples rare classes more often. Every epoch has
``len(train)`` examples, so strategies compare on the same number of steps.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from descend.data.tensors import TensorPair
from descend.errors import ConfigError, DataError, ShapeError


def _check_fraction(name: str, value: float, low_open: bool = True) -> float:
    value = float(value)
    if not (0.0 < value <= 1.0 if low_open else 0.0 <= value <= 1.0):
        raise ConfigError(f"{name} must be in {'(0, 1]' if low_open else '[0, 1]'}, got {value}")
    return value


def _check_scores(scores) -> Tensor:
    scores = torch.as_tensor(scores)
    if scores.dim() != 1 or len(scores) == 0:
        raise ShapeError(f"difficulty scores must be a non-empty 1-D tensor (one per training example), "
                         f"got shape {tuple(scores.shape)}")
    scores = scores.double()
    if not bool(torch.isfinite(scores).all()):
        raise DataError("difficulty scores contain NaN or infinity")
    return scores


def _check_length(scores: Tensor, trainer) -> None:
    n = len(trainer.data.train)
    if len(scores) != n:
        raise ShapeError(
            f"the curriculum has {len(scores)} difficulty scores but the training set has {n} examples; "
            "give one score per training example, in the training set's order"
        )


def pace(epoch: int, start: float, ramp_epochs: int) -> float:
    """Linear pacing: ``start`` at epoch 1, rising to 1 at epoch ``ramp_epochs`` and after."""
    if ramp_epochs <= 1:
        return 1.0
    return start + (1.0 - start) * min(1.0, (epoch - 1) / (ramp_epochs - 1))


# ----------------------------------------------------------------------------- difficulty scores
@torch.no_grad()
def per_example_loss(
    model: torch.nn.Module,
    data: TensorPair,
    loss: Callable[[Tensor, Tensor], Tensor] | None = None,
    batch_size: int = 1000,
    device: str | torch.device | None = None,
    misclassified: bool = False,
) -> Tensor:
    """The loss of ``model`` on each example of ``data`` (evaluation mode, no gradients).

    ``loss(outputs, targets)`` must return one value per example (default: cross-entropy
    with ``reduction="none"``). With ``misclassified=True`` the result is 1 for examples the
    model gets wrong (argmax) and 0 for the others.
    """
    loss = loss or (lambda out, y: F.cross_entropy(out, y, reduction="none"))
    device = device or next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    out = []
    try:
        for xb, yb in zip(data.x.split(batch_size), data.y.split(batch_size)):
            xb, yb = xb.to(device), yb.to(device)
            z = model(xb)
            value = (z.argmax(1) != yb).double() if misclassified else loss(z, yb).double()
            if value.shape != (len(xb),):
                raise ShapeError(f"the per-example loss must return one value per example, got {tuple(value.shape)}")
            out.append(value.cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)


def loss_scores(model: torch.nn.Module, data: TensorPair, **kwargs) -> Tensor:
    """Difficulty of each example as the loss of a (scoring) model: high loss = hard."""
    return per_example_loss(model, data, **kwargs)


def probe_scores(train: TensorPair, epochs: int = 1, lr: float = 0.1, batch_size: int = 64, seed: int = 0) -> Tensor:
    """Difficulty scores from a quickly trained linear softmax classifier on ``train``:
    what a linear model finds hard is a reasonable proxy for "less prototypical" examples.
    Trained with the Trainer (the one loop), seeded, on the training data only."""
    from descend.train.trainer import Trainer

    torch.manual_seed(seed)
    features = int(math.prod(train.x.shape[1:]))
    classes = int(train.y.max()) + 1
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(features, classes))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    Trainer(model, optimizer, (train,), epochs=epochs, batch_size=batch_size, seed=seed, quiet=True,
            checkpoint=False).fit()
    return per_example_loss(model, train)


# ----------------------------------------------------------------------------- curricula
class DeterministicCurriculum:
    """Easy-to-hard training: epoch e uses the easiest ``p(e) n`` examples.

    Args:
        scores: difficulty per training example (higher = harder).
        start: fraction of the data (the easiest) used at epoch 1.
        ramp_epochs: epoch from which all examples are used (p rises linearly).
        order: ``"shuffled"`` (random order within the pool) or ``"sorted"`` (the epoch's
            examples strictly from easiest to hardest).
        fill: present ``n`` examples every epoch (the pool repeated, so every epoch has the
            baseline's number of steps) instead of one pass over the pool.
    """

    def __init__(self, scores, start: float = 0.25, ramp_epochs: int = 5, order: str = "shuffled",
                 fill: bool = True) -> None:
        self.scores = _check_scores(scores)
        self.start = _check_fraction("curriculum start fraction", start)
        if not isinstance(ramp_epochs, int) or ramp_epochs < 1:
            raise ConfigError(f"ramp_epochs must be an integer >= 1, got {ramp_epochs!r}")
        if order not in ("shuffled", "sorted"):
            raise ConfigError(f"order must be 'shuffled' or 'sorted', got {order!r}")
        self.ramp_epochs, self.order, self.fill = ramp_epochs, order, fill
        self.rank = torch.argsort(self.scores, stable=True)  # easiest first

    def pool_size(self, epoch: int) -> int:
        n = len(self.scores)
        return max(1, min(n, math.ceil(pace(epoch, self.start, self.ramp_epochs) * n)))

    def __call__(self, trainer, epoch: int, generator: torch.Generator) -> Tensor:
        _check_length(self.scores, trainer)
        n, k = len(self.scores), self.pool_size(epoch)
        pool = self.rank[:k]
        repeats = math.ceil(n / k) if self.fill else 1
        picks = torch.cat([torch.randperm(k, generator=generator) for _ in range(repeats)])[: n if self.fill else k]
        if self.order == "sorted":
            picks = picks.sort().values  # positions in the easy-to-hard ranking
        return pool[picks]


class StochasticCurriculum:
    """A random mix of easy and hard examples whose share of hard ones rises over training.

    The examples are split by score into the easiest ``easy_fraction`` (E) and the rest
    (H). Each of the epoch's n draws comes from H with probability h(e) and from E
    otherwise, uniformly within the part (with replacement). h rises linearly from
    ``start_hard_share`` at epoch 1 to the natural share ``|H| / n`` at ``ramp_epochs``, where
    sampling has become uniform over the whole training set.
    """

    def __init__(self, scores, easy_fraction: float = 0.5, start_hard_share: float = 0.1, ramp_epochs: int = 5) -> None:
        self.scores = _check_scores(scores)
        n = len(self.scores)
        self.easy_fraction = _check_fraction("easy_fraction", easy_fraction)
        if not isinstance(ramp_epochs, int) or ramp_epochs < 1:
            raise ConfigError(f"ramp_epochs must be an integer >= 1, got {ramp_epochs!r}")
        rank = torch.argsort(self.scores, stable=True)
        n_easy = max(1, min(n, round(self.easy_fraction * n)))
        self.easy, self.hard = rank[:n_easy], rank[n_easy:]
        natural = len(self.hard) / n
        self.start_hard_share = _check_fraction("start_hard_share", start_hard_share, low_open=False)
        if self.start_hard_share > natural:
            raise ConfigError(f"start_hard_share = {start_hard_share} is above the natural share of hard examples "
                              f"({natural:.3g}); a curriculum starts with fewer hard examples, not more")
        self.ramp_epochs = ramp_epochs

    def hard_share(self, epoch: int) -> float:
        natural = len(self.hard) / len(self.scores)
        if self.ramp_epochs <= 1:
            return natural
        return self.start_hard_share + (natural - self.start_hard_share) * min(1.0, (epoch - 1) / (self.ramp_epochs - 1))

    def __call__(self, trainer, epoch: int, generator: torch.Generator) -> Tensor:
        _check_length(self.scores, trainer)
        n = len(self.scores)
        from_hard = torch.rand(n, generator=generator) < self.hard_share(epoch)
        easy = self.easy[torch.randint(0, len(self.easy), (n,), generator=generator)]
        if len(self.hard) == 0:
            return easy
        hard = self.hard[torch.randint(0, len(self.hard), (n,), generator=generator)]
        return torch.where(from_hard, hard, easy)


# ----------------------------------------------------------------------------- emphasis
def emphasis_weights(scores: Tensor, floor: float) -> Tensor:
    """w_i = floor + (1 - floor) s_i / mean(s): proportional to the score, mean 1, never below
    ``floor`` (so each example keeps at least floor / n of the probability)."""
    mean = float(scores.mean())
    if mean <= 0:  # nothing is wrong / no loss: uniform
        return torch.ones_like(scores)
    return floor + (1.0 - floor) * scores / mean


class Emphasis:
    """Sample each example with probability proportional to its recent loss (``mode="loss"``)
    or to whether it is misclassified (``"misclassified"``), with a floor (CS189).

    The scores are recomputed with the current model on the (unaugmented) training set
    every ``refresh_every`` epochs, from epoch ``start_epoch`` (before that: uniform). The
    epoch's n indices are drawn with replacement by ``torch.multinomial``. Pass the object
    also as a callback to keep its weights in checkpoints (exact resume when
    ``refresh_every > 1``). CS189 warns that "emphasizing schemes can backfire if you have
    really bad outliers": the floor and a moderate refresh keep that in check.
    """

    def __init__(self, mode: str = "loss", floor: float = 0.2, refresh_every: int = 1, start_epoch: int = 2,
                 loss: Callable[[Tensor, Tensor], Tensor] | None = None) -> None:
        if mode not in ("loss", "misclassified"):
            raise ConfigError(f"emphasis mode must be 'loss' or 'misclassified', got {mode!r}")
        self.mode = mode
        self.floor = _check_fraction("emphasis floor", floor)
        if refresh_every < 1 or start_epoch < 1:
            raise ConfigError(f"refresh_every and start_epoch must be >= 1, got {refresh_every}, {start_epoch}")
        self.refresh_every, self.start_epoch, self.loss = refresh_every, start_epoch, loss
        self.weights: Tensor | None = None

    def refresh(self, trainer) -> Tensor:
        scores = per_example_loss(trainer.model, trainer.data.train, loss=self.loss,
                                  batch_size=trainer.eval_batch_size, device=trainer.device,
                                  misclassified=self.mode == "misclassified")
        self.weights = emphasis_weights(scores, self.floor)
        return self.weights

    def __call__(self, trainer, epoch: int, generator: torch.Generator) -> Tensor:
        n = len(trainer.data.train)
        if epoch < self.start_epoch:
            return torch.randperm(n, generator=generator)
        if self.weights is None or len(self.weights) != n or (epoch - self.start_epoch) % self.refresh_every == 0:
            self.refresh(trainer)
        return torch.multinomial(self.weights.float(), n, replacement=True, generator=generator)

    def state_dict(self) -> dict:
        return {} if self.weights is None else {"weights": self.weights}

    def load_state_dict(self, state: dict) -> None:
        self.weights = state.get("weights")


class ClassBalanced:
    """Present examples of rare classes more often (CS189): example i is drawn with
    probability proportional to count(y_i)^(-power); power 1 balances the classes exactly,
    0 is uniform sampling."""

    def __init__(self, power: float = 1.0) -> None:
        if not 0.0 <= power <= 1.0:
            raise ConfigError(f"ClassBalanced power must be in [0, 1], got {power}")
        self.power = power

    def weights(self, labels: Tensor) -> Tensor:
        counts = torch.bincount(labels.long()).double()
        return counts[labels.long()].pow(-self.power)

    def __call__(self, trainer, epoch: int, generator: torch.Generator) -> Tensor:
        y = trainer.data.train.y
        return torch.multinomial(self.weights(y).float(), len(y), replacement=True, generator=generator)
