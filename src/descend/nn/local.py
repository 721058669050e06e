"""Locally connected, tiled and partially connected layers (Deep Learning sec. 9.5).

``LocallyConnected1d/2d``  unshared convolution, eq. 9.9: every connection has its own
                           weight; "natural to give each unit its own bias".
``TiledConv1d/2d``         tiled convolution, eq. 9.10: t kernels (t_h x t_w in 2D)
                           rotated through space; biases tiled the same way.
``PartiallyConnectedConv2d`` convolution whose output channel i sees only some input
                           channels: blocks (fig. 9.15, "the first m output channels
                           connect to only the first n input channels ...") or any
                           connection table (LeNet-5's C3 layer).

Figure 9.16 compares the three sharings: locally connected (no sharing), tiled (t
kernels), convolution (t = 1). The functional forms are in
``descend.nn.functional.local``; PyTorch has none of these layers except grouped
convolution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from descend.errors import ConfigError, ShapeError
from descend.nn.conv import bias_mode, check_channels, fan_in_uniform_, init_bias_
from descend.nn.functional.conv import (
    Padding,
    as_tuple,
    check_stride,
    correlate,
    output_size,
    resolve_padding,
)
from descend.nn.functional.local import (
    locally_connected1d,
    locally_connected2d,
    tiled_conv1d,
    tiled_conv2d,
)


def position_major(weight: Tensor) -> Tensor:
    """The same ``(O, *out positions, C, *k)`` tensor, stored position-major in memory.

    Values, shape and indexing are unchanged; only the strides differ: memory order is
    ``(*out positions, *k, C, O)``, so each output position's weights are one contiguous
    (k C, O) block. That is the layout in which the locally connected layer's weight
    gradient comes out of its matrix product, so storing the weight this way saves a
    transposing copy of the layer's biggest tensor (one weight per connection) in every
    backward pass. ``weight.is_contiguous()`` is False; use ``reshape`` rather than ``view``.
    """
    d = (weight.dim() - 2) // 2                              # spatial axes
    order = (*range(1, d + 1), *range(d + 2, 2 * d + 2), d + 1, 0)
    inverse = tuple(order.index(axis) for axis in range(weight.dim()))
    return weight.permute(order).contiguous().permute(inverse)


class LocallyConnected2d(nn.Module):
    r"""Locally connected layer (unshared convolution), eq. 9.9 with stride :math:`s`:

    .. math::

        Z_{i,j,k} = \sum_{l,m,n} \bigl[ V_{l,\,(j-1) \times s + m,\,(k-1) \times s + n}\,
            w_{i,j,k,l,m,n} \bigr] + b_{i,j,k}

    ``weight`` is the book's 6-D tensor w (out channel, out row, out column, in channel,
    row offset, column offset), so the input size must be fixed: ``input_size`` = (H, W).
    It is stored position-major (:func:`position_major`: same values and indexing, not
    contiguous), the layout in which the layer's weight gradient is computed.
    ``bias``: "location" (default, one per unit), "channel", or None.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        input_size: int | Sequence[int],
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: Padding = "valid",
        bias: bool | str | None = "location",
    ) -> None:
        super().__init__()
        check_channels(in_channels, out_channels)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.input_size = as_tuple(input_size, 2, "input_size")
        self.kernel_size = as_tuple(kernel_size, 2, "kernel_size")
        self.stride = check_stride(stride, 2)
        self.padding = padding
        self.output_size = output_size(self.input_size, self.kernel_size, self.stride, padding)
        self.bias_mode = bias_mode("location" if bias is True else bias, ("location", "channel", "none"))
        fan_in = in_channels * math.prod(self.kernel_size)
        w = fan_in_uniform_(torch.empty(out_channels, *self.output_size, in_channels, *self.kernel_size), fan_in)
        self.weight = nn.Parameter(position_major(w))
        init_bias_(self, self.bias_mode, out_channels, self.output_size, fan_in)

    def forward(self, x: Tensor) -> Tensor:
        return locally_connected2d(x, self.weight, self.bias, self.stride, self.padding)

    def kernels(self) -> Tensor:
        """The (out, in, kh, kw) kernels at the centre output location (each location has its own)."""
        return self.weight[:, self.output_size[0] // 2, self.output_size[1] // 2]

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, input_size={self.input_size}, "
                f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding!r}, "
                f"bias={self.bias_mode!r}")


