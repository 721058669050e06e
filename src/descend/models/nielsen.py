"""The convolutional networks of "Neural Networks and Deep Learning", chapter 6.

:class:`NielsenNet` builds every network of the chapter's ladder from a few options:
conv-pool layers (5x5 kernels, 2x2 max-pooling), fully connected layers, a softmax
output, sigmoid/tanh/ReLU units, and network3's dropout placement (dropout acts on the
*input* of each fully connected and softmax layer). Its default is the chapter's final
single network::

    ConvPool(20 maps, 5x5, pool 2x2) -> ConvPool(40 maps, 5x5, pool 2x2)
    -> FC(1000, ReLU, dropout 0.5 on its input) -> FC(1000, ReLU, dropout 0.5)
    -> softmax(10, dropout 0.5)

with batch normalization (Deep Learning sec. 8.7.1) after each convolution and hidden
layer, which Nielsen's network does not have; ``batch_norm=False`` removes it.
Outputs are logits (the softmax lives in the cross-entropy loss).

``padding`` zero-pads each convolution's input (Deep Learning sec. 9.5, fig. 9.13): 0 is the text's
"valid" convolution, ``(kernel_size - 1) // 2`` the "same" one that keeps the map's size,
so more conv-pool layers fit in a 28x28 digit (three 3x3 "same" layers: 28 -> 14 -> 7 -> 3).
``convs_per_pool`` stacks that many convolutions (each with its batch norm and activation)
before every pooling layer: two 3x3 layers see a 5x5 region, as one 5x5 layer does, with
18/25 of the weights and a nonlinearity between them (Deep Learning sec. 9.5: zero
padding frees the kernel width from the depth of the network; Simonyan & Zisserman 2015).

Max-pooling commutes with any increasing activation (max f(x) = f(max x)), so the
activation is applied after pooling, as in network3, on 4x fewer values.
"""

from __future__ import annotations

import torch
from torch import nn

from descend.errors import ConfigError

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


class NielsenNet(nn.Module):
    """Conv-pool layers, then fully connected layers, then a linear output (logits).

    Args:
        in_channels, image_size, num_classes: the data's shape (filled in by the CLI).
        conv: number of feature maps of each conv-pool layer, e.g. ``(20, 40)``; ``()`` for an MLP.
        kernel_size: side of the square local receptive field (5 in the text).
        padding: zeros added on each side of every convolution's input (0 in the text: "valid").
        convs_per_pool: convolutions before each pooling layer (1 in the text).
        pool: side of the max-pooling region (2 in the text).
        hidden: sizes of the fully connected hidden layers, e.g. ``(1000, 1000)``.
        dropout: probability of dropping each input of a fully connected / output layer.
        batch_norm: batch normalization after each convolution and hidden layer.
        activation: ``"relu"``, ``"sigmoid"`` or ``"tanh"``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        num_classes: int = 10,
        conv: tuple[int, ...] | list[int] = (20, 40),
        kernel_size: int = 5,
        padding: int = 0,
        convs_per_pool: int = 1,
        pool: int = 2,
        hidden: tuple[int, ...] | list[int] = (1000, 1000),
        dropout: float = 0.5,
        batch_norm: bool = True,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {activation!r}; use one of {', '.join(ACTIVATIONS)}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        if (any(c < 1 for c in conv) or any(h < 1 for h in hidden) or kernel_size < 1 or pool < 1
                or convs_per_pool < 1):
            raise ConfigError("layer sizes, kernel_size, convs_per_pool and pool must be positive integers")
        if not 0 <= padding < kernel_size:
            raise ConfigError(f"padding must be in [0, kernel_size - 1], got {padding} for kernel_size {kernel_size}")
        act = ACTIVATIONS[activation]
        self.config = dict(conv=tuple(conv), kernel_size=kernel_size, padding=padding, convs_per_pool=convs_per_pool,
                           pool=pool, hidden=tuple(hidden), dropout=dropout, batch_norm=batch_norm,
                           activation=activation)

        layers: list[nn.Module] = []
        channels, size = in_channels, image_size
        for maps in conv:
            for i in range(convs_per_pool):
                size = size + 2 * padding - kernel_size + 1
                if size < pool:
                    raise ConfigError(
                        f"image of side {image_size} is too small for {len(conv)} conv-pool layers of "
                        f"{convs_per_pool} {kernel_size}x{kernel_size} convolutions, padding {padding} and "
                        f"{pool}x{pool} pooling; use fewer or smaller layers, or more padding"
                    )
                layers.append(nn.Conv2d(channels, maps, kernel_size, padding=padding, bias=not batch_norm))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(maps))
                if i < convs_per_pool - 1:
                    layers.append(act())
                channels = maps
            layers += [nn.MaxPool2d(pool), act()]
            size = size // pool
        self.features = nn.Sequential(*layers)

        width = channels * size * size
        layers = [nn.Flatten()]
        for units in hidden:
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            layers.append(nn.Linear(width, units, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(units))
            layers.append(act())
            width = units
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(width, num_classes))
        self.classifier = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.items())
