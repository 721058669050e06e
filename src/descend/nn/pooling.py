"""Pooling layers (Deep Learning sec. 9.3, figs. 9.8-9.11; Nielsen ch. 6).

* ``Pool``: max / average / L2 / distance-weighted pooling over k-wide regions s apart,
  keeping the partial last region (fig. 9.10); 1D or 2D input.
* ``GlobalPool``: one summary per feature map (fig. 9.11 right).
* ``AdaptivePool``: a fixed number of regions whatever the input size (fig. 9.11 centre).
* ``ChannelPool``: pooling across groups of channels (maxout units).
* ``MaxoutConv2d``: separately parametrized filters + a max over them: the learned
  invariances of fig. 9.9 (e.g. several rotated "5" detectors).

The computations are in ``descend.nn.functional.pooling``; see its docstring for the
partial-region rule and the differences from ``torch.nn.MaxPool2d`` & co.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from descend.errors import ConfigError
from descend.nn.conv import Conv2d
from descend.nn.functional.conv import Padding
from descend.nn.functional.pooling import KINDS, adaptive_pool, channel_pool, global_pool, pool


class Pool(nn.Module):
    r"""Pooling of ``kind`` "max", "avg", "l2" or "weighted" (sec. 9.3) over 1D or 2D maps.

    Over each region :math:`\mathcal{R}_j` (width ``kernel_size``, spaced ``stride`` apart):

    .. math::

        \begin{aligned}
        &\text{max:} && y_j = \max_{i \in \mathcal{R}_j} x_i
        &&\text{avg:} && y_j = \frac{1}{|\mathcal{R}_j|} \sum_{i \in \mathcal{R}_j} x_i \\
        &\text{l2:} && y_j = \sqrt{\sum_{i \in \mathcal{R}_j} x_i^2}
        &&\text{weighted:} && y_j = \frac{\sum_{i \in \mathcal{R}_j} w_i x_i}{\sum_{i \in \mathcal{R}_j} w_i},\
            w_i = e^{-d_i^2 / (2 \sigma^2)}
        \end{aligned}

    with :math:`d_i` the distance of cell :math:`i` from the region centre.

    ``stride`` defaults to the region width (non-overlapping regions). ``partial=True``
    keeps a smaller last region rather than ignoring detector units (fig. 9.10).
    ``sigma`` sets the Gaussian distance weighting of "weighted" pooling.
    """

    def __init__(
        self,
        kind: str,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] | None = None,
        partial: bool = True,
        sigma: float | None = None,
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ConfigError(f"Unknown pooling kind {kind!r}; use one of {', '.join(KINDS)}")
        self.kind, self.kernel_size, self.stride = kind, kernel_size, stride
        self.partial, self.sigma = partial, sigma

    def forward(self, x: Tensor) -> Tensor:
        return pool(x, self.kind, self.kernel_size, self.stride, self.partial, self.sigma)

    def extra_repr(self) -> str:
        return (f"{self.kind!r}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"partial={self.partial}")


class GlobalPool(nn.Module):
    r"""Pool each whole feature map to one number, ``(N, C, *spatial) -> (N, C)`` (fig. 9.11
    right); for "avg", :math:`y_{n,c} = \frac{1}{P} \sum_p x_{n,c,p}` over the :math:`P`
    positions."""

    def __init__(self, kind: str = "avg") -> None:
        super().__init__()
        if kind not in ("avg", "max", "l2"):
            raise ConfigError(f"Unknown global pooling kind {kind!r}; use 'avg', 'max' or 'l2'")
        self.kind = kind

    def forward(self, x: Tensor) -> Tensor:
        return global_pool(x, self.kind)

    def extra_repr(self) -> str:
        return repr(self.kind)


class AdaptivePool(nn.Module):
    r"""Pool to ``output_size`` regions per axis for any input size (sec. 9.3, fig. 9.11 centre).

    Region :math:`i` of :math:`n` on an axis of length :math:`L` covers
    :math:`[\lfloor i L / n \rfloor, \lceil (i + 1) L / n \rceil)`, pooled by ``kind``
    as in :class:`Pool`.

    "The final pooling layer of the network may be defined to output four sets of summary
    statistics, one for each quadrant of an image, regardless of the image size":
    ``AdaptivePool((2, 2))``.
    """

    def __init__(self, output_size: int | Sequence[int], kind: str = "max") -> None:
        super().__init__()
        if kind not in ("max", "avg", "l2"):
            raise ConfigError(f"Unknown adaptive pooling kind {kind!r}; use 'max', 'avg' or 'l2'")
        self.output_size, self.kind = output_size, kind

    def forward(self, x: Tensor) -> Tensor:
        return adaptive_pool(x, self.output_size, self.kind)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, kind={self.kind!r}"


class ChannelPool(nn.Module):
    r"""Pool groups of ``pool_size`` consecutive channels (maxout units for kind="max"):
    with :math:`k` = ``pool_size``, :math:`y_{n,i,p} = \max_{0 \le r < k} x_{n,\,ik + r,\,p}`."""

    def __init__(self, pool_size: int, kind: str = "max") -> None:
        super().__init__()
        if not isinstance(pool_size, int) or pool_size < 1:
            raise ConfigError(f"Invalid pool_size {pool_size!r}; must be an int >= 1")
        self.pool_size, self.kind = pool_size, kind

    def forward(self, x: Tensor) -> Tensor:
        return channel_pool(x, self.pool_size, self.kind)

    def extra_repr(self) -> str:
        return f"pool_size={self.pool_size}, kind={self.kind!r}"


class MaxoutConv2d(nn.Module):
    r"""``pieces`` separately parametrized filters per output channel, max-pooled together.

    Fig. 9.9: "a set of three learned filters and a max pooling unit can learn to become
    invariant to rotation"; with the max over channels these are the maxout units of
    Goodfellow et al. (2013). With :math:`P` = ``pieces`` and kernels :math:`K`, output
    channel :math:`i` is

    .. math::

        y_i = \max_{0 \le p < P} \operatorname{conv}(x, K_{iP + p}).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        pieces: int,
        stride: int | Sequence[int] = 1,
        padding: Padding = "valid",
        bias: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(pieces, int) or pieces < 1:
            raise ConfigError(f"Invalid pieces {pieces!r}; the number of filters per unit must be >= 1")
        self.pieces = pieces
        self.conv = Conv2d(in_channels, out_channels * pieces, kernel_size, stride, padding, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return channel_pool(self.conv(x), self.pieces, "max")

    def kernels(self) -> Tensor:
        """The (out * pieces, in, kh, kw) kernels of the convolution whose pieces are pooled."""
        return self.conv.kernels()

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}"
