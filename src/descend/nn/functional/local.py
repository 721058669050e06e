"""Unshared and tiled convolution (Deep Learning sec. 9.5, eqs. 9.9-9.10, figs. 9.14-9.16).

    locally connected  Z[i,j,k] = sum_{l,m,n} V[l, j+m, k+n] w[i,j,k,l,m,n]        eq. 9.9
    tiled              Z[i,j,k] = sum_{l,m,n} V[l, j+m, k+n] K[i,l,m,n, j%t, k%t]  eq. 9.10

(0-based.) All three layers of fig. 9.16 have the same connections; they differ in how
weights are shared: one weight per connection (locally connected), a set of t x t
kernels cycled through space (tiled), one kernel everywhere (convolution, t = 1). When t
equals the output width, tiled convolution is a locally connected layer.

Both generalize to a stride s (output j reads V[j*s + m]) and to zero padding, and both
come in 1D (data of table 9.1 with one spatial axis) and 2D. PyTorch has neither.

Speed: no Python loop over positions. The locally connected layer is a batch of small
matrix products, one per output position: ``_UnsharedConv`` below, a
``torch.autograd.Function`` with a hand-written backward. The input is copied
batch-innermost, (C, H, W, N) or (H, W, C, N), where every receptive field is a strided
view; one copy gathers the fields into (positions, C kh kw, N), and the forward
product, the weight gradient and the field gradient are one ``bmm`` each, on operands
already in a layout BLAS takes without a copy (the module stores its weight
position-major for this, ``descend.nn.local.position_major``). The input gradient adds
the field gradients back with one in-place add per kernel offset (kh kw of them, not
per position). The large transposes are plain 2-D ones, which torch's copy handles far
faster than a many-axis permutation (benchmarks/conv.py measures the layer against a
shared Conv2d with the same FLOPs). The layer has OH*OW times more weights
than the convolution, read twice and written once per step, and needs its receptive
fields copied out and their gradients added back: memory traffic a convolution never has.

The tiled layer with few tiles (t_h t_w <= 4) is one *grouped* strided convolution:
output positions with the same tile offset (p, q) form a stride-(t*s) convolution of
the input shifted by (p*s, q*s), so the t*t shifted copies are stacked as channel
groups and convolved in a single call. With more tiles it is the locally connected
engine, each position given its tile's kernel by one ``index_select`` (so it holds
OH*OW kernel copies while it runs, like a locally connected layer's weights).
``benchmarks/conv.py`` measures both against a per-position loop and a shared Conv2d.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from descend.errors import ShapeError
from descend.nn.functional.autocast import cast, lower_precision
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


def _fields_view(buf: Tensor, out, kernel, stride, channels_last: bool, offset=(0, 0)) -> Tensor:
    """Receptive fields as a strided view of the batch-innermost input ``buf``.

    ``buf`` is indexed (C, H, W, N) whatever its memory order. Returns (OH, OW, C, kh,
    kw, N), or (OH, OW, kh, kw, C, N) if ``channels_last``: the field of output position
    (j, k) is ``buf[:, j*s_h : j*s_h + kh, k*s_w : k*s_w + kw]`` (eq. 9.9's V[l, j+m, k+n]
    with stride). With kernel (1, 1) and ``offset`` (m, n) it is the set of input pixels
    that kernel offset (m, n) reads.
    """
    c, _, _, n = buf.shape
    (oh, ow), (kh, kw), (sh, sw) = out, kernel, stride
    sc, row, col, sn = buf.stride()
    field = ((kh, row), (kw, col), (c, sc)) if channels_last else ((c, sc), (kh, row), (kw, col))
    size, strides = zip((oh, sh * row), (ow, sw * col), *field, (n, sn))
    return buf.as_strided(size, strides, buf.storage_offset() + offset[0] * row + offset[1] * col)


def _transposed(x: Tensor) -> Tensor:
    """Contiguous transpose of a 2-D tensor (a path of its own in torch's copy, far
    faster than the same data moved as a many-axis permutation)."""
    return x.t().contiguous()


def _batch_innermost(x: Tensor, channels_last: bool) -> Tensor:
    """x (N, C, H, W) copied to memory order (C, H, W, N), or (H, W, C, N); indexed (C, H, W, N)."""
    n, c, h, w = x.shape
    buf = _transposed(x.reshape(n, c * h * w)).view(c, h, w, n)
    if channels_last and c > 1:   # second pass moving whole N-vectors: (C, H W) -> (H W, C)
        buf = buf.permute(1, 2, 0, 3).contiguous().permute(2, 0, 1, 3)
    return buf


def _batch_first(buf: Tensor) -> Tensor:
    """Inverse of ``_batch_innermost``: ``buf`` indexed (C, H, W, N) -> contiguous (N, C, H, W)."""
    c, h, w, n = buf.shape
    return _transposed(buf.contiguous().view(c * h * w, n)).view(n, c, h, w)


def _gemm_ready(w: Tensor) -> Tensor:
    """``w`` itself if each of its matrices has a unit stride (what BLAS takes), else a copy."""
    return w if 1 in (w.stride(-1), w.stride(-2)) else w.contiguous()


def _reference_unshared(x, weights, kernel, stride, pads, out, channels_last) -> Tensor:
    """The same map as ``_UnsharedConv`` in plain differentiable view ops (unfold + bmm).

    Used only for second derivatives (``create_graph=True``), where autograd has to
    differentiate the backward pass itself.
    """
    (kh, kw), (sh, sw), (oh, ow) = kernel, stride, out
    n, c = x.shape[:2]
    fields = pad(x, pads).unfold(2, kh, sh).unfold(3, kw, sw)[:, :, :oh, :ow]    # (N, C, OH, OW, kh, kw)
    fields = fields.permute(2, 3, 0, 4, 5, 1) if channels_last else fields.permute(2, 3, 0, 1, 4, 5)
    z = torch.bmm(fields.reshape(oh * ow, n, c * kh * kw), weights.transpose(1, 2))   # (P, N, O)
    return z.permute(1, 2, 0).reshape(n, -1, oh, ow)


class _UnsharedConv(torch.autograd.Function):
    """Eq. 9.9 as one matrix product per output position: the engine of both layers.

    Inputs: x (N, C, H, W); weights (OH OW, O, C kh kw), one (O, C kh kw) matrix per
    output position, its columns ordered (C, kh, kw), or (kh, kw, C) if
    ``channels_last``; the kernel size, stride, (before, after) padding per axis and
    output size. Output (N, O, OH, OW).

    Forward: the input is copied batch-innermost, (C, H, W, N) (or (H, W, C, N)), where
    every receptive field is a strided view; one copy gathers the fields F (OH OW,
    C kh kw, N), and Z_p = F_p^T W_p^T for all positions p is one ``bmm``. Backward,
    with G_p the output gradient at p as an (O, N) matrix: dW_p = G_p F_p^T and
    dF_p = W_p^T G_p (one ``bmm`` each), and dx adds dF back onto the pixels each kernel
    offset read (the adjoint of the gather). Second derivatives re-run the layer in
    plain autograd ops.
    """

    @staticmethod
    def forward(ctx, x, weights, kernel, stride, pads, out, channels_last):
        n, c, h, w = x.shape
        (kh, kw), ((pt, pb), (pl, pr)), (oh, ow) = kernel, pads, out
        buf = _batch_innermost(x, channels_last)
        if pt or pb or pl or pr:
            padded = x.new_zeros(h + pt + pb, w + pl + pr, c, n).permute(2, 0, 1, 3) if channels_last \
                else x.new_zeros(c, h + pt + pb, w + pl + pr, n)
            padded[:, pt:pt + h, pl:pl + w] = buf
            buf = padded
        fields = _fields_view(buf, out, kernel, stride, channels_last).reshape(oh * ow, c * kh * kw, n)
        n_out = weights.shape[1]
        z = torch.bmm(fields.transpose(1, 2), _gemm_ready(weights).transpose(1, 2))   # (P, N, O)
        ctx.save_for_backward(x, weights, fields)
        ctx.geometry = (kernel, stride, pads, out, channels_last, buf.shape[1:3])
        return _transposed(z.view(oh * ow, n * n_out)).view(n, n_out, oh, ow)

    @staticmethod
    def backward(ctx, grad):
        x, weights, fields = ctx.saved_tensors
        kernel, stride, pads, out, channels_last, (hb, wb) = ctx.geometry
        if torch.is_grad_enabled():   # create_graph=True: differentiate a differentiable copy
            inputs = [t for t, need in zip((x, weights), ctx.needs_input_grad) if need]
            with torch.enable_grad():
                z = _reference_unshared(x, weights, kernel, stride, pads, out, channels_last)
            grads = iter(torch.autograd.grad(z, inputs, grad, create_graph=True))
            return (*(next(grads) if need else None for need in ctx.needs_input_grad[:2]), *[None] * 5)
        n, c, h, w = x.shape
        (kh, kw), ((pt, _), (pl, _)), (oh, ow) = kernel, pads, out
        P, weights = oh * ow, _gemm_ready(weights)
        n_out = weights.shape[1]
        grad = grad.to(fields.dtype)   # under autocast the output was lower precision
        grad_x = grad_w = None
        if weights.stride(-2) == 1:
            # Column-major (C kh kw, O) blocks (the module's position-major storage, the
            # tiled kernels): G_p^T (N, O) for all p by one 2-D transpose, and dW^T,
            # which comes out in exactly the weights' layout (no copy to store it).
            g = _transposed(grad.reshape(n * n_out, P)).view(P, n, n_out)
            if ctx.needs_input_grad[1]:
                grad_w = torch.bmm(fields, g).transpose(1, 2)             # (P, O, C kh kw)
            g = g.transpose(1, 2)                                        # G_p, (O, N)
        else:
            # Row-major blocks (e.g. a contiguous book-layout weight): G_p as contiguous
            # (O, N) matrices (a 2-D transpose, then a copy of O x P blocks).
            g = _transposed(grad.reshape(n, n_out * P)).view(n_out, P, n).transpose(0, 1).contiguous()
            if ctx.needs_input_grad[1]:
                grad_w = torch.bmm(g, fields.transpose(1, 2))           # (P, O, C kh kw)
        if ctx.needs_input_grad[0]:
            grad_fields = torch.bmm(weights.transpose(1, 2), g)          # (P, C kh kw, N)
            if channels_last:
                grad_fields = grad_fields.view(oh, ow, kh, kw, c, n).permute(0, 1, 4, 2, 3, 5)
            else:
                grad_fields = grad_fields.view(oh, ow, c, kh, kw, n)
            buf = grad.new_zeros(hb, wb, c, n).permute(2, 0, 1, 3) if channels_last else grad.new_zeros(c, hb, wb, n)
            # Adjoint of the gather: kernel offset (m, q) of every field read the pixels
            # of a strided sub-grid; add its gradients there (kh kw adds, none overlapping).
            for m in range(kh):
                for q in range(kw):
                    pixels = _fields_view(buf, out, (1, 1), stride, False, (m, q))[:, :, :, 0, 0]
                    pixels.add_(grad_fields[:, :, :, m, q])
            grad_x = _batch_first(buf[:, pt:pt + h, pl:pl + w])
        return grad_x, grad_w, None, None, None, None, None


def _unshared(x: Tensor, weights: Tensor, *geometry) -> Tensor:
    """``_UnsharedConv``, under ``torch.autocast`` in the autocast dtype.

    The layer is a batch of matrix products, which autocast runs in the lower precision
    (as it runs ``conv2d``); but inside a ``torch.autograd.Function`` it would cast only
    the forward's ``bmm`` and leave the copies and the backward in float32. So both
    operands are converted once at the boundary and the Function runs with autocast
    off: forward and backward in one dtype, the output in the autocast dtype like a
    convolution's, and gradients back in each parameter's own dtype (autograd records
    the conversion). bfloat16 and float16 ``bmm`` both exist on CPU and CUDA.
    """
    lower = lower_precision(x.device)
    if lower is None:
        return _UnsharedConv.apply(x, weights, *geometry)
    x, weights = cast(lower, x, weights)
    with torch.autocast(x.device.type, enabled=False):
        return _UnsharedConv.apply(x, weights, *geometry)


def locally_connected2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: Padding = "valid",
) -> Tensor:
    r"""Locally connected (unshared convolution) layer, eq. 9.9, with stride and padding.

    .. math::

        Z_{i,j,k} = \sum_{l,m,n} \bigl[ V_{l,\,(j-1) \times s + m,\,(k-1) \times s + n}\,
            w_{i,j,k,l,m,n} \bigr] + b_{i,j,k}

    with :math:`V` = ``x`` after padding and :math:`w` = ``weight``.
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
    # One (O, C kh kw) matrix per output position, (OH OW, O, C kh kw): a view, no copy,
    # of the book's contiguous layout and of the module's position-major one. The
    # columns follow the weight's memory order: (C, kh, kw), or (kh, kw, C) when the
    # channel varies fastest (position-major), which makes the gather and its adjoint
    # move whole (C, N) slabs.
    channels_last = n_in > 1 and weight.stride(3) < weight.stride(5)
    per_position = weight.permute(0, 1, 2, 4, 5, 3) if channels_last else weight
    per_position = per_position.reshape(n_out, oh * ow, n_in * kh * kw).transpose(0, 1)
    z = _unshared(x, per_position, (kh, kw), strides, resolve_padding(padding, (kh, kw)), (oh, ow), channels_last)
    return _add_bias(z, bias, "locally_connected2d")


