r"""Convolution and cross-correlation in 1, 2 and 3 dimensions (Deep Learning sec. 9.1, 9.5).

The book defines two operations that libraries both call "convolution":

.. math::

    \begin{aligned}
    &\text{true convolution} && S(i, j) = \sum_m \sum_n I(i - m, j - n) K(m, n) && \text{(9.5)} \\
    &\text{cross-correlation} && S(i, j) = \sum_m \sum_n I(i + m, j + n) K(m, n) && \text{(9.6)}
    \end{aligned}

Cross-correlation is convolution with the kernel flipped along every spatial axis;
``torch.nn.functional.conv2d`` computes cross-correlation. Multi-channel data and
kernel stacks follow eq. 9.7, and the stride :math:`s` of eq. 9.8 samples every
:math:`s`-th output:

.. math::

    Z_{i,j,k} = \sum_{l,m,n} V_{l,\,j+m-1,\,k+n-1} K_{i,l,m,n} \quad \text{(9.7)}, \qquad
    Z_{i,j,k} = \sum_{l,m,n} V_{l,\,(j-1) \times s + m,\,(k-1) \times s + n} K_{i,l,m,n} \quad \text{(9.8)}.

Padding (sec. 9.5, fig. 9.13), for input width :math:`m` and kernel width :math:`k`, is one of

* "valid": no zeros; output width :math:`m - k + 1`,
* "same": :math:`k - 1` zeros, :math:`\lfloor (k-1)/2 \rfloor` before and
  :math:`\lfloor k/2 \rfloor` after, so the output (stride 1) has the input's width also
  for even :math:`k` (MATLAB ``conv2(..., 'same')`` and ``torch`` ``padding="same"`` make
  the same choice),
* "full": :math:`k - 1` zeros on both sides; output width :math:`m + k - 1`,
* an int or a tuple of ints: that many zeros on both sides of each axis.

The data types of table 9.1 map onto the number of spatial axes: audio (1D, one
channel), skeleton animation (1D, many channels), spectrograms and colour images (2D),
volumes and colour video (3D). Tensors are batched, ``(N, C, *spatial)``, as in PyTorch;
the book omits the batch axis.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from descend.errors import ConfigError, ShapeError
from descend.nn.functional.autocast import lower_precision

Padding = str | int | Sequence[int]

_TORCH_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def as_tuple(value: int | Sequence[int], dims: int, name: str) -> tuple[int, ...]:
    """Broadcast an int to ``dims`` ints, or check a sequence has ``dims`` ints."""
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be an int or a tuple of {dims} ints, got {value!r}")
    if isinstance(value, int):
        return (value,) * dims
    values = tuple(value)
    if len(values) != dims or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ConfigError(f"{name} must be an int or a tuple of {dims} ints, got {value!r}")
    return values


def check_stride(stride: int | Sequence[int], dims: int) -> tuple[int, ...]:
    """Validate the stride s of eq. 9.8 (one per spatial axis)."""
    strides = as_tuple(stride, dims, "stride")
    if any(s < 1 for s in strides):
        raise ConfigError(f"Invalid stride: {stride!r}; every stride must be an int >= 1")
    return strides


def resolve_padding(padding: Padding, kernel_size: Sequence[int]) -> tuple[tuple[int, int], ...]:
    r"""Zeros to add (before, after) each spatial axis for a padding mode (sec. 9.5).

    For a kernel of width :math:`k`: "valid" adds none; "same" adds :math:`k - 1`, of which
    :math:`\lfloor (k - 1) / 2 \rfloor` before and :math:`\lfloor k / 2 \rfloor` after;
    "full" adds :math:`k - 1` on both sides; an int or tuple gives that many on both sides.

    >>> resolve_padding("same", (4, 3))
    ((1, 2), (1, 1))
    """
    dims = len(kernel_size)
    if isinstance(padding, str):
        if padding == "valid":
            return tuple((0, 0) for _ in kernel_size)
        if padding == "same":
            return tuple(((k - 1) // 2, k // 2) for k in kernel_size)
        if padding == "full":
            return tuple((k - 1, k - 1) for k in kernel_size)
        raise ConfigError(
            f"Unknown padding {padding!r}; use 'valid', 'same', 'full', an int or a tuple of ints"
        )
    pads = as_tuple(padding, dims, "padding")
    if any(p < 0 for p in pads):
        raise ConfigError(f"Invalid padding: {padding!r}; padding must be >= 0")
    return tuple((p, p) for p in pads)


def output_size(
    input_size: int | Sequence[int],
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: Padding = "valid",
) -> tuple[int, ...]:
    r"""Spatial size of a convolution's output, per axis:

    .. math::

        \Bigl\lfloor \frac{m + p_{\text{before}} + p_{\text{after}} - k}{s} \Bigr\rfloor + 1

    for input width :math:`m`, kernel width :math:`k` and stride :math:`s`. With stride 1
    this is :math:`m - k + 1` for "valid", :math:`m` for "same" and :math:`m + k - 1` for
    "full" (sec. 9.5). Raises ShapeError when the kernel does not fit in the padded input.
    """
    if isinstance(input_size, int):
        input_size = (input_size,)
    dims = len(input_size)
    kernel = as_tuple(kernel_size, dims, "kernel_size")
    strides = check_stride(stride, dims)
    pads = resolve_padding(padding, kernel)
    out = []
    for m, k, s, (before, after) in zip(input_size, kernel, strides, pads):
        padded = m + before + after
        if k > padded:
            raise ShapeError(
                f"kernel size {tuple(kernel)} is larger than the input {tuple(input_size)} "
                f"with padding {padding!r}; use padding='same' or 'full', a larger input "
                f"or a smaller kernel"
            )
        out.append((padded - k) // s + 1)
    return tuple(out)


def check_conv_shapes(x: Tensor, kernel: Tensor, groups: int = 1) -> int:
    """Check ``(N, C, *spatial)`` input against an ``(O, C/groups, *k)`` kernel; return the
    number of spatial axes."""
    if kernel.dim() not in (3, 4, 5):
        raise ShapeError(
            f"kernel must have shape (out_channels, in_channels, *kernel_size) with 1-3 "
            f"spatial axes, got shape {tuple(kernel.shape)}"
        )
    dims = kernel.dim() - 2
    if x.dim() != dims + 2:
        raise ShapeError(
            f"input must have shape (batch, channels, *spatial) with {dims} spatial axes to "
            f"match a {dims}D kernel, got shape {tuple(x.shape)}; add a batch axis with "
            f"x.unsqueeze(0) if it is one example"
        )
    if not isinstance(groups, int) or groups < 1:
        raise ConfigError(f"Invalid groups: {groups!r}; groups must be an int >= 1")
    if x.shape[1] != kernel.shape[1] * groups:
        raise ShapeError(
            f"channel mismatch: input has {x.shape[1]} channels but the kernel expects "
            f"{kernel.shape[1] * groups} ({kernel.shape[1]} per group x {groups} groups); "
            f"kernel shape is (out_channels, in_channels / groups, *kernel_size)"
        )
    if kernel.shape[0] % groups:
        raise ShapeError(
            f"out_channels={kernel.shape[0]} is not divisible by groups={groups}"
        )
    # Under torch.autocast the convolution itself casts both to one dtype.
    mixed = x.dtype != kernel.dtype and lower_precision(x.device) is None
    if not x.is_floating_point() or not kernel.is_floating_point() or mixed:
        raise ShapeError(
            f"input and kernel must share one floating dtype, got {x.dtype} and {kernel.dtype}"
        )
    return dims


def pad(x: Tensor, pads: Sequence[tuple[int, int]], value: float = 0.0) -> Tensor:
    """Zero-pad the spatial axes of ``(N, C, *spatial)`` by (before, after) pairs."""
    flat: list[int] = []
    for before, after in reversed(pads):  # F.pad lists the last axis first
        flat += [before, after]
    if not any(flat):
        return x
    return F.pad(x, flat, value=value)


def correlate(
    x: Tensor,
    kernel: Tensor,
    bias: Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: Padding = "valid",
    groups: int = 1,
) -> Tensor:
    r"""Multi-channel cross-correlation with stride, eqs. 9.6-9.8 (what torch calls conv).

    One channel (eq. 9.6), and the strided multi-channel form (eq. 9.8) computed here,
    with :math:`V` = ``x`` after padding and :math:`K` = ``kernel``:

    .. math::

        \begin{aligned}
        S(i, j) &= (I * K)(i, j) = \sum_m \sum_n I(i + m, j + n) K(m, n) \\
        Z_{i,j,k} &= \sum_{l,m,n} V_{l,\,(j-1) \times s + m,\,(k-1) \times s + n}\, K_{i,l,m,n} + b_i
        \end{aligned}

    (2D shown; 1D and 3D have one index fewer or more.)

    x: ``(N, C, *spatial)`` with 1, 2 or 3 spatial axes; kernel: ``(O, C/groups, *k)``;
    bias: ``(O,)`` shared over positions, or None. ``groups`` > 1 connects the g-th block of
    output channels only to the g-th block of input channels (fig. 9.15).
    Differs from ``torch.nn.functional.conv2d`` only in accepting "full" and uneven
    "same" padding for every stride, and in raising descend errors.
    """
    dims = check_conv_shapes(x, kernel, groups)
    ksize = tuple(kernel.shape[2:])
    strides = check_stride(stride, dims)
    pads = resolve_padding(padding, ksize)
    output_size(tuple(x.shape[2:]), ksize, strides, padding)  # validates the fit
    if all(b == a for b, a in pads):
        # symmetric padding: let the convolution kernel pad implicitly (no copy).
        return _TORCH_CONV[dims](x, kernel, bias, strides, tuple(b for b, _ in pads), 1, groups)
    return _TORCH_CONV[dims](pad(x, pads), kernel, bias, strides, 0, 1, groups)


def flip(kernel: Tensor) -> Tensor:
    r"""Flip a kernel along its spatial axes (every axis after the first two):
    :math:`\tilde{K}_{o,c,m,n} = K_{o,c,\,k_h - 1 - m,\,k_w - 1 - n}` (0-based), so that
    correlating with :math:`\tilde{K}` is convolving with :math:`K` (sec. 9.1)."""
    return kernel.flip(tuple(range(2, kernel.dim())))


def convolve(
    x: Tensor,
    kernel: Tensor,
    bias: Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: Padding = "valid",
    groups: int = 1,
) -> Tensor:
    r"""True (kernel-flipped) multi-channel convolution, eqs. 9.4-9.5, with stride and padding.

    .. math::

        S(i, j) = (K * I)(i, j) = \sum_m \sum_n I(i - m, j - n) K(m, n),

    computed as cross-correlation with the kernel flipped on every spatial axis (sec. 9.1). With "full" padding and one channel
    this is ``scipy.signal.convolve(x, k, "full")``; "same" keeps the MATLAB convention
    (see the module docstring). PyTorch has no flipped convolution.
    """
    check_conv_shapes(x, kernel, groups)
    return correlate(x, flip(kernel), bias, stride, padding, groups)


def _fixed(dims: int, fn):
    def wrapper(x: Tensor, kernel: Tensor, bias: Tensor | None = None, stride=1,
                padding: Padding = "valid", groups: int = 1) -> Tensor:
        if kernel.dim() != dims + 2:
            raise ShapeError(
                f"{fn.__name__}{dims}d needs a kernel of shape (out, in, *{dims} sizes), "
                f"got {tuple(kernel.shape)}"
            )
        return fn(x, kernel, bias, stride, padding, groups)

    wrapper.__name__ = f"{fn.__name__}{dims}d"
    wrapper.__qualname__ = wrapper.__name__
    wrapper.__doc__ = f"{dims}D form of :func:`{fn.__name__}` (table 9.1). {fn.__doc__.splitlines()[0]}"
    return wrapper


correlate1d = _fixed(1, correlate)
correlate2d = _fixed(2, correlate)
correlate3d = _fixed(3, correlate)
convolve1d = _fixed(1, convolve)
convolve2d = _fixed(2, convolve)
convolve3d = _fixed(3, convolve)


def dilate(x: Tensor, stride: Sequence[int]) -> Tensor:
    r"""Insert :math:`s - 1` zeros between neighbouring samples on each spatial axis:
    :math:`y_{(j-1) \times s + 1} = x_j`, every other entry of :math:`y` zero.

    The adjoint of sampling every s-th output (eq. 9.8): it puts each strided output
    back at the position it was computed at. Used by the transpose convolution h.
    """
    if all(s == 1 for s in stride):
        return x
    n, ch, *size = x.shape
    out_size = [(m - 1) * s + 1 for m, s in zip(size, stride)]
    out = x.new_zeros((n, ch, *out_size))
    out[(slice(None), slice(None), *(slice(None, None, s) for s in stride))] = x
    return out


def conv_transpose(
    x: Tensor,
    kernel: Tensor,
    bias: Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: Padding = "valid",
    output_size: Sequence[int] | None = None,
    groups: int = 1,
) -> Tensor:
    r"""Transpose convolution: multiplication by the transpose of the convolution matrix.

    The input-gradient operation :math:`h(K, G, s)` of eqs. 9.12-9.13 (2D shown), with
    :math:`G` = ``x``,

    .. math::

        h(K, G, s)_{i,j,k} = \sum_{\substack{l,m \\ (l-1) \times s + m = j}}
            \sum_{\substack{n,p \\ (n-1) \times s + p = k}} \sum_q K_{q,i,m,p}\, G_{q,l,n},

    used as a layer for upsampling and reconstruction (eq. 9.14). ``kernel`` has the shape
    of the forward correlation's kernel,
    ``(C_fwd_out, C_fwd_in / groups, *k) = (x channels, out channels / groups, *k)``,
    the layout of ``torch.nn.functional.conv_transpose2d``. ``padding`` is the forward
    correlation's padding, removed from the result. Several input sizes give the same
    output size under a stride, so as the book says the original size can be given
    explicitly with ``output_size`` (spatial axes only); the default is the smallest.

    Computed as a correlation of the zero-dilated input with the flipped kernel whose
    channel axes are swapped, under "full" padding (the transpose of the Toeplitz matrix
    of sec. 9.1 is the matrix of that correlation).
    """
    if kernel.dim() not in (3, 4, 5) or x.dim() != kernel.dim():
        raise ShapeError(
            f"conv_transpose needs x (N, C, *spatial) and kernel (C, out/groups, *k) with the "
            f"same number of axes, got {tuple(x.shape)} and {tuple(kernel.shape)}"
        )
    dims = kernel.dim() - 2
    if x.shape[1] != kernel.shape[0]:
        raise ShapeError(
            f"channel mismatch: input has {x.shape[1]} channels but the kernel's first axis "
            f"is {kernel.shape[0]}; the kernel of a transpose convolution has shape "
            f"(in_channels, out_channels / groups, *kernel_size)"
        )
    if not isinstance(groups, int) or groups < 1 or kernel.shape[0] % groups:
        raise ConfigError(f"Invalid groups: {groups!r}; must divide {kernel.shape[0]} in_channels")
    ksize = tuple(kernel.shape[2:])
    strides = check_stride(stride, dims)
    pads = resolve_padding(padding, ksize)
    in_size = tuple(x.shape[2:])
    smallest = tuple((m - 1) * s + k - b - a for m, s, k, (b, a) in zip(in_size, strides, ksize, pads))
    if output_size is None:
        target = smallest
    else:
        target = as_tuple(tuple(output_size)[-dims:], dims, "output_size")
        for t, lo, s in zip(target, smallest, strides):
            if not lo <= t < lo + s:
                raise ShapeError(
                    f"output_size {target} cannot come from a strided convolution whose "
                    f"output has size {in_size}; each axis must lie in [{lo}, {lo + s - 1}]"
                )
    # The transposed kernel: swap in/out channel axes within each group, flip spatially.
    c_in, c_out_g = kernel.shape[0], kernel.shape[1]
    k_t = kernel.reshape(groups, c_in // groups, c_out_g, *ksize).transpose(1, 2)
    k_t = flip(k_t.reshape(groups * c_out_g, c_in // groups, *ksize))
    full = correlate(dilate(x, strides), k_t, None, 1, "full", groups)
    # `full` covers padded-input positions 0 .. (m-1)s + k - 1; drop the padding and
    # append zeros for trailing input rows that the strided forward never reached.
    index = []
    grow = []
    for size, (b, _), t in zip(full.shape[2:], pads, target):
        stop = min(size, b + t)
        index.append(slice(b, stop))
        grow.append((0, b + t - stop))
    out = full[(slice(None), slice(None), *index)]
    out = pad(out, grow)
    if bias is not None:
        if lower_precision(out.device) is not None:
            bias = bias.to(out.dtype)  # keep the autocast dtype of the correlation (a float32 bias would promote it)
        out = out + bias.reshape(1, -1, *([1] * dims))
    return out
