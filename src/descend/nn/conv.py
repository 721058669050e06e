"""Convolutional layers: cross-correlation or true convolution, 1D/2D/3D (Deep Learning ch. 9).

``Conv1d`` / ``Conv2d`` / ``Conv3d`` hold a kernel stack K of shape (O, C / groups, *k)
(eq. 9.7) and compute, per example,

    Z = c(K, pad(V), s) + b                  (eq. 9.8, cross-correlation, the default)
    Z = convolve(V, K) + b                   (eq. 9.5, ``flip=True``: kernel flipped)

with padding "valid", "same" (odd or even kernels), "full" or explicit zeros, and any
stride. ``groups`` connects output-channel block g only to input-channel block g
(fig. 9.15). The bias (sec. 9.5) is one per output channel ("channel", shared over
positions as is typical), one per output unit ("location", unshared: needs
``input_size`` so the output map has a known size), or none.

``ConvTranspose1d/2d/3d`` multiply by the transpose of the convolution matrix, h of
eq. 9.13, for upsampling and structured outputs (sec. 9.5-9.6); the original size can
be passed to ``forward`` as ``output_size``.

Differences from ``torch.nn.Conv2d``: the "full" mode and uneven "same" padding with
strides, true convolution, per-location biases and descend errors; the parameters have
the same layout and initialization, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (sec. 8.4).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from descend.errors import ConfigError, ShapeError
from descend.nn.functional.conv import (
    Padding,
    as_tuple,
    check_stride,
    conv_transpose,
    convolve,
    correlate,
    output_size,
    resolve_padding,
)

BIASES = ("channel", "location", "none")


def bias_mode(bias: bool | str | None, allowed: Sequence[str] = BIASES) -> str:
    """Normalize a bias option: True -> "channel", False/None -> "none"."""
    if bias is True:
        return "channel"
    if bias is False or bias is None:
        return "none"
    if bias not in allowed:
        raise ConfigError(f"Unknown bias {bias!r}; use one of {', '.join(allowed)}, True or False")
    return bias


def fan_in_uniform_(t: Tensor, fan_in: int) -> Tensor:
    """Fill with U(-1/sqrt(m), 1/sqrt(m)), m = fan-in (sec. 8.4; torch's default for conv)."""
    bound = 1.0 / math.sqrt(max(fan_in, 1))
    with torch.no_grad():
        return t.uniform_(-bound, bound)


def init_bias_(module: nn.Module, mode: str, out_channels: int, unit_shape: Sequence[int], fan_in: int) -> None:
    """Register ``module.bias`` for a bias ``mode`` (normalized by :func:`bias_mode`):
    "channel": one per output channel, (out_channels,); "none": no bias; any other mode
    ("location", "tile"): one per output channel and unit, (out_channels, *unit_shape)."""
    if mode == "none":
        module.register_parameter("bias", None)
        return
    shape = (out_channels,) if mode == "channel" else (out_channels, *unit_shape)
    module.bias = nn.Parameter(fan_in_uniform_(torch.empty(shape), fan_in))


def check_channels(in_channels: int, out_channels: int, groups: int = 1) -> None:
    for name, v in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"Invalid {name}: {v!r}; must be an int >= 1")
    if in_channels % groups or out_channels % groups:
        raise ConfigError(
            f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}"
        )


class _ConvNd(nn.Module):
    dims = 2

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: Padding = "valid",
        groups: int = 1,
        bias: bool | str | None = "channel",
        flip: bool = False,
        input_size: int | Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        check_channels(in_channels, out_channels, groups)
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = as_tuple(kernel_size, self.dims, "kernel_size")
        if any(k < 1 for k in self.kernel_size):
            raise ConfigError(f"Invalid kernel_size {kernel_size!r}; must be >= 1")
        self.stride = check_stride(stride, self.dims)
        resolve_padding(padding, self.kernel_size)  # validate now, not at the first batch
        self.padding = padding
        self.flip = bool(flip)
        self.bias_mode = bias_mode(bias)
        fan_in = in_channels // groups * math.prod(self.kernel_size)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        fan_in_uniform_(self.weight, fan_in)
        self.input_size = None if input_size is None else as_tuple(input_size, self.dims, "input_size")
        out: tuple[int, ...] = ()
        if self.bias_mode == "location":
            if self.input_size is None:
                raise ConfigError(
                    "bias='location' (one bias per output unit) needs input_size, the spatial "
                    "size of the input, to know the size of the output map"
                )
            out = output_size(self.input_size, self.kernel_size, self.stride, padding)
        init_bias_(self, self.bias_mode, out_channels, out, fan_in)

    def forward(self, x: Tensor) -> Tensor:
        op = convolve if self.flip else correlate
        shared = self.bias if self.bias_mode == "channel" else None
        z = op(x, self.weight, shared, self.stride, self.padding, self.groups)
        if self.bias_mode == "location":
            if tuple(z.shape[2:]) != tuple(self.bias.shape[1:]):
                raise ShapeError(
                    f"this layer has one bias per location for inputs of size {self.input_size}; "
                    f"got an input of size {tuple(x.shape[2:])}"
                )
            z = z + self.bias
        return z

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}, padding={self.padding!r}, bias={self.bias_mode!r}")
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.flip:
            s += ", flip=True"
        return s


class Conv1d(_ConvNd):
    """1D convolutional layer (table 9.1: audio, skeleton animation); see module docstring."""

    dims = 1


class Conv2d(_ConvNd):
    """2D convolutional layer (table 9.1: spectrograms, colour images); eqs. 9.5-9.8."""

    dims = 2

    def kernels(self) -> Tensor:
        """The (out, in / groups, kh, kw) kernels (the pictures of :mod:`descend.viz`)."""
        return self.weight


class Conv3d(_ConvNd):
    """3D convolutional layer (table 9.1: volumes such as CT scans, colour video)."""

    dims = 3


class _ConvTransposeNd(nn.Module):
    dims = 2

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: Padding = "valid",
        groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        check_channels(in_channels, out_channels, groups)
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = as_tuple(kernel_size, self.dims, "kernel_size")
        self.stride = check_stride(stride, self.dims)
        resolve_padding(padding, self.kernel_size)
        self.padding = padding
        # Layout of the forward convolution this transposes: (in, out / groups, *k).
        self.weight = nn.Parameter(torch.empty(in_channels, out_channels // groups, *self.kernel_size))
        fan_in = out_channels // groups * math.prod(self.kernel_size)
        fan_in_uniform_(self.weight, fan_in)
        self.bias = nn.Parameter(fan_in_uniform_(torch.empty(out_channels), fan_in)) if bias else None

    def forward(self, x: Tensor, output_size: Sequence[int] | None = None) -> Tensor:
        """h(K, x, s) + b of eq. 9.13; ``output_size`` picks among the sizes a stride allows."""
        return conv_transpose(x, self.weight, self.bias, self.stride, self.padding,
                              output_size, self.groups)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding!r}, bias={self.bias is not None}")


class ConvTranspose1d(_ConvTransposeNd):
    """1D transpose convolution, h of eq. 9.13 as a layer (upsampling a sequence)."""

    dims = 1


class ConvTranspose2d(_ConvTransposeNd):
    """2D transpose convolution, h of eq. 9.13 as a layer (upsampling, structured output)."""

    dims = 2


class ConvTranspose3d(_ConvTransposeNd):
    """3D transpose convolution, h of eq. 9.13 as a layer (volumes, video)."""

    dims = 3
