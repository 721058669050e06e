"""Efficient convolution algorithms, Deep Learning sec. 9.8.

FFT convolution. "Convolution is equivalent to converting both the input and the kernel
to the frequency domain using a Fourier transform, performing point-wise multiplication
of the two signals, and converting back ... For some problem sizes, this can be faster
than the naive implementation." Cost O(P log P) per channel pair for a P-pixel input,
independent of the kernel size, against O(P k^d) directly; ``benchmarks/conv.py``
measures the crossover kernel size.

Separable convolution. "When a d-dimensional kernel can be expressed as the outer
product of d vectors, one vector per dimension, the kernel is called separable ... It is
equivalent to compose d one-dimensional convolutions with each of these vectors", costing
O(w d) instead of O(w^d) per output. A general 2D kernel is a sum of r separable terms,
the first r of its singular value decomposition (the best rank-r approximation,
Eckart-Young); r = k is exact. Expected speed-up over the full kernel: k / (2 r).

Both compute cross-correlation (eq. 9.6) with the padding modes and strides of
``functional.conv``, so they are drop-in replacements for ``correlate``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from descend.errors import ConfigError, ShapeError
from descend.nn.functional.autocast import HALF, cast, lower_precision
from descend.nn.functional.conv import (
    Padding,
    check_conv_shapes,
    check_stride,
    output_size,
    pad,
    resolve_padding,
)


def fast_fft_size(n: int) -> int:
    """The smallest m >= n whose only prime factors are 2, 3, 5 and 7 (fast for pocketfft)."""
    m = n
    while True:
        r = m
        for p in (2, 3, 5, 7):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


def fft_conv(
    x: Tensor,
    kernel: Tensor,
    bias: Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: Padding = "valid",
    flip: bool = False,
) -> Tensor:
    r"""Multi-channel correlation (or, with ``flip``, convolution) computed with the FFT.

    .. math::

        Z_o = \mathcal{F}^{-1}\Bigl( \sum_c \mathcal{F}(V_c) \odot \overline{\mathcal{F}(K_{o,c})} \Bigr)

    (:math:`\mathcal{F}` the real FFT over the spatial axes after zero padding; without the
    complex conjugate for convolution), then strided as in eq. 9.8.

    x: ``(N, C, *spatial)`` with 1-3 spatial axes; kernel: ``(O, C, *k)``. Same result as
    ``correlate`` / ``convolve`` (up to rounding). By the correlation theorem the
    *circular* correlation of the zero-padded input with the kernel is
    irfft(rfft(x) * conj(rfft(k))); its first P - k + 1 entries per axis (P = padded
    input size) never wrap around, and they are exactly the "valid" correlation. The
    channel sum happens in the frequency domain (one batched complex matrix product per
    frequency), and the stride of eq. 9.8 subsamples the result.
    """
    dims = check_conv_shapes(x, kernel, 1)
    ksize = tuple(kernel.shape[2:])
    strides = check_stride(stride, dims)
    out = output_size(tuple(x.shape[2:]), ksize, strides, padding)
    if flip:
        kernel = kernel.flip(tuple(range(2, kernel.dim())))
    # torch.fft has no bfloat16 or float16 kernels on CPU (and float16 only for powers of
    # two on CUDA, while fast_fft_size picks 2-3-5-7-smooth sizes): half-precision inputs,
    # and every input under torch.autocast, are transformed in float32. The result comes
    # back in the autocast dtype (where a convolution's output would be), else in the
    # inputs' common dtype; autograd carries the gradients through both conversions.
    lower = lower_precision(x.device)
    out_dtype = lower or torch.promote_types(x.dtype, kernel.dtype)
    compute = torch.float32 if out_dtype in HALF or lower is not None else out_dtype
    if lower is not None or compute != x.dtype or compute != kernel.dtype:
        x, kernel, bias = cast(compute, x, kernel, bias)
        with torch.autocast(x.device.type, enabled=False):
            y = fft_conv(x, kernel, bias, stride, padding)
        return y.to(out_dtype)
    xp = pad(x, resolve_padding(padding, ksize))
    fft_size = tuple(fast_fft_size(n) for n in xp.shape[2:])
    axes = tuple(range(2, 2 + dims))
    xf = torch.fft.rfftn(xp, s=fft_size, dim=axes)            # (N, C, *F)
    kf = torch.fft.rfftn(kernel, s=fft_size, dim=axes)        # (O, C, *F)
    n, c = xf.shape[:2]
    o = kf.shape[0]
    freq = xf.shape[2:]
    # sum_c X[n, c, f] conj(K[o, c, f]) as (F, N, C) @ (F, C, O).
    yf = torch.bmm(xf.reshape(n, c, -1).permute(2, 0, 1), kf.conj().reshape(o, c, -1).permute(2, 1, 0))
    yf = yf.permute(1, 2, 0).reshape(n, o, *freq)
    y = torch.fft.irfftn(yf, s=fft_size, dim=axes)
    y = y[(slice(None), slice(None), *(slice(0, (m - 1) * s + 1, s) for m, s in zip(out, strides)))]
    if bias is not None:
        y = y + bias.reshape(1, -1, *([1] * dims))
    return y.contiguous()


def low_rank_kernel(kernel: Tensor, rank: int | None = None) -> tuple[Tensor, Tensor]:
    r"""Split each 2D kernel slice into ``rank`` separable terms by SVD (sec. 9.8).

    kernel: (O, C, kh, kw). With the SVD :math:`K_{o,c} = \sum_i \sigma_i a_i b_i^\top`,
    returns (column, row) of shapes (O, C, r, kh) and (O, C, r, kw),
    :math:`u_r = \sqrt{\sigma_r}\, a_r` and :math:`v_r = \sqrt{\sigma_r}\, b_r`, so that

    .. math::

        K_{o,c} \approx \sum_{r=1}^{R} u_{o,c,r}\, v_{o,c,r}^\top,
        \qquad \Bigl\lVert K_{o,c} - \sum_{r=1}^{R} u_{o,c,r}\, v_{o,c,r}^\top \Bigr\rVert_F
            = \sqrt{\sum_{i > R} \sigma_i^2},

    the rank-:math:`R` truncated SVD. ``rank=None`` keeps min(kh, kw) terms (exact).
    """
    if kernel.dim() != 4:
        raise ShapeError(f"low_rank_kernel needs an (O, C, kh, kw) kernel, got {tuple(kernel.shape)}")
    kh, kw = kernel.shape[2:]
    full = min(kh, kw)
    rank = full if rank is None else rank
    if not isinstance(rank, int) or not 1 <= rank <= full:
        raise ConfigError(f"Invalid rank {rank!r}; a {kh}x{kw} kernel has rank 1..{full}")
    u, s, vh = torch.linalg.svd(kernel, full_matrices=False)   # (O,C,kh,f) (O,C,f) (O,C,f,kw)
    root = s[..., :rank].sqrt()
    column = (u[..., :rank] * root[..., None, :]).transpose(-1, -2)   # (O, C, r, kh)
    row = vh[..., :rank, :] * root[..., :, None]                      # (O, C, r, kw)
    return column, row


def separable_kernel(column: Tensor, row: Tensor) -> Tensor:
    r"""The full (O, C, kh, kw) kernel :math:`K_{o,c} = \sum_r u_{o,c,r}\, v_{o,c,r}^\top` of a
    low-rank pair (:math:`u` = ``column``, :math:`v` = ``row``)."""
    return torch.einsum("ocrh,ocrw->ochw", column, row)


def separable_conv2d(
    x: Tensor,
    column: Tensor,
    row: Tensor,
    bias: Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: Padding = "valid",
) -> Tensor:
    r"""2D correlation with a kernel given as r separable terms: two 1D passes (sec. 9.8).

    With :math:`u` = ``column`` and :math:`v` = ``row`` (stride 1 shown),

    .. math::

        Z_{o,j,k} = \sum_{c} \sum_{r} \sum_{n} v_{o,c,r,n}
            \Bigl( \sum_{m} u_{o,c,r,m}\, V_{c,\,j+m-1,\,k+n-1} \Bigr),

    the correlation with :math:`K_{o,c} = \sum_r u_{o,c,r} v_{o,c,r}^\top`.
    x: (N, C, H, W); column: (O, C, r, kh); row: (O, C, r, kw) (rank-1 kernel: r = 1).
    Pass 1 correlates every input channel with its O*r column vectors (a grouped (kh, 1)
    convolution, stride along H); pass 2 correlates each intermediate map with its own row
    vector (a depthwise (1, kw) convolution, stride along W) and sums over (c, r) per
    output channel. 2 r k multiply-adds per output and channel pair instead of k^2.
    Equal to ``correlate(x, separable_kernel(column, row), ...)``.
    """
    if column.dim() != 4 or row.dim() != 4 or column.shape[:3] != row.shape[:3]:
        raise ShapeError(
            f"separable_conv2d needs column (O, C, r, kh) and row (O, C, r, kw) with equal "
            f"(O, C, r), got {tuple(column.shape)} and {tuple(row.shape)}"
        )
    n_out, n_in, rank, kh = column.shape
    kw = row.shape[3]
    if x.dim() != 4 or x.shape[1] != n_in:
        raise ShapeError(
            f"separable_conv2d expects input (N, {n_in}, H, W) to match the kernel, got "
            f"{tuple(x.shape)}"
        )
    sh, sw = check_stride(stride, 2)
    output_size(tuple(x.shape[2:]), (kh, kw), (sh, sw), padding)   # validates the fit
    xp = pad(x, resolve_padding(padding, (kh, kw)))
    n = x.shape[0]
    # Pass 1: input channel c -> its O*r column responses, channels ordered (c, o, r).
    w1 = column.permute(1, 0, 2, 3).reshape(n_in * n_out * rank, 1, kh, 1)
    t = F.conv2d(xp, w1, None, (sh, 1), 0, 1, n_in)                     # (N, C*O*r, OH, Wp)
    # Pass 2: every map with its own row vector (a depthwise convolution, same (c, o, r)
    # order, so no reshuffle), then the sum over c and r.
    w2 = row.permute(1, 0, 2, 3).reshape(n_in * n_out * rank, 1, 1, kw)
    t = F.conv2d(t, w2, None, (1, sw), 0, 1, n_in * n_out * rank)        # (N, C*O*r, OH, OW)
    z = t.reshape(n, n_in, n_out, rank, *t.shape[2:]).sum(dim=(1, 3))
    if bias is None:
        return z
    if lower_precision(z.device) is not None:
        bias = bias.to(z.dtype)  # keep the autocast dtype of the convolutions (a float32 bias would promote it)
    return z + bias.reshape(1, -1, 1, 1)
