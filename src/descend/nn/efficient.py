"""Layers built on the efficient convolution algorithms of Deep Learning sec. 9.8.

``FFTConv2d``        a convolutional layer computed in the frequency domain (cheaper than
                     direct convolution for large kernels; see ``benchmarks/conv.py``
                     for the crossover).
``SeparableConv2d``  a layer whose kernels are sums of ``rank`` outer products of a
                     column and a row vector, applied as two 1D passes: O(2 r k) work
                     and parameters per output instead of O(k^2). ``from_kernel`` turns
                     any trained kernel into its best rank-r approximation by SVD.

Both compute cross-correlation with the padding and stride options of ``Conv2d``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from descend.errors import ConfigError
from descend.nn.conv import check_channels, fan_in_uniform_
from descend.nn.functional.conv import Padding, as_tuple, check_stride, resolve_padding
from descend.nn.functional.efficient import (
    fft_conv,
    low_rank_kernel,
    separable_conv2d,
    separable_kernel,
)


class FFTConv2d(nn.Module):
    r"""2D convolutional layer evaluated with the FFT (sec. 9.8).

    By the convolution theorem, per input/output channel pair and summed over input
    channels :math:`c` (:math:`\mathcal{F}` the 2D discrete Fourier transform, :math:`\odot`
    the element-wise product, :math:`\overline{\,\cdot\,}` the complex conjugate):

    .. math::

        Z_o = \mathcal{F}^{-1}\Bigl( \sum_c \mathcal{F}(V_c) \odot \overline{\mathcal{F}(K_{o,c})} \Bigr)
            \quad \text{(correlation)}, \qquad
        Z_o = \mathcal{F}^{-1}\Bigl( \sum_c \mathcal{F}(V_c) \odot \mathcal{F}(K_{o,c}) \Bigr)
            \quad \text{(convolution)},

    with :math:`V` and :math:`K` zero-padded to a common size and the wrapped-around
    entries dropped.

    Same parameters and outputs as ``descend.nn.Conv2d`` (groups = 1); ``flip=True`` for
    true convolution. Worth it for large kernels only: the FFT costs the same for any k.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: Padding = "valid",
        bias: bool = True,
        flip: bool = False,
    ) -> None:
        super().__init__()
        check_channels(in_channels, out_channels)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = as_tuple(kernel_size, 2, "kernel_size")
        self.stride = check_stride(stride, 2)
        resolve_padding(padding, self.kernel_size)
        self.padding, self.flip = padding, flip
        fan_in = in_channels * math.prod(self.kernel_size)
        self.weight = nn.Parameter(fan_in_uniform_(torch.empty(out_channels, in_channels, *self.kernel_size), fan_in))
        self.bias = nn.Parameter(fan_in_uniform_(torch.empty(out_channels), fan_in)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return fft_conv(x, self.weight, self.bias, self.stride, self.padding, self.flip)

    def kernels(self) -> Tensor:
        """The (out, in, kh, kw) kernels."""
        return self.weight

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding!r}, bias={self.bias is not None}")


class SeparableConv2d(nn.Module):
    r"""Convolution with low-rank kernels, a sum of separable ones (sec. 9.8):

    .. math::

        K_{o,c} = \sum_{r=1}^{R} u_{o,c,r}\, v_{o,c,r}^\top, \qquad
        K_{o,c,m,n} = \sum_{r=1}^{R} u_{o,c,r,m}\, v_{o,c,r,n},

    with :math:`u` = ``column`` (O, C, rank, kh), :math:`v` = ``row`` (O, C, rank, kw) and
    :math:`R` = ``rank``. Rank 1 is the
    book's separable kernel. Computed as a vertical then a horizontal 1D pass.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        rank: int = 1,
        stride: int | Sequence[int] = 1,
        padding: Padding = "valid",
        bias: bool = True,
    ) -> None:
        super().__init__()
        check_channels(in_channels, out_channels)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = as_tuple(kernel_size, 2, "kernel_size")
        if not isinstance(rank, int) or not 1 <= rank <= min(self.kernel_size):
            raise ConfigError(f"Invalid rank {rank!r}; must lie in 1..{min(self.kernel_size)}")
        self.rank = rank
        self.stride = check_stride(stride, 2)
        resolve_padding(padding, self.kernel_size)
        self.padding = padding
        kh, kw = self.kernel_size
        fan_in = in_channels * kh * kw
        # Products of two U(-a, a) factors: a = fan_in^-1/4 keeps the kernel's scale near
        # torch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)) init.
        a = fan_in ** -0.25 / math.sqrt(rank)
        self.column = nn.Parameter(torch.empty(out_channels, in_channels, rank, kh).uniform_(-a, a))
        self.row = nn.Parameter(torch.empty(out_channels, in_channels, rank, kw).uniform_(-a, a))
        self.bias = nn.Parameter(fan_in_uniform_(torch.empty(out_channels), fan_in)) if bias else None

    @classmethod
    def from_kernel(cls, weight: Tensor, bias: Tensor | None = None, rank: int = 1,
                    stride: int | Sequence[int] = 1, padding: Padding = "valid") -> SeparableConv2d:
        """The best rank-``rank`` separable layer for a trained (O, C, kh, kw) kernel (SVD)."""
        out_channels, in_channels, kh, kw = weight.shape
        layer = cls(in_channels, out_channels, (kh, kw), rank, stride, padding, bias is not None)
        column, row = low_rank_kernel(weight.detach(), rank)
        with torch.no_grad():
            layer.column.copy_(column)
            layer.row.copy_(row)
            if bias is not None:
                layer.bias.copy_(bias.detach())
        return layer

    def kernel(self) -> Tensor:
        """The full (O, C, kh, kw) kernel this layer applies."""
        return separable_kernel(self.column, self.row)

    kernels = kernel

    def forward(self, x: Tensor) -> Tensor:
        return separable_conv2d(x, self.column, self.row, self.bias, self.stride, self.padding)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"rank={self.rank}, stride={self.stride}, padding={self.padding!r}")
