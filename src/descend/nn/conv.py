"""Convolutional layers: cross-correlation or true convolution, 1D/2D/3D (Deep Learning ch. 9).

``Conv1d`` / ``Conv2d`` / ``Conv3d`` hold a kernel stack K of shape ``(O, C / groups, *k)``
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
    r"""Fill with :math:`U(-1/\sqrt{m}, 1/\sqrt{m})`, :math:`m` = fan-in (sec. 8.4; torch's
    default for conv)."""
    bound = 1.0 / math.sqrt(max(fan_in, 1))
    with torch.no_grad():
        return t.uniform_(-bound, bound)


def init_bias_(module: nn.Module, mode: str, out_channels: int, unit_shape: Sequence[int], fan_in: int) -> None:
    """Register ``module.bias`` for a bias ``mode`` (normalized by :func:`bias_mode`):
    "channel": one per output channel, (out_channels,); "none": no bias; any other mode
    ("location", "tile"): one per output channel and unit, ``(out_channels, *unit_shape)``."""
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
    r"""1D convolutional layer (table 9.1: audio, skeleton animation); eq. 9.8 on one axis.

    With kernel stack :math:`K` (``weight``, ``(O, C / groups, k)``), input :math:`V`
    (zero-padded as ``padding`` says), stride :math:`s` and bias :math:`b`:

    .. math::

        Z_{i,j} = \sum_{l,m} V_{l,\,(j-1) \times s + m}\, K_{i,l,m} + b_i,

    cross-correlation (the default); ``flip=True`` flips :math:`K` first, true convolution
    (eq. 9.3 per channel pair). The arguments are those of :class:`Conv2d`.
    """

    dims = 1


class Conv2d(_ConvNd):
    r"""2D convolutional layer (table 9.1: spectrograms, colour images); eqs. 9.5-9.8.

    With kernel stack :math:`K` (``weight``, ``(O, C / groups, kh, kw)``), input :math:`V`
    (zero-padded as ``padding`` says), stride :math:`s` and bias :math:`b`, the default is
    the strided multi-channel cross-correlation of eq. 9.8,

    .. math::

        Z_{i,j,k} = c(K, V, s)_{i,j,k} + b_i
            = \sum_{l,m,n} V_{l,\,(j-1) \times s + m,\,(k-1) \times s + n}\, K_{i,l,m,n} + b_i,

    and ``flip=True`` gives true convolution, eq. 9.5 for each channel pair (then strided),

    .. math::

        S(i, j) = (K * I)(i, j) = \sum_m \sum_n I(i - m, j - n) K(m, n).

    ``bias="location"`` gives one bias :math:`b_{i,j,k}` per output unit (needs
    ``input_size``); ``groups`` restricts the sum over :math:`l` to the input block of
    output channel :math:`i` (fig. 9.15).
    """

    dims = 2

    def kernels(self) -> Tensor:
        """The (out, in / groups, kh, kw) kernels (the pictures of :mod:`descend.viz`)."""
        return self.weight


class Conv3d(_ConvNd):
    r"""3D convolutional layer (table 9.1: volumes such as CT scans, colour video).

    Eq. 9.8 with three spatial axes:

    .. math::

        Z_{i,j,k,r} = \sum_{l,m,n,p} V_{l,\,(j-1) \times s + m,\,(k-1) \times s + n,\,(r-1) \times s + p}\,
            K_{i,l,m,n,p} + b_i,

    or true convolution with ``flip=True``. The arguments are those of :class:`Conv2d`.
    """

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
        """:math:`h(K, x, s) + b` of eq. 9.13; ``output_size`` picks among the sizes a stride allows."""
        return conv_transpose(x, self.weight, self.bias, self.stride, self.padding,
                              output_size, self.groups)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding!r}, bias={self.bias is not None}")


class ConvTranspose1d(_ConvTransposeNd):
    r"""1D transpose convolution, h of eq. 9.13 as a layer (upsampling a sequence).

    .. math::

        h(K, G, s)_{i,j} = \sum_{\substack{l,m \\ (l-1) \times s + m = j}} \sum_q K_{q,i,m}\, G_{q,l} + b_i

    with :math:`K` the kernel of the forward convolution this transposes; see
    :class:`ConvTranspose2d`.
    """

    dims = 1


class ConvTranspose2d(_ConvTransposeNd):
    r"""2D transpose convolution, h of eq. 9.13 as a layer (upsampling, structured output).

    .. math::

        h(K, G, s)_{i,j,k} = \sum_{\substack{l,m \\ (l-1) \times s + m = j}}
            \sum_{\substack{n,p \\ (n-1) \times s + p = k}} \sum_q K_{q,i,m,p}\, G_{q,l,n} + b_i

    with :math:`K` the kernel of the forward convolution this transposes (``weight``,
    ``(in_channels, out_channels / groups, *k)``) and :math:`G` the input. It is the
    multiplication by the transpose of the convolution's matrix.
    """

    dims = 2


class ConvTranspose3d(_ConvTransposeNd):
    r"""3D transpose convolution, h of eq. 9.13 as a layer (volumes, video): eq. 9.13 with a
    third spatial axis, as in :class:`ConvTranspose2d`,

    .. math::

        h(K, G, s)_{i,j,k,r} = \sum_{\substack{l,m \\ (l-1) \times s + m = j}}
            \sum_{\substack{n,p \\ (n-1) \times s + p = k}}
            \sum_{\substack{u,w \\ (u-1) \times s + w = r}} \sum_q K_{q,i,m,p,w}\, G_{q,l,n,u} + b_i.
    """

    dims = 3