def locally_connected1d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int = 1,
    padding: Padding = "valid",
) -> Tensor:
    r"""1D locally connected layer (eq. 9.9 with one spatial axis; fig. 9.14 top):
    :math:`Z_{i,j} = \sum_{l,m} V_{l,\,(j-1) \times s + m}\, w_{i,j,l,m} + b_{i,j}`.

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
    r"""Tiled convolution, eq. 9.10: :math:`t_h \times t_w` kernels cycled over the output
    positions.

    .. math::

        Z_{i,j,k} = \sum_{l,m,n} V_{l,\,j s + m,\,k s + n}\,
            K_{i,l,m,n,\,j \bmod t_h,\,k \bmod t_w} + b

    (0-based indices; the book, 1-based, writes the tile indices :math:`j \% t + 1`,
    :math:`k \% t + 1`).

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
    pads = resolve_padding(padding, (kh, kw))
    ah, aw = -(-oh // th), -(-ow // tw)          # output positions per tile along each axis
    if th * tw <= 4:
        z = _tiled_grouped(pad(x, pads), weight, (sh, sw), (oh, ow), (ah, aw))
    else:
        # Many tiles: the locally connected engine, with position (j, k) given kernel
        # (j % t_h, k % t_w) by one index_select (whose backward sums each kernel's
        # gradient over its positions). One (kh kw C, O) matrix per tile, column-major.
        per_tile = weight.permute(4, 5, 2, 3, 1, 0).reshape(th * tw, kh * kw * n_in, n_out)
        tile = (torch.arange(oh, device=x.device) % th)[:, None] * tw + torch.arange(ow, device=x.device) % tw
        per_position = per_tile.index_select(0, tile.reshape(-1)).transpose(1, 2)
        z = _unshared(x, per_position, (kh, kw), (sh, sw), pads, (oh, ow), True)
    if bias is not None and bias.dim() == 3:
        if bias.shape != (n_out, th, tw):
            raise ShapeError(
                f"tiled bias must have shape (out, t_h, t_w) = {(n_out, th, tw)}, got "
                f"{tuple(bias.shape)}"
            )
        per_tile_bias = bias.to(z.dtype) if lower_precision(z.device) is not None else bias
        return z + per_tile_bias.repeat(1, ah, aw)[None, :, :oh, :ow]
    return _add_bias(z, bias, "tiled_conv2d")


def tiled_conv1d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int = 1,
    padding: Padding = "valid",
) -> Tensor:
    r"""1D tiled convolution (eq. 9.10 with one spatial axis; fig. 9.16 centre):
    :math:`Z_{i,j} = \sum_{l,m} V_{l,\,j s + m}\, K_{i,l,m,\,j \bmod t} + b` (0-based).

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


def _add_bias(z: Tensor, bias: Tensor | None, name: str) -> Tensor:
    if bias is None:
        return z
    if lower_precision(z.device) is not None:
        bias = bias.to(z.dtype)  # keep the autocast dtype of the product (a float32 bias would promote it)
    if bias.dim() == 1 and bias.shape[0] == z.shape[1]:
        return z + bias.reshape(1, -1, *([1] * (z.dim() - 2)))
    if tuple(bias.shape) == tuple(z.shape[1:]):
        return z + bias
    raise ShapeError(
        f"{name} bias must have shape ({z.shape[1]},) (per channel) or "
        f"{tuple(z.shape[1:])} (per output unit), got {tuple(bias.shape)}"
    )
