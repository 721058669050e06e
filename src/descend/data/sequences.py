"""Sequence data for the recurrent networks of Deep Learning ch. 10.

    sequential_mnist(images, order="rows")   images as sequences: 28 rows of 28 pixels,
                                             or 784 single pixels ("pixels")
    copy_task(n, delay, ...)                 reproduce symbols seen delay steps ago
    adding_problem(n, length, ...)           sum the two marked numbers of a sequence
    parity(n, length, ...)                   parity of a bit string
    make_splits(task, sizes, seed, ...)      train/val/test Splits of a synthetic task

The synthetic tasks need memory over a controllable time lag, which is what makes
long-term dependencies hard for a plain RNN (sec. 8.2.5) and easier for an LSTM
(sec. 10.10). They are generated on the fly from a ``torch.Generator`` (or an int
seed): the same seed gives the same data on every machine, and no files are involved.
Every generator is vectorized over the batch (one tensor operation per quantity).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from descend.data.tensors import Splits, TensorPair
from descend.errors import ConfigError, ShapeError


def _generator(generator: torch.Generator | int | None) -> torch.Generator:
    if generator is None:
        return torch.Generator().manual_seed(0)
    if isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, int) and not isinstance(generator, bool):
        return torch.Generator().manual_seed(generator)
    raise ConfigError(f"generator must be a torch.Generator or an int seed; got {type(generator).__name__}")


def _positive(name: str, value: int, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"Invalid {name}: {value!r}; {name} must be an integer >= {minimum}")


def sequential_mnist(images: Tensor, order: str = "rows") -> Tensor:
    """View a batch of images as a batch of sequences ``(N, T, F)`` (no copy where possible).

    ``order="rows"``: time steps are the H image rows, each step sees the ``C * W``
    pixels of one row: MNIST becomes 28 steps of 28 features.
    ``order="pixels"``: time steps are the ``H * W`` pixels in raster order, each step
    sees the C channel values: MNIST becomes 784 steps of 1 feature, a much longer
    dependency (the "pixel-by-pixel" sequential MNIST of Le et al. 2015).

    Accepts ``(N, C, H, W)`` or ``(N, H, W)`` images.
    """
    if order not in ("rows", "pixels"):
        raise ConfigError(f"Invalid order: {order!r}; use 'rows' or 'pixels'")
    if not torch.is_tensor(images) or images.dim() not in (3, 4):
        shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise ShapeError(f"images must be (N, C, H, W) or (N, H, W); got {shape}")
    if images.dim() == 3:
        images = images.unsqueeze(1)
    N, C, H, W = images.shape
    if order == "rows":
        if C == 1:
            return images.reshape(N, H, W)
        return images.permute(0, 2, 1, 3).reshape(N, H, C * W)
    return images.reshape(N, C, H * W).transpose(1, 2)


def copy_task(
    n: int,
    delay: int,
    *,
    length: int = 10,
    symbols: int = 8,
    generator: torch.Generator | int | None = None,
) -> TensorPair:
    """The copy (memory) problem of Hochreiter & Schmidhuber (1997), as set by Arjovsky et al. (2016).

    Each sequence shows ``length`` random symbols from ``1..symbols``, then ``delay - 1``
    blanks (0), then a delimiter (``symbols + 1``), then ``length`` more blanks; the
    target is blank (0) everywhere except the last ``length`` steps, which must repeat
    the symbols in order. Every symbol must be remembered for ``length + delay`` steps;
    a model that forgets everything scores the baseline loss ``length * log(symbols)``
    per sequence.

    Returns ``TensorPair(x, y)`` with ``x`` one-hot ``(n, T, symbols + 2)`` float32 and
    ``y`` ``(n, T)`` int64 in ``0..symbols``, where ``T = 2 * length + delay``
    (sequence-to-sequence of equal length, sec. 10.2).
    """
    _positive("n", n)
    _positive("delay", delay)
    _positive("length", length)
    _positive("symbols", symbols)
    gen = _generator(generator)
    T = 2 * length + delay
    data = torch.randint(1, symbols + 1, (n, length), generator=gen)
    sequence = torch.zeros(n, T, dtype=torch.int64)
    sequence[:, :length] = data
    sequence[:, length + delay - 1] = symbols + 1  # the delimiter: "now repeat"
    target = torch.zeros(n, T, dtype=torch.int64)
    target[:, T - length :] = data
    return TensorPair(F.one_hot(sequence, symbols + 2).float(), target)


def adding_problem(n: int, length: int, *, generator: torch.Generator | int | None = None) -> TensorPair:
    """The adding problem (Hochreiter & Schmidhuber 1997; the variant of Le et al. 2015).

    Each step carries two numbers: a value drawn uniformly from [0, 1] and a marker
    that is 1 at exactly two steps, one in the first half of the sequence and one in
    the second half, and 0 elsewhere. The target is the sum of the two marked values
    (sequence-to-one regression, fig. 10.5). Predicting the mean 1 for every
    sequence gives the baseline mean squared error 1/6 ~ 0.167.

    Returns ``TensorPair(x, y)``: ``x`` ``(n, length, 2)`` float32, ``y`` ``(n,)`` float32.
    """
    _positive("n", n)
    _positive("length", length, minimum=2)
    gen = _generator(generator)
    values = torch.rand(n, length, generator=gen)
    half = length // 2
    first = torch.randint(0, half, (n,), generator=gen)
    second = torch.randint(half, length, (n,), generator=gen)
    marker = torch.zeros(n, length)
    rows = torch.arange(n)
    marker[rows, first] = 1.0
    marker[rows, second] = 1.0
    target = values[rows, first] + values[rows, second]
    return TensorPair(torch.stack([values, marker], dim=2), target)


def parity(
    n: int,
    length: int,
    *,
    running: bool = False,
    generator: torch.Generator | int | None = None,
) -> TensorPair:
    """Parity of a random bit string: a function of every input bit, however long ago.

    ``x`` ``(n, length, 1)`` float32 bits in {0, 1}. With ``running=False`` the target
    is the parity of the whole string, ``y`` ``(n,)`` int64 (sequence-to-one
    classification); with ``running=True`` it is the parity of the prefix at every step,
    ``y`` ``(n, length)`` (sequence-to-sequence of equal length).
    """
    _positive("n", n)
    _positive("length", length)
    gen = _generator(generator)
    bits = torch.randint(0, 2, (n, length), generator=gen)
    prefix = torch.cumsum(bits, dim=1) % 2
    y = prefix if running else prefix[:, -1].clone()
    return TensorPair(bits.float().unsqueeze(2), y)


def make_splits(
    task: Callable[..., TensorPair],
    sizes: tuple[int, int, int],
    seed: int = 0,
    **options,
) -> Splits:
    """Train, validation and test sets of a synthetic task, from independent seeded streams.

    ``make_splits(adding_problem, (10000, 1000, 1000), seed=0, length=50)``; a size of 0
    leaves that split out. The three streams are seeded ``(seed, 0)``, ``(seed, 1)``,
    ``(seed, 2)``, so the test set does not change when the training set grows.
    """
    if len(sizes) != 3:
        raise ConfigError(f"sizes must be (train, val, test); got {sizes!r}")
    _positive("training set size", sizes[0])
    parts = []
    for stream, size in enumerate(sizes):
        if size == 0:
            parts.append(None)
            continue
        _positive("split size", size)
        gen = torch.Generator().manual_seed(seed * 3 + stream)
        parts.append(task(size, generator=gen, **options))
    return Splits(parts[0], parts[1], parts[2], name=getattr(task, "__name__", "synthetic"))