class LocallyConnected1d(nn.Module):
    r"""1D locally connected layer (eq. 9.9 with one spatial axis; fig. 9.14 top).

    .. math::

        Z_{i,j} = \sum_{l,m} V_{l,\,(j-1) \times s + m}\, w_{i,j,l,m} + b_{i,j}

    ``weight``: (out channel, out position, in channel, offset), stored position-major
    like :class:`LocallyConnected2d`'s; ``input_size`` = L.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        input_size: int,
        kernel_size: int,
        stride: int = 1,
        padding: Padding = "valid",
        bias: bool | str | None = "location",
    ) -> None:
        super().__init__()
        check_channels(in_channels, out_channels)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.input_size = as_tuple(input_size, 1, "input_size")
        self.kernel_size = as_tuple(kernel_size, 1, "kernel_size")
        self.stride = check_stride(stride, 1)
        self.padding = padding
        self.output_size = output_size(self.input_size, self.kernel_size, self.stride, padding)
        self.bias_mode = bias_mode("location" if bias is True else bias, ("location", "channel", "none"))
        fan_in = in_channels * self.kernel_size[0]
        w = fan_in_uniform_(torch.empty(out_channels, *self.output_size, in_channels, *self.kernel_size), fan_in)
        self.weight = nn.Parameter(position_major(w))
        init_bias_(self, self.bias_mode, out_channels, self.output_size, fan_in)

    def forward(self, x: Tensor) -> Tensor:
        return locally_connected1d(x, self.weight, self.bias, self.stride[0], self.padding)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, input_size={self.input_size[0]}, "
                f"kernel_size={self.kernel_size[0]}, stride={self.stride[0]}, "
                f"padding={self.padding!r}, bias={self.bias_mode!r}")


def _tiles(tiles: int | Sequence[int], dims: int) -> tuple[int, ...]:
    t = as_tuple(tiles, dims, "tiles")
    if any(v < 1 for v in t):
        raise ConfigError(f"Invalid tiles {tiles!r}; the number of kernels t must be >= 1")
    return t


class TiledConv2d(nn.Module):
    r"""Tiled convolution, eq. 9.10: :math:`t_h \times t_w` kernel stacks cycled through
    output positions.

    .. math::

        Z_{i,j,k} = \sum_{l,m,n} V_{l,\,j s + m,\,k s + n}\,
            K_{i,l,m,n,\,j \bmod t_h,\,k \bmod t_w} + b

    (0-based indices; the book, 1-based, writes the tile indices :math:`j \% t + 1`,
    :math:`k \% t + 1`).

    ``weight`` has the book's layout (out, in, k_h, k_w, t_h, t_w). ``bias``: "tile"
    (default; "share the biases with the same tiling pattern as the kernels"),
    "channel", or None. Works for any input size (the kernels just keep cycling); pass
    ``input_size`` to check that the tiling divides the output evenly
    (``require_whole_tiles=True``), so every kernel sees the same number of positions.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        tiles: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: Padding = "valid",
        bias: bool | str | None = "tile",
        input_size: int | Sequence[int] | None = None,
        require_whole_tiles: bool = False,
    ) -> None:
        super().__init__()
        check_channels(in_channels, out_channels)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = as_tuple(kernel_size, 2, "kernel_size")
        self.tiles = _tiles(tiles, 2)
        self.stride = check_stride(stride, 2)
        resolve_padding(padding, self.kernel_size)
        self.padding = padding
        if require_whole_tiles:
            if input_size is None:
                raise ConfigError("require_whole_tiles=True needs input_size")
            out = output_size(as_tuple(input_size, 2, "input_size"), self.kernel_size, self.stride, padding)
            if any(o % t for o, t in zip(out, self.tiles)):
                raise ShapeError(
                    f"tile count {self.tiles} does not divide the output size {out}; choose t "
                    f"dividing each output axis or set require_whole_tiles=False"
                )
        self.bias_mode = bias_mode("tile" if bias is True else bias, ("tile", "channel", "none"))
        fan_in = in_channels * math.prod(self.kernel_size)
        self.weight = nn.Parameter(
            fan_in_uniform_(torch.empty(out_channels, in_channels, *self.kernel_size, *self.tiles), fan_in)
        )
        init_bias_(self, self.bias_mode, out_channels, self.tiles, fan_in)

    def forward(self, x: Tensor) -> Tensor:
        return tiled_conv2d(x, self.weight, self.bias, self.stride, self.padding)

    def kernels(self) -> Tensor:
        """Every tile's kernel stack, (out * t_h * t_w, in, kh, kw): out channel-major, then tile."""
        return self.weight.permute(0, 4, 5, 1, 2, 3).flatten(0, 2)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"tiles={self.tiles}, stride={self.stride}, padding={self.padding!r}, "
                f"bias={self.bias_mode!r}")


class TiledConv1d(nn.Module):
    r"""1D tiled convolution (eq. 9.10 with one spatial axis; fig. 9.16 centre, t = 2).

    .. math::

        Z_{i,j} = \sum_{l,m} V_{l,\,j s + m}\, K_{i,l,m,\,j \bmod t} + b

    (0-based indices, as in :class:`TiledConv2d`).

    ``weight``: (out, in, k, t); ``bias``: "tile" (out, t), "channel" or None.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        tiles: int,
        stride: int = 1,
        padding: Padding = "valid",
        bias: bool | str | None = "tile",
    ) -> None:
        super().__init__()
        check_channels(in_channels, out_channels)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = as_tuple(kernel_size, 1, "kernel_size")
        self.tiles = _tiles(tiles, 1)
        self.stride = check_stride(stride, 1)
        resolve_padding(padding, self.kernel_size)
        self.padding = padding
        self.bias_mode = bias_mode("tile" if bias is True else bias, ("tile", "channel", "none"))
        fan_in = in_channels * self.kernel_size[0]
        self.weight = nn.Parameter(
            fan_in_uniform_(torch.empty(out_channels, in_channels, *self.kernel_size, *self.tiles), fan_in)
        )
        init_bias_(self, self.bias_mode, out_channels, self.tiles, fan_in)

    def forward(self, x: Tensor) -> Tensor:
        return tiled_conv1d(x, self.weight, self.bias, self.stride[0], self.padding)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size[0]}, "
                f"tiles={self.tiles[0]}, stride={self.stride[0]}, padding={self.padding!r}, "
                f"bias={self.bias_mode!r}")


def block_connections(in_channels: int, out_channels: int, groups: int) -> Tensor:
    """Fig. 9.15's table: output block g connects only to input block g (bool (out, in))."""
    check_channels(in_channels, out_channels, groups)
    out_block = torch.arange(out_channels) // (out_channels // groups)
    in_block = torch.arange(in_channels) // (in_channels // groups)
    return out_block[:, None] == in_block[None, :]


