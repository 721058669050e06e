"""Data augmentation as batched tensor operations.

An augmentation is any callable ``augment(x, generator) -> x`` applied by the Trainer
to each training batch ``x`` of shape (n, channels, rows, cols); ``generator`` is the
Trainer's own ``torch.Generator``, saved in checkpoints, so a resumed run draws the
same random shifts as an uninterrupted one. No per-image Python loops: one gather
moves every image of the batch.

* :func:`shift` moves images by whole pixels with zero fill;
* :func:`expand_mnist` is Nielsen's ``expand_mnist.py`` (NNDL ch. 6): each training
  image plus its four one-pixel shifts (down, up, right, left), 50,000 -> 250,000;
* :class:`RandomShift` draws an independent shift of up to ``max_shift`` pixels per
  image per batch (the "+-2 pixel random shifts" recipe).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from descend.data.tensors import TensorPair
from descend.errors import ConfigError, ShapeError


def _check_images(x: torch.Tensor) -> None:
    if x.ndim != 4:
        raise ShapeError(f"augmentation expects images of shape (n, channels, rows, cols), got {tuple(x.shape)}")


def shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Move every image down by ``dy`` and right by ``dx`` pixels (negative: up/left), zero fill.

    ``out[..., i, j] = x[..., i - dy, j - dx]`` where that pixel exists, else 0.
    """
    _check_images(x)
    rows, cols = x.shape[-2:]
    out = torch.zeros_like(x)
    if abs(dy) >= rows or abs(dx) >= cols:
        return out
    out[..., max(dy, 0) : rows + min(dy, 0), max(dx, 0) : cols + min(dx, 0)] = x[
        ..., max(-dy, 0) : rows - max(dy, 0), max(-dx, 0) : cols - max(dx, 0)
    ]
    return out


def expand_mnist(data: TensorPair, shuffle: bool = True, seed: int = 0) -> TensorPair:
    """Nielsen's expanded training set: each image and its 4 one-pixel shifts, zero filled.

    The order before shuffling is image-major, as in ``expand_mnist.py``: original,
    down, up, right, left for image 0, then for image 1, ... ``shuffle`` applies a
    permutation seeded by ``seed`` (Nielsen shuffles with Python's ``random``).
    """
    x, y = data.x, data.y
    variants = [x, shift(x, 1, 0), shift(x, -1, 0), shift(x, 0, 1), shift(x, 0, -1)]
    big_x = torch.stack(variants, dim=1).reshape(len(x) * 5, *x.shape[1:])
    big_y = y.repeat_interleave(5)
    if shuffle:
        order = torch.randperm(len(big_x), generator=torch.Generator().manual_seed(seed))
        big_x, big_y = big_x[order], big_y[order]
    return TensorPair(big_x, big_y)


class RandomShift:
    """Shift each image by an independent random (dy, dx) in [-max_shift, max_shift]^2, zero fill.

    Implemented as one ``gather`` over the zero-padded batch: the cost is a copy of the
    batch, whatever the shifts.
    """

    def __init__(self, max_shift: int = 2) -> None:
        if not isinstance(max_shift, int) or max_shift < 0:
            raise ConfigError(f"RandomShift max_shift must be an integer >= 0, got {max_shift!r}")
        self.max_shift = max_shift

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_images(x)
        s = self.max_shift
        if s == 0:
            return x
        n, c, rows, cols = x.shape
        offsets = torch.randint(-s, s + 1, (2, n), generator=generator, device="cpu").to(x.device)
        dy, dx = offsets[0], offsets[1]
        padded = F.pad(x, (s, s, s, s))
        width = cols + 2 * s
        r = torch.arange(rows, device=x.device)[None, :] - dy[:, None] + s  # (n, rows)
        q = torch.arange(cols, device=x.device)[None, :] - dx[:, None] + s  # (n, cols)
        index = (r[:, :, None] * width + q[:, None, :]).reshape(n, 1, rows * cols).expand(n, c, rows * cols)
        return padded.reshape(n, c, -1).gather(2, index).reshape(n, c, rows, cols)

    def __repr__(self) -> str:
        return f"RandomShift(max_shift={self.max_shift})"
