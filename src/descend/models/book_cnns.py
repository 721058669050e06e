"""The classification architectures of Deep Learning fig. 9.11, at MNIST scale.

The figure's networks (256x256x3 input, 64 channels, pools of stride 4) are
"designed to be very shallow in order to fit onto the page"; these keep their shape
with sizes for 28x28 digits. Every variant alternates convolution + ReLU with pooling:

``FlattenCNN`` (left)      conv -> pool -> conv -> pool -> reshape to a vector ->
                           matrix multiply to the class scores -> softmax. Fixed input size.
``AdaptiveCNN`` (centre)   the second pooling layer has "variably-sized pools but a fixed
                           number of pools" (3x3 x 64 channels = the figure's 576 units),
                           so any input size works.
``LocalCNN``               a "locally connected" variant (sec. 9.6): the second convolution
                           is a locally connected layer (eq. 9.9), no sharing across
                           positions; fixed input size.
``GapCNN`` (right)         no fully connected weight layer: the last convolution outputs
                           "one feature map per class" and "averaging a feature map down
                           to a single value provides the argument to the softmax".

Outputs are class scores (logits); the softmax lives in the cross-entropy loss.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from descend.errors import ConfigError
from descend.nn.conv import Conv2d
from descend.nn.local import LocallyConnected2d
from descend.nn.pooling import AdaptivePool, GlobalPool, Pool


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _check(channels: Sequence[int], kernel_size: int, pool: int) -> tuple[int, int]:
    if len(channels) != 2 or any(int(c) < 1 for c in channels):
        raise ConfigError(f"channels must be two positive ints (one per conv layer), got {channels!r}")
    if kernel_size < 1:
        raise ConfigError(f"kernel_size must be a positive int, got {kernel_size}")
    if pool < 1:
        raise ConfigError(f"pool must be >= 1, got {pool}")
    return int(channels[0]), int(channels[1])


def _conv_pool(in_channels: int, out_channels: int, kernel_size: int, pool: int) -> list[nn.Module]:
    return [Conv2d(in_channels, out_channels, kernel_size, padding="same"), nn.ReLU(), Pool("max", pool)]


class FlattenCNN(nn.Module):
    """Fig. 9.11 left: conv-pool twice, flatten, one matrix multiply to the classes."""

    def __init__(self, in_channels: int = 1, image_size: int = 28, num_classes: int = 10,
                 channels: Sequence[int] = (32, 64), kernel_size: int = 5, pool: int = 2) -> None:
        super().__init__()
        c1, c2 = _check(channels, kernel_size, pool)
        side = _ceil_div(_ceil_div(image_size, pool), pool)   # two poolings keeping partial regions
        self.features = nn.Sequential(*_conv_pool(in_channels, c1, kernel_size, pool),
                                      *_conv_pool(c1, c2, kernel_size, pool))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c2 * side * side, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class AdaptiveCNN(nn.Module):
    """Fig. 9.11 centre: a fixed 3x3 grid of pools of variable size, so any image size works."""

    def __init__(self, in_channels: int = 1, image_size: int = 28, num_classes: int = 10,
                 channels: Sequence[int] = (32, 64), kernel_size: int = 5, pool: int = 2,
                 grid: int = 3) -> None:
        super().__init__()
        c1, c2 = _check(channels, kernel_size, pool)
        if grid < 1:
            raise ConfigError(f"grid must be >= 1, got {grid}")
        self.features = nn.Sequential(
            *_conv_pool(in_channels, c1, kernel_size, pool),
            Conv2d(c1, c2, kernel_size, padding="same"), nn.ReLU(),
            AdaptivePool(grid, "max"),                         # 3 x 3 x 64 = 576 units
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c2 * grid * grid, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class LocalCNN(nn.Module):
    """Conv-pool, then a locally connected layer (eq. 9.9) and pool, flatten, classes."""

    def __init__(self, in_channels: int = 1, image_size: int = 28, num_classes: int = 10,
                 channels: Sequence[int] = (32, 16), kernel_size: int = 5, pool: int = 2) -> None:
        super().__init__()
        c1, c2 = _check(channels, kernel_size, pool)
        side = _ceil_div(image_size, pool)
        local_side = side - kernel_size + 1
        if local_side < 1:
            raise ConfigError(f"image_size {image_size} is too small for LocalCNN with kernel {kernel_size}")
        out_side = _ceil_div(local_side, pool)
        self.features = nn.Sequential(
            *_conv_pool(in_channels, c1, kernel_size, pool),
            LocallyConnected2d(c1, c2, side, kernel_size), nn.ReLU(), Pool("max", pool),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c2 * out_side * out_side, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class GapCNN(nn.Module):
    """Fig. 9.11 right: the last convolution has one map per class, then global average pooling."""

    def __init__(self, in_channels: int = 1, image_size: int = 28, num_classes: int = 10,
                 channels: Sequence[int] = (32, 64), kernel_size: int = 5, pool: int = 2) -> None:
        super().__init__()
        c1, c2 = _check(channels, kernel_size, pool)
        self.features = nn.Sequential(
            *_conv_pool(in_channels, c1, kernel_size, pool),
            *_conv_pool(c1, c2, kernel_size, pool),
            Conv2d(c2, num_classes, 3, padding="same"),        # one feature map per class
            GlobalPool("avg"),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)