class PartiallyConnectedConv2d(nn.Module):
    r"""Convolution in which each output channel sees only a subset of input channels (sec. 9.5).

    ``connections`` is a bool (out_channels, in_channels) table :math:`T`: True where output
    channel :math:`i` is a function of input channel :math:`l`, so that

    .. math::

        Z_{i,j,k} = \sum_{l \,:\, T_{i,l}} \sum_{m,n} V_{l,\,(j-1) \times s + m,\,(k-1) \times s + n}\,
            K_{i,l,m,n} + b_i.

    ``groups=g`` instead gives fig. 9.15's
    block pattern and runs as a grouped convolution (``torch`` ``groups``), which skips
    the absent connections' work; a general table (e.g. LeNet-5's C3) multiplies the
    kernel by the table, so absent connections stay exactly zero through training.
    "Modeling interactions between few channels allows the network to have fewer
    parameters ... without reducing the number of hidden units."
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        connections: Tensor | None = None,
        groups: int | None = None,
        stride: int | Sequence[int] = 1,
        padding: Padding = "valid",
        bias: bool = True,
    ) -> None:
        super().__init__()
        if (connections is None) == (groups is None):
            raise ConfigError("give exactly one of connections (a bool table) or groups")
        check_channels(in_channels, out_channels, groups or 1)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = as_tuple(kernel_size, 2, "kernel_size")
        self.stride = check_stride(stride, 2)
        resolve_padding(padding, self.kernel_size)
        self.padding = padding
        self.groups = groups or 1
        if connections is not None:
            connections = torch.as_tensor(connections, dtype=torch.bool)
            if tuple(connections.shape) != (out_channels, in_channels):
                raise ShapeError(
                    f"connections must be a bool table of shape (out_channels, in_channels) = "
                    f"{(out_channels, in_channels)}, got {tuple(connections.shape)}"
                )
            if not connections.any(dim=1).all():
                raise ConfigError("every output channel needs at least one input connection")
            self.register_buffer("connections", connections)
            fan_in = connections.sum(dim=1).to(torch.float32)       # per output channel
            w = torch.empty(out_channels, in_channels, *self.kernel_size)
            bound = (1.0 / (fan_in * math.prod(self.kernel_size)).sqrt()).reshape(-1, 1, 1, 1)
            with torch.no_grad():
                w.uniform_(-1.0, 1.0).mul_(bound).mul_(connections[:, :, None, None])
            self.weight = nn.Parameter(w)
        else:
            self.register_buffer("connections", block_connections(in_channels, out_channels, self.groups))
            fan_in = in_channels // self.groups * math.prod(self.kernel_size)
            self.weight = nn.Parameter(
                fan_in_uniform_(torch.empty(out_channels, in_channels // self.groups, *self.kernel_size), fan_in)
            )
        self.use_table = groups is None
        fan = in_channels // self.groups * math.prod(self.kernel_size)
        self.bias = nn.Parameter(fan_in_uniform_(torch.empty(out_channels), fan)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        if self.use_table:
            weight = self.weight * self.connections[:, :, None, None].to(self.weight.dtype)
            return correlate(x, weight, self.bias, self.stride, self.padding)
        return correlate(x, self.weight, self.bias, self.stride, self.padding, self.groups)

    def dense_weight(self) -> Tensor:
        """The equivalent full (out, in, kh, kw) kernel, zero where channels are unconnected."""
        if self.use_table:
            return self.weight * self.connections[:, :, None, None].to(self.weight.dtype)
        out_g = self.out_channels // self.groups
        in_g = self.in_channels // self.groups
        dense = self.weight.new_zeros(self.out_channels, self.in_channels, *self.kernel_size)
        for g in range(self.groups):   # a handful of groups, not positions
            dense[g * out_g:(g + 1) * out_g, g * in_g:(g + 1) * in_g] = self.weight[g * out_g:(g + 1) * out_g]
        return dense

    kernels = dense_weight  # the pictures of descend.viz show the kernels as applied

    def extra_repr(self) -> str:
        how = f"groups={self.groups}" if not self.use_table else f"connections={int(self.connections.sum())}"
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, {how}, "
                f"stride={self.stride}, padding={self.padding!r}")

