"""Unshared and tiled convolution (Deep Learning sec. 9.5, eqs. 9.9-9.10, figs. 9.14-9.16).

    locally connected  Z[i,j,k] = sum_{l,m,n} V[l, j+m, k+n] w[i,j,k,l,m,n]        eq. 9.9
    tiled              Z[i,j,k] = sum_{l,m,n} V[l, j+m, k+n] K[i,l,m,n, j%t, k%t]  eq. 9.10

(0-based.) All three layers of fig. 9.16 have the same connections; they differ in how
weights are shared: one weight per connection (locally connected), a set of t x t
kernels cycled through space (tiled), one kernel everywhere (convolution, t = 1). When t
equals the output width, tiled convolution is a locally connected layer.

Both generalize to a stride s (output j reads V[j*s + m]) and to zero padding, and both
come in 1D (data of table 9.1 with one spatial axis) and 2D. PyTorch has neither.

Speed: no Python loop over positions. Both layers reduce to a batch of small matrix
products, one per output position (locally connected) or per tile (tiled, t_h t_w > 4):
``_UnsharedConv`` below, a ``torch.autograd.Function`` with a hand-written backward.
The input is laid out position-major, (C, H, W, N), with the batch innermost; then every
receptive field is a strided view, the fields are gathered by one copy into
(positions, C kh kw, N), and forward, weight gradient and field gradient are each one
``bmm`` whose operands are already in a layout BLAS takes without copying. The input
gradient adds the field gradients back with one in-place add per kernel offset (kh kw
of them, not per position). Every large transpose is a plain 2-D one, which torch
copies with a cache-blocked kernel. The tiled layer with few tiles (t_h t_w <= 4) is
instead one *grouped* strided convolution: output positions with the same tile offset
(p, q) form a stride-(t*s) convolution of the input shifted by (p*s, q*s), so the t*t
shifted copies are stacked as channel groups and convolved in a single call.
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


def _fields_view(buf: Tensor, tiles, per_tile, kernel, stride, offset=(0, 0)) -> Tensor:
    """Receptive fields as a strided view of a position-major (C, H, W, N) buffer.

    Returns (t_h, t_w, C, kh, kw, A, B, N): field of tile (p, q), position (a, b) in that
    tile (output row a t_h + p, column b t_w + q), kernel offset (m, n), example n. A
    locally connected layer is the case t = output size, A = B = 1. With kernel (1, 1)
    and ``offset`` (m, n) it is the set of input pixels that kernel offset touches.
    """
    c, hb, wb, n = buf.shape
    (th, tw), (ah, aw), (kh, kw), (sh, sw) = tiles, per_tile, kernel, stride
    row, col = wb * n, n
    size = (th, tw, c, kh, kw, ah, aw, n)
    strides = (sh * row, sw * col, hb * row, row, col, th * sh * row, tw * sw * col, 1)
    return buf.as_strided(size, strides, buf.storage_offset() + offset[0] * row + offset[1] * col)


def _transposed(x: Tensor) -> Tensor:
    """Contiguous transpose of a 2-D tensor (torch copies it with a cache-blocked kernel)."""
    return x.t().contiguous()


def _gemm_ready(w: Tensor) -> Tensor:
    """``w`` itself if each of its matrices has a unit stride (what BLAS takes), else a copy."""
    return w if 1 in (w.stride(-1), w.stride(-2)) else w.contiguous()


def _reference_unshared(x, weights, kernel, stride, pads, tiles, out) -> Tensor:
    """The same map as ``_UnsharedConv`` in plain differentiable view ops (unfold + bmm).

    Used only for second derivatives (``create_graph=True``), where autograd has to
    differentiate the backward pass itself.
    """
    (kh, kw), (sh, sw), (th, tw), (oh, ow) = kernel, stride, tiles, out
    n, c = x.shape[:2]
    ah, aw = -(-oh // th), -(-ow // tw)
    fields = pad(x, pads).unfold(2, kh, sh).unfold(3, kw, sw)[:, :, :oh, :ow].permute(0, 2, 3, 1, 4, 5)
    fields = F.pad(fields, (0, 0, 0, 0, 0, 0, 0, aw * tw - ow, 0, ah * th - oh))
    fields = fields.reshape(n, ah, th, aw, tw, c * kh * kw).permute(2, 4, 0, 1, 3, 5)
    z = torch.bmm(fields.reshape(th * tw, n * ah * aw, c * kh * kw), weights.transpose(1, 2))
    z = z.reshape(th, tw, n, ah, aw, -1).permute(2, 5, 3, 0, 4, 1)
    return z.reshape(n, -1, ah * th, aw * tw)[:, :, :oh, :ow]


class _UnsharedConv(torch.autograd.Function):
    """Eqs. 9.9 / 9.10 as one matrix product per tile: the engine of both layers.

    Inputs: x (N, C, H, W); weights (T, O, C kh kw), one (O, C kh kw) matrix per tile
    (T = t_h t_w; a locally connected layer has one tile per output position); the
    kernel size, stride, (before, after) padding per axis, tile counts and output size.
    Output position (j, k) uses tile (j % t_h, k % t_w). Output (N, O, OH, OW).

    Forward: fields F (T, C kh kw, A B N) gathered from the position-major input, then
    Z_t = F_t^T W_t^T, one ``bmm``. Backward, with G_t the output gradient of tile t as
    an (O, A B N) matrix: dW_t = G_t F_t^T and dF_t = W_t^T G_t (one ``bmm`` each), and
    dx sums dF over the kernel offsets that read each input pixel (the adjoint of the
    gather). Second derivatives re-run the layer in plain autograd ops.
    """

    @staticmethod
    def forward(ctx, x, weights, kernel, stride, pads, tiles, out):
        n, c, h, w = x.shape
        (kh, kw), (sh, sw), ((pt, pb), (pl, pr)), (th, tw), (oh, ow) = kernel, stride, pads, tiles, out
        ah, aw = -(-oh // th), -(-ow // tw)                  # output positions per tile and axis
        # Buffer height/width: the padded input, plus zeros for the positions that
        # complete the last tile (computed, then cropped away).
        hb = max(h + pt + pb, (ah * th - 1) * sh + kh)
        wb = max(w + pl + pr, (aw * tw - 1) * sw + kw)
        xt = _transposed(x.reshape(n, c * h * w)).view(c, h, w, n)      # position-major
        if (hb, wb) == (h, w):
            buf = xt
        else:
            buf = x.new_zeros(c, hb, wb, n)
            buf[:, pt:pt + h, pl:pl + w] = xt
        T, ck, m = th * tw, c * kh * kw, ah * aw * n
        fields = _fields_view(buf, tiles, (ah, aw), kernel, stride).reshape(T, ck, m)   # the one gather
        weights = _gemm_ready(weights)
        n_out = weights.shape[1]
        z = torch.bmm(fields.transpose(1, 2), weights.transpose(1, 2))   # (T, A B N, O)
        z = _transposed(z.view(T * ah * aw, n * n_out))                   # (N, O, t_h, t_w, A, B)
        if ah * aw > 1:   # interleave tiles back into space: output row a t_h + p
            z = z.view(n, n_out, th, tw, ah, aw).permute(0, 1, 4, 2, 5, 3)
        z = z.reshape(n, n_out, ah * th, aw * tw)[:, :, :oh, :ow]
        ctx.save_for_backward(x, weights, fields)
        ctx.geometry = (kernel, stride, pads, tiles, out, (hb, wb))
        return z.contiguous()

    @staticmethod
    def backward(ctx, grad):
        x, weights, fields = ctx.saved_tensors
        kernel, stride, pads, tiles, out, (hb, wb) = ctx.geometry
        if torch.is_grad_enabled():   # create_graph=True: differentiate a differentiable copy
            inputs = [t for t, need in zip((x, weights), ctx.needs_input_grad) if need]
            with torch.enable_grad():
                z = _reference_unshared(x, weights, kernel, stride, pads, tiles, out)
            grads = iter(torch.autograd.grad(z, inputs, grad, create_graph=True))
            return (*(next(grads) if need else None for need in ctx.needs_input_grad[:2]),
                    None, None, None, None, None)
        n, c, h, w = x.shape
        (kh, kw), ((pt, pb), (pl, pr)), (th, tw), (oh, ow) = kernel, pads, tiles, out
        ah, aw = -(-oh // th), -(-ow // tw)
        T, n_out = th * tw, weights.shape[1]
        if (ah * th, aw * tw) != (oh, ow):
            grad = F.pad(grad, (0, aw * tw - ow, 0, ah * th - oh))
        if ah * aw > 1:
            grad = grad.reshape(n, n_out, ah, th, aw, tw).permute(0, 1, 3, 5, 2, 4)
        grad_x = grad_w = None
        if weights.stride(-2) == 1:
            # Column-major (C kh kw, O) blocks (the module's position-major storage, the
            # tiled kernels): G_t^T (A B N, O) for all t by one 2-D transpose, and dW^T,
            # which comes out in exactly the weights' layout (no copy to store it).
            g = _transposed(grad.reshape(n * n_out, T * ah * aw)).view(T, ah * aw * n, n_out)
            if ctx.needs_input_grad[1]:
                grad_w = torch.bmm(fields, g).transpose(1, 2)             # (T, O, C kh kw)
            g = g.transpose(1, 2)                                        # G_t, (O, A B N)
        else:
            # Row-major blocks (e.g. a contiguous book-layout weight): G_t as contiguous
            # (O, A B N) matrices (a 2-D transpose, then a copy of O x T blocks).
            g = _transposed(grad.reshape(n, n_out * T * ah * aw)).view(n_out, T, ah * aw * n)
            g = g.transpose(0, 1).contiguous()
            if ctx.needs_input_grad[1]:
                grad_w = torch.bmm(g, fields.transpose(1, 2))           # (T, O, C kh kw)
        if ctx.needs_input_grad[0]:
            grad_fields = torch.bmm(weights.transpose(1, 2), g)          # (T, C kh kw, A B N)
            grad_fields = grad_fields.view(th, tw, c, kh, kw, ah, aw, n)
            buf = grad.new_zeros(c, hb, wb, n)
            # Adjoint of the gather: kernel offset (m, n) of every field read the pixels
            # of a strided sub-grid; add its gradients there (kh kw adds, no overlap within one).
            for m in range(kh):
                for q in range(kw):
                    pixels = _fields_view(buf, tiles, (ah, aw), (1, 1), stride, (m, q))[:, :, :, 0, 0]
                    pixels.add_(grad_fields[:, :, :, m, q])
            if (hb, wb) != (h, w):
                buf = buf[:, pt:pt + h, pl:pl + w]
            grad_x = _transposed(buf.reshape(c * h * w, n)).view(n, c, h, w)
        return grad_x, grad_w, None, None, None, None, None


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
    # One (O, C kh kw) matrix per output position: (OH OW, O, C kh kw), a view (no copy)
    # both of the book's contiguous layout and of the position-major one of the module.
    per_position = weight.reshape(n_out, oh * ow, n_in * kh * kw).transpose(0, 1)
    z = _UnsharedConv.apply(x, per_position, (kh, kw), strides, resolve_padding(padding, (kh, kw)),
                            (oh, ow), (oh, ow))
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
    pads = resolve_padding(padding, (kh, kw))
    ah, aw = -(-oh // th), -(-ow // tw)          # output positions per tile along each axis
    if th * tw <= 4:
        z = _tiled_grouped(pad(x, pads), weight, (sh, sw), (oh, ow), (ah, aw))
    else:
        # Many tiles: one (O, C kh kw) matrix per tile, stored column-major (a small copy).
        per_tile = weight.permute(4, 5, 1, 2, 3, 0).reshape(th * tw, n_in * kh * kw, n_out).transpose(1, 2)
        z = _UnsharedConv.apply(x, per_tile, (kh, kw), (sh, sw), pads, (th, tw), (oh, ow))
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
