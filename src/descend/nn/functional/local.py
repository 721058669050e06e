"""Unshared and tiled convolution (Deep Learning sec. 9.5, eqs. 9.9-9.10, figs. 9.14-9.16).

    locally connected  Z[i,j,k] = sum_{l,m,n} V[l, j+m, k+n] w[i,j,k,l,m,n]        eq. 9.9
    tiled              Z[i,j,k] = sum_{l,m,n} V[l, j+m, k+n] K[i,l,m,n, j%t, k%t]  eq. 9.10

(0-based.) All three layers of fig. 9.16 have the same connections; they differ in how
weights are shared: one weight per connection (locally connected), a set of t x t
kernels cycled through space (tiled), one kernel everywhere (convolution, t = 1). When t
equals the output width, tiled convolution is a locally connected layer.

Both generalize to a stride s (output j reads V[j*s + m]) and to zero padding, and both
come in 1D (data of table 9.1 with one spatial axis) and 2D. PyTorch has neither.

Speed: no Python loop over positions. The locally connected layer gathers every
receptive field with ``unfold`` (a view for 1D / 2D) and contracts it with the per-position
weights as one batched matrix product (batch = output positions). The tiled layer with
few tiles (t_h t_w <= 4) is one *grouped* strided convolution: output positions with the
same tile offset (p, q) form a stride-(t*s) convolution of the input shifted by (p*s, q*s),
so the t*t shifted copies are stacked as channel groups and convolved in a single call;
with more tiles (where that grouped convolution gets slow) it gathers the receptive
fields, groups them by tile offset and does one batched matrix product (batch = tiles).
``benchmarks/conv.py`` measures both against a per-position loop and a shared Conv2d.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from descend.errors import ShapeError
from descend.nn.functional.conv import (
    Padding,
    as_tuple,
    check_stride,
    output_size,
    pad,
    resolve_padding,
)


def _check_input(x: Tensor, dims: int, channels: int, name: str) -> None:
    if x.dim() != dims + 2:
        raise ShapeError(
            f"{name} expects input of shape (batch, channels, *{dims} spatial axes), got "
            f"{tuple(x.shape)}; add a batch axis with x.unsqueeze(0) if it is one example"
        )
    if x.shape[1] != channels:
        raise ShapeError(
            f"channel mismatch: {name} weight expects {channels} input channels, the input "
            f"has {x.shape[1]}"
        )


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward makes the incoming gradient contiguous.

    The gradient of the (L, N, O) batched product arrives permuted; CPU ``bmm`` on a
    permuted batch falls back to a slow per-matrix path, so lay it out once here.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad.contiguous()


def locally_connected2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: Padding = "valid",
) -> Tensor:
    """Locally connected (unshared convolution) layer, eq. 9.9, with stride and padding.

    x: (N, C, H, W). weight: (O, OH, OW, C, kh, kw), the 6-D tensor w of eq. 9.9 indexed
    (output channel, output row, output column, input channel, row offset, column offset).
    bias: None, (O,) shared per channel, or (O, OH, OW) one per unit (sec. 9.5: "for
    locally connected layers it is natural to give each unit its own bias").
    """
    if weight.dim() != 6:
        raise ShapeError(
            f"locally_connected2d weight must have shape (out, out_h, out_w, in, k_h, k_w) "
            f"(eq. 9.9), got {tuple(weight.shape)}"
        )
    n_out, oh, ow, n_in, kh, kw = weight.shape
    _check_input(x, 2, n_in, "locally_connected2d")
    strides = check_stride(stride, 2)
    expected = output_size(tuple(x.shape[2:]), (kh, kw), strides, padding)
    if expected != (oh, ow):
        raise ShapeError(
            f"locally_connected2d weight has an output grid of {(oh, ow)} but a {(kh, kw)} "
            f"kernel with stride {strides} and padding {padding!r} on a "
            f"{tuple(x.shape[2:])} input gives {expected}; build the weight for this input size"
        )
    xp = pad(x, resolve_padding(padding, (kh, kw)))
    # Receptive fields: (N, C, OH, OW, kh, kw), a strided view of the input.
    fields = xp.unfold(2, kh, strides[0]).unfold(3, kw, strides[1])
    n = x.shape[0]
    # (OH*OW, N, C*kh*kw) @ (OH*OW, C*kh*kw, O) -> (OH*OW, N, O): a batch of small GEMMs.
    fields = fields.permute(2, 3, 0, 1, 4, 5).reshape(oh * ow, n, n_in * kh * kw)
    w = weight.permute(1, 2, 3, 4, 5, 0).reshape(oh * ow, n_in * kh * kw, n_out)
    z = _ContiguousGrad.apply(torch.bmm(fields, w)).permute(1, 2, 0).reshape(n, n_out, oh, ow)
    return _add_bias(z, bias, "locally_connected2d")


def locally_connected1d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int = 1,
    padding: Padding = "valid",
) -> Tensor:
    """1D locally connected layer (eq. 9.9 with one spatial axis; fig. 9.14 top).

    x: (N, C, L); weight: (O, OL, C, k); bias: None, (O,) or (O, OL).
    """
    if weight.dim() != 4:
        raise ShapeError(
            f"locally_connected1d weight must have shape (out, out_len, in, k), got "
            f"{tuple(weight.shape)}"
        )
    _check_input(x, 1, weight.shape[2], "locally_connected1d")
    stride = as_tuple(stride, 1, "stride")[0]
    pads = resolve_padding(padding, (weight.shape[3],))[0]
    w2 = weight[:, None, :, :, None, :]                  # (O, 1, OL, C, 1, k)
    b2 = bias[:, None, :] if bias is not None and bias.dim() == 2 else bias
    z = locally_connected2d(pad(x, (pads,))[:, :, None, :], w2, b2, (1, stride), "valid")
    return z[:, :, 0, :]


def _tile_counts(tiles: int | Sequence[int]) -> tuple[int, int]:
    t = as_tuple(tiles, 2, "tiles")
    if any(v < 1 for v in t):
        raise ShapeError(f"Invalid number of tiles {tiles!r}; t must be >= 1 on each axis")
    return t


def tiled_conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: Padding = "valid",
) -> Tensor:
    """Tiled convolution, eq. 9.10: t_h x t_w kernels cycled over the output positions.

    x: (N, C, H, W). weight: (O, C, kh, kw, t_h, t_w), the book's 6-D K indexed
    (output channel, input channel, row offset, column offset, j % t, k % t).
    bias: None, (O,) per channel, or (O, t_h, t_w) per tile (sec. 9.5: biases "share
    ... the same tiling pattern as the kernels"). With t = 1 this is ordinary
    convolution; with t equal to the output size, a locally connected layer.
    """
    if weight.dim() != 6:
        raise ShapeError(
            f"tiled_conv2d weight must have shape (out, in, k_h, k_w, t_h, t_w) (eq. 9.10), "
            f"got {tuple(weight.shape)}"
        )
    n_out, n_in, kh, kw, th, tw = weight.shape
    _check_input(x, 2, n_in, "tiled_conv2d")
    sh, sw = check_stride(stride, 2)
    oh, ow = output_size(tuple(x.shape[2:]), (kh, kw), (sh, sw), padding)
    xp = pad(x, resolve_padding(padding, (kh, kw)))
    ah, aw = -(-oh // th), -(-ow // tw)          # output positions per tile along each axis
    if th * tw <= 4:
        z = _tiled_grouped(xp, weight, (sh, sw), (oh, ow), (ah, aw))
    else:
        z = _tiled_gemm(xp, weight, (sh, sw), (oh, ow), (ah, aw))
    if bias is not None and bias.dim() == 3:
        if bias.shape != (n_out, th, tw):
            raise ShapeError(
                f"tiled bias must have shape (out, t_h, t_w) = {(n_out, th, tw)}, got "
                f"{tuple(bias.shape)}"
            )
        return z + bias.repeat(1, ah, aw)[None, :, :oh, :ow]
    return _add_bias(z, bias, "tiled_conv2d")


def tiled_conv1d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int = 1,
    padding: Padding = "valid",
) -> Tensor:
    """1D tiled convolution (eq. 9.10 with one spatial axis; fig. 9.16 centre).

    x: (N, C, L); weight: (O, C, k, t); bias: None, (O,) or (O, t).
    """
    if weight.dim() != 4:
        raise ShapeError(
            f"tiled_conv1d weight must have shape (out, in, k, t), got {tuple(weight.shape)}"
        )
    _check_input(x, 1, weight.shape[1], "tiled_conv1d")
    stride = as_tuple(stride, 1, "stride")[0]
    pads = resolve_padding(padding, (weight.shape[2],))[0]
    w2 = weight[:, :, None, :, None, :]                  # (O, C, 1, k, 1, t)
    b2 = bias[:, None, :] if bias is not None and bias.dim() == 2 else bias
    z = tiled_conv2d(pad(x, (pads,))[:, :, None, :], w2, b2, (1, stride), "valid")
    return z[:, :, 0, :]


def _tiled_grouped(xp: Tensor, weight: Tensor, stride, out, per_tile) -> Tensor:
    """Tiled convolution as one grouped, strided convolution (fast for few tiles).

    Tile (p, q) computes outputs (p + t a, q + t b): a stride-(t s) convolution of the
    input shifted by (p s, q s). The t_h * t_w shifted copies are channel groups.
    """
    n_out, n_in, kh, kw, th, tw = weight.shape
    (sh, sw), (oh, ow), (ah, aw) = stride, out, per_tile
    n = xp.shape[0]
    need_h, need_w = (ah - 1) * th * sh + kh, (aw - 1) * tw * sw + kw
    # Zero rows/columns at the end give extra outputs that are cropped away below.
    extra_h = max(0, (th - 1) * sh + need_h - xp.shape[2])
    extra_w = max(0, (tw - 1) * sw + need_w - xp.shape[3])
    xp = pad(xp, ((0, extra_h), (0, extra_w)))
    # Shifted copies as a view: (N, C, t_h, t_w, need_h, need_w), then tile-major channels.
    shifted = xp.unfold(2, need_h, sh)[:, :, :th].unfold(3, need_w, sw)[:, :, :, :tw]
    shifted = shifted.permute(0, 2, 3, 1, 4, 5).reshape(n, th * tw * n_in, need_h, need_w)
    kernels = weight.permute(4, 5, 0, 1, 2, 3).reshape(th * tw * n_out, n_in, kh, kw)
    z = F.conv2d(shifted, kernels, None, (th * sh, tw * sw), 0, 1, th * tw)
    # (N, t_h, t_w, O, A, B) -> (N, O, A, t_h, B, t_w): interleave tiles back into space.
    z = z.reshape(n, th, tw, n_out, ah, aw).permute(0, 3, 4, 1, 5, 2)
    return z.reshape(n, n_out, ah * th, aw * tw)[:, :, :oh, :ow]


def _tiled_gemm(xp: Tensor, weight: Tensor, stride, out, per_tile) -> Tensor:
    """Tiled convolution as t_h * t_w matrix products, one per tile (fast for many tiles).

    The receptive fields (``unfold``) are grouped by tile offset (j % t_h, k % t_w); each
    group is one (N * positions, C kh kw) @ (C kh kw, O) product, all in one ``bmm``.
    """
    n_out, n_in, kh, kw, th, tw = weight.shape
    (sh, sw), (oh, ow), (ah, aw) = stride, out, per_tile
    n = xp.shape[0]
    fields = xp.unfold(2, kh, sh).unfold(3, kw, sw).permute(0, 2, 3, 1, 4, 5)   # (N, OH, OW, C, kh, kw)
    fields = F.pad(fields, (0, 0, 0, 0, 0, 0, 0, aw * tw - ow, 0, ah * th - oh))
    fields = fields.reshape(n, ah, th, aw, tw, n_in * kh * kw).permute(2, 4, 0, 1, 3, 5)
    fields = fields.reshape(th * tw, n * ah * aw, n_in * kh * kw)
    w = weight.permute(4, 5, 1, 2, 3, 0).reshape(th * tw, n_in * kh * kw, n_out)
    z = _ContiguousGrad.apply(torch.bmm(fields, w))                             # (t_h t_w, N A B, O)
    z = z.reshape(th, tw, n, ah, aw, n_out).permute(2, 5, 3, 0, 4, 1)
    return z.reshape(n, n_out, ah * th, aw * tw)[:, :, :oh, :ow]


def _add_bias(z: Tensor, bias: Tensor | None, name: str) -> Tensor:
    if bias is None:
        return z
    if bias.dim() == 1 and bias.shape[0] == z.shape[1]:
        return z + bias.reshape(1, -1, *([1] * (z.dim() - 2)))
    if tuple(bias.shape) == tuple(z.shape[1:]):
        return z + bias
    raise ShapeError(
        f"{name} bias must have shape ({z.shape[1]},) (per channel) or "
        f"{tuple(z.shape[1:])} (per output unit), got {tuple(bias.shape)}"
    )
