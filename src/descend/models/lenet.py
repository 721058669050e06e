"""LeNet-5 (LeCun, Bottou, Bengio & Haffner 1998), the network of CS189's "LeNet5.png".

"LeNet 5 has six hidden layers! Hidden layers 1 and 3 are convolutional layers in which
groups of units share weights. Layers 2 and 4 are pooling layers that make the image
smaller ... Layers 5 and 6 are just regular layers of hidden units with no shared
weights." (CS189 notes; Nielsen ch. 6 and Deep Learning sec. 9.11 cite it too.)

    input 32x32 (28x28 MNIST is zero-padded by 2, as in the paper)
    C1  6 maps, 5x5 convolution                                 -> 6 x 28 x 28
    S2  subsampling: 2x2 sum x trainable coefficient + bias     -> 6 x 14 x 14
    C3  16 maps, 5x5, each seeing only some S2 maps (Table I)   -> 16 x 10 x 10
    S4  subsampling as S2                                       -> 16 x 5 x 5
    C5  120 maps, 5x5 convolution (fully connected to S4)       -> 120
    F6  84 units
    output: 10 class scores

Units use the paper's scaled tanh f(a) = 1.7159 tanh(2a/3). C3's partial connection
table ("the first six C3 feature maps take inputs from every contiguous subset of three
feature maps in S2, the next six from every contiguous subset of four, the next three
from some discontinuous subsets of four, and the last one from all") is the partially
connected convolution of Deep Learning sec. 9.5 (``PartiallyConnectedConv2d``).

Differences from the paper, on purpose: the output layer is linear (logits for
softmax cross-entropy) instead of Euclidean RBF units with fixed 7x12 bitmaps; training
uses descend's Trainer, not stochastic diagonal Levenberg-Marquardt; weights start at
U(-1/sqrt(F), 1/sqrt(F)) (Deep Learning sec. 8.4, F = fan-in) rather than the paper's
U(-2.4/F, 2.4/F), which with [0, 1] pixels (the paper rescales them to [-0.1, 1.175])
leaves the signal too small to learn at ordinary learning rates. Options give the
modern variant: ``subsampling="max"``, ``activation="relu"``, ``connection_table=False``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from descend.errors import ConfigError
from descend.nn.conv import Conv2d
from descend.nn.functional.pooling import avg_pool, max_pool
from descend.nn.local import PartiallyConnectedConv2d


def c3_connections() -> Tensor:
    """LeNet-5's Table I as a bool (16 C3 maps, 6 S2 maps) table."""
    table = torch.zeros(16, 6, dtype=torch.bool)
    for j in range(6):
        table[j, [(j + i) % 6 for i in range(3)]] = True          # contiguous threes
        table[6 + j, [(j + i) % 6 for i in range(4)]] = True      # contiguous fours
    for j, maps in enumerate([(0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5)]):
        table[12 + j, list(maps)] = True                          # discontinuous fours
    table[15] = True                                              # all six
    return table


class ScaledTanh(nn.Module):
    """f(a) = A tanh(S a) with A = 1.7159, S = 2/3 (LeCun et al. 1998, appendix A)."""

    def forward(self, x: Tensor) -> Tensor:
        return 1.7159 * torch.tanh(x * (2.0 / 3.0))


class Subsampling(nn.Module):
    """LeNet-5's S layers: each unit sums a 2x2 region, times a trainable coefficient, plus a bias.

    One coefficient and one bias per feature map (shared over positions). ``kind="max"``
    or ``"avg"`` replaces the trainable sum by plain pooling (sec. 9.3).
    """

    def __init__(self, channels: int, kind: str = "trainable") -> None:
        super().__init__()
        if kind not in ("trainable", "max", "avg"):
            raise ConfigError(f"Unknown subsampling {kind!r}; use 'trainable', 'max' or 'avg'")
        self.kind = kind
        if kind == "trainable":
            # Initialized so the layer starts as a 2x2 average.
            self.coefficient = nn.Parameter(torch.full((channels,), 0.25))
            self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "max":
            return max_pool(x, 2)
        pooled = avg_pool(x, 2)
        if self.kind == "avg":
            return pooled
        return 4.0 * pooled * self.coefficient[:, None, None] + self.bias[:, None, None]

    def extra_repr(self) -> str:
        return repr(self.kind)


class LeNet5(nn.Module):
    """LeNet-5 for ``image_size`` x ``image_size`` images (28 or 32 for the paper's layout).

    Args:
        in_channels, image_size, num_classes: the data's shape (filled in by the CLI).
        activation: "scaled_tanh" (the paper) or "relu".
        subsampling: "trainable" (the paper), "max" or "avg".
        connection_table: C3 uses Table I (True) or sees all six S2 maps (False).
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        num_classes: int = 10,
        activation: str = "scaled_tanh",
        subsampling: str = "trainable",
        connection_table: bool = True,
    ) -> None:
        super().__init__()
        acts = {"scaled_tanh": ScaledTanh, "relu": nn.ReLU}
        if activation not in acts:
            raise ConfigError(f"Unknown activation {activation!r}; use 'scaled_tanh' or 'relu'")
        if image_size < 28:
            raise ConfigError(
                f"LeNet-5 needs images of at least 28x28 (padded to 32x32), got {image_size}; "
                f"use another model for smaller images"
            )
        act = acts[activation]
        pad = max(0, (32 - image_size) // 2)          # 28 -> 32, as the paper pads MNIST
        side = (image_size + 2 * pad - 4) // 2         # after C1 and S2
        side = (side - 4) // 2                         # after C3 and S4
        c3 = (PartiallyConnectedConv2d(6, 16, 5, connections=c3_connections()) if connection_table
              else Conv2d(6, 16, 5))
        self.features = nn.Sequential(
            Conv2d(in_channels, 6, 5, padding=pad), act(),          # C1
            Subsampling(6, subsampling), act(),                     # S2
            c3, act(),                                              # C3
            Subsampling(16, subsampling), act(),                    # S4
            Conv2d(16, 120, side), act(),                           # C5: covers all of S4
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(120, 84), act(), nn.Linear(84, num_classes))
        self.config = dict(activation=activation, subsampling=subsampling, connection_table=connection_table)
    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.items())
