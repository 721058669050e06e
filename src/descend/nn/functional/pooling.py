"""Pooling (Deep Learning sec. 9.3, figs. 9.8-9.11; Nielsen ch. 6 "Pooling layers").

"A pooling function replaces the output of the net at a certain location with a summary
statistic of the nearby outputs": the maximum (max pooling), the average, the L2 norm
(Nielsen: "the square root of the sum of the squares of the activations"), or "a
weighted average based on the distance from the central pixel".

Regions of width k are spaced s pixels apart (fig. 9.10: width 3, stride 2). When the
last region runs past the input it is kept with fewer elements: "the rightmost pooling
region has a smaller size, but must be included if we do not want to ignore some of the
detector units". So a length-L axis gives ceil((L - k) / s) + 1 outputs (at least one,
also when L < k). ``partial=False`` drops the partial region instead (PyTorch's default
``ceil_mode=False``). Averages are taken over the elements actually present.

Also here: global pooling, pooling across channels (maxout units, fig. 9.9 learned
invariances) and adaptive pooling to a fixed number of regions for inputs of any size
(sec. 9.3, fig. 9.11 centre).

All functions take ``(N, C, *spatial)`` with one or two spatial axes (``kernel_size`` as an
int pools every spatial axis). Regions are gathered with ``Tensor.unfold`` (a strided
view) and reduced in one call; no Python loop over positions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from descend.errors import ConfigError, ShapeError
from descend.nn.functional.conv import as_tuple, check_stride, pad

KINDS = ("max", "avg", "l2", "weighted")


def pooled_size(size: int, kernel: int, stride: int, partial: bool = True) -> int:
    r"""Number of pooling regions along an axis of length ``size`` (sec. 9.3, fig. 9.10):
    for length :math:`L`, region width :math:`k` and stride :math:`s`,
    :math:`\lceil (L - k) / s \rceil + 1` with ``partial`` (at least 1), else
    :math:`\lfloor (L - k) / s \rfloor + 1`."""
    if partial:
        count = max(0, -(-(size - kernel) // stride)) + 1
        # A region must start inside the input (possible to miss when stride > kernel).
        return count - 1 if (count - 1) * stride >= size else count
    if kernel > size:
        raise ShapeError(
            f"pooling region {kernel} is larger than the input axis {size}; use partial=True "
            f"or a smaller region"
        )
    return (size - kernel) // stride + 1


def _setup(x: Tensor, kernel_size, stride, name: str):
    if x.dim() not in (3, 4):
        raise ShapeError(
            f"{name} expects (batch, channels, length) or (batch, channels, height, width), "
            f"got shape {tuple(x.shape)}"
        )
    dims = x.dim() - 2
    kernel = as_tuple(kernel_size, dims, "kernel_size")
    if any(k < 1 for k in kernel):
        raise ConfigError(f"Invalid pooling size {kernel_size!r}; must be >= 1")
    strides = kernel if stride is None else check_stride(stride, dims)
    return dims, kernel, strides


def _regions(x: Tensor, kernel, strides, partial: bool, fill: float) -> tuple[Tensor, list[int]]:
    """Pad the end of each axis with ``fill`` and return (N, C, *out, *kernel) regions."""
    dims = len(kernel)
    sizes = list(x.shape[2:])
    out = [pooled_size(m, k, s, partial) for m, k, s in zip(sizes, kernel, strides)]
    extra = [max(0, (o - 1) * s + k - m) for o, s, k, m in zip(out, strides, kernel, sizes)]
    x = pad(x, [(0, e) for e in extra], value=fill)
    for axis in range(dims):
        x = x.unfold(2 + axis, kernel[axis], strides[axis])
    return x[(slice(None), slice(None), *(slice(0, o) for o in out))], out


def _counts(sizes, kernel, strides, out, device, dtype) -> Tensor:
    """Number of real (unpadded) elements in each region: a product of per-axis counts."""
    total = torch.ones((), device=device, dtype=dtype)
    for axis, (m, k, s, o) in enumerate(zip(sizes, kernel, strides, out)):
        starts = torch.arange(o, device=device) * s
        n = (m - starts).clamp(max=k).to(dtype)
        total = total.unsqueeze(-1) * n
    return total


def _region_axes(dims: int) -> tuple[int, ...]:
    return tuple(range(-dims, 0))


def max_pool(x: Tensor, kernel_size, stride=None, partial: bool = True) -> Tensor:
    r"""Max pooling (sec. 9.3, fig. 9.8): the largest value in each k-wide region
    :math:`\mathcal{R}_j`,

    .. math::

        y_j = \max_{i \in \mathcal{R}_j} x_i.

    Same numbers as ``torch.nn.functional.max_pool2d(x, k, s, ceil_mode=partial)``.
    The gradient is split evenly between tied maxima (torch sends it to one of them).
    """
    dims, kernel, strides = _setup(x, kernel_size, stride, "max_pool")
    regions, _ = _regions(x, kernel, strides, partial, float("-inf"))
    return regions.amax(dim=_region_axes(dims))


def avg_pool(x: Tensor, kernel_size, stride=None, partial: bool = True) -> Tensor:
    r"""Average pooling (sec. 9.3): :math:`y_j = \frac{1}{|\mathcal{R}_j|} \sum_{i \in \mathcal{R}_j} x_i`
    over each region :math:`\mathcal{R}_j`; a partial last region averages only its real
    elements."""
    dims, kernel, strides = _setup(x, kernel_size, stride, "avg_pool")
    regions, out = _regions(x, kernel, strides, partial, 0.0)
    counts = _counts(x.shape[2:], kernel, strides, out, x.device, x.dtype)
    return regions.sum(dim=_region_axes(dims)) / counts


def l2_pool(x: Tensor, kernel_size, stride=None, partial: bool = True) -> Tensor:
    r"""L2 pooling: sqrt of the sum of squares in each region (sec. 9.3; Nielsen ch. 6).

    .. math::

        y_j = \sqrt{\sum_{i \in \mathcal{R}_j} x_i^2}

    ``torch.nn.functional.lp_pool2d(x, 2, k, s)`` gives the same numbers for whole
    regions; this version also keeps a partial last region and has a zero (not NaN)
    gradient at an all-zero region.
    """
    dims, kernel, strides = _setup(x, kernel_size, stride, "l2_pool")
    regions, _ = _regions(x, kernel, strides, partial, 0.0)
    return torch.linalg.vector_norm(regions, ord=2, dim=_region_axes(dims))


def distance_weights(kernel_size: Sequence[int], sigma: float | None = None,
                     dtype=torch.float32, device=None) -> Tensor:
    r"""Weights :math:`w_i = \exp\bigl(-d_i^2 / (2 \sigma^2)\bigr)` of each cell :math:`i` by
    its distance :math:`d_i` from the region centre.

    The default sigma is half the region width (sec. 9.3: "a weighted average based on
    the distance from the central pixel"; the text fixes no profile, a Gaussian is the
    usual choice). Not normalized; ``weighted_pool`` normalizes per region.
    """
    kernel = tuple(kernel_size)
    if sigma is None:
        sigma = max(kernel) / 2.0
    if sigma <= 0:
        raise ConfigError(f"Invalid sigma: {sigma}; the width of the weighting must be > 0")
    d2 = torch.zeros((), dtype=dtype, device=device)
    for k in kernel:
        c = torch.arange(k, dtype=dtype, device=device) - (k - 1) / 2.0
        d2 = d2.unsqueeze(-1) + c**2
    return torch.exp(-d2 / (2.0 * sigma**2))


def weighted_pool(x: Tensor, kernel_size, stride=None, partial: bool = True,
                  sigma: float | None = None) -> Tensor:
    r"""Distance-weighted average pooling (sec. 9.3), per region :math:`\mathcal{R}_j`:

    .. math::

        y_j = \frac{\sum_{i \in \mathcal{R}_j} w_i x_i}{\sum_{i \in \mathcal{R}_j} w_i},
        \qquad w_i = \exp\Bigl(-\frac{d_i^2}{2 \sigma^2}\Bigr).

    w comes from ``distance_weights`` (Gaussian in the distance from the region centre);
    in a partial region the sum runs over the elements present. PyTorch has no such pooling.
    """
    dims, kernel, strides = _setup(x, kernel_size, stride, "weighted_pool")
    regions, out = _regions(x, kernel, strides, partial, 0.0)
    w = distance_weights(kernel, sigma, x.dtype, x.device)
    axes = _region_axes(dims)
    num = (regions * w).sum(dim=axes)
    # Which cells of each region are real: pool a tensor of ones the same way.
    ones = torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype, device=x.device)
    present, _ = _regions(ones, kernel, strides, partial, 0.0)
    return num / (present * w).sum(dim=axes)


def pool(x: Tensor, kind: str, kernel_size, stride=None, partial: bool = True,
         sigma: float | None = None) -> Tensor:
    """Pooling of one of the kinds of sec. 9.3: "max", "avg", "l2" or "weighted"."""
    if kind == "max":
        return max_pool(x, kernel_size, stride, partial)
    if kind == "avg":
        return avg_pool(x, kernel_size, stride, partial)
    if kind == "l2":
        return l2_pool(x, kernel_size, stride, partial)
    if kind == "weighted":
        return weighted_pool(x, kernel_size, stride, partial, sigma)
    raise ConfigError(f"Unknown pooling kind {kind!r}; use one of {', '.join(KINDS)}")


def global_pool(x: Tensor, kind: str = "avg") -> Tensor:
    r"""Global pooling over all spatial positions: ``(N, C, *spatial) -> (N, C)``; for "avg",
    :math:`y_{n,c} = \frac{1}{P} \sum_p x_{n,c,p}` over the :math:`P` positions :math:`p`
    ("max" and "l2" as in :func:`max_pool` and :func:`l2_pool`).

    Fig. 9.11 (right): "averaging a feature map down to a single value provides the
    argument to the softmax classifier".
    """
    if x.dim() < 3:
        raise ShapeError(f"global_pool expects (batch, channels, *spatial), got {tuple(x.shape)}")
    flat = x.flatten(2)
    if kind == "avg":
        return flat.mean(dim=2)
    if kind == "max":
        return flat.amax(dim=2)
    if kind == "l2":
        return torch.linalg.vector_norm(flat, ord=2, dim=2)
    raise ConfigError(f"Unknown global pooling kind {kind!r}; use 'avg', 'max' or 'l2'")


def channel_pool(x: Tensor, pool_size: int, kind: str = "max") -> Tensor:
    r"""Pooling across channels: each output channel summarizes ``pool_size`` consecutive ones.

    With "max" these are maxout units (Goodfellow et al. 2013): pooling over the outputs of
    separately parametrized filters lets the features "learn which transformations to
    become invariant to" (sec. 9.3, fig. 9.9). ``(N, C, *spatial) -> (N, C / pool_size, *spatial)``;
    with :math:`k` = ``pool_size`` and "max",

    .. math::

        y_{n,i,p} = \max_{0 \le r < k} x_{n,\,ik + r,\,p}.
    """
    if x.dim() < 2:
        raise ShapeError(f"channel_pool expects (batch, channels, ...), got {tuple(x.shape)}")
    if not isinstance(pool_size, int) or pool_size < 1:
        raise ConfigError(f"Invalid pool_size {pool_size!r}; must be an int >= 1")
    if x.shape[1] % pool_size:
        raise ShapeError(
            f"{x.shape[1]} channels cannot be pooled in groups of {pool_size}; the channel "
            f"count must be a multiple of pool_size"
        )
    grouped = x.reshape(x.shape[0], x.shape[1] // pool_size, pool_size, *x.shape[2:])
    if kind == "max":
        return grouped.amax(dim=2)
    if kind == "avg":
        return grouped.mean(dim=2)
    if kind == "l2":
        return torch.linalg.vector_norm(grouped, ord=2, dim=2)
    raise ConfigError(f"Unknown channel pooling kind {kind!r}; use 'max', 'avg' or 'l2'")


def adaptive_regions(size: int, regions: int, device=None) -> Tensor:
    r"""Membership mask (regions, size): region :math:`i` of :math:`n` on an axis of length
    :math:`L` covers :math:`[\lfloor i L / n \rfloor, \lceil (i + 1) L / n \rceil)`.

    The offsets between regions vary with the input size so that the number of regions
    is fixed (sec. 9.3, "the final pooling layer ... may be defined to output four sets of
    summary statistics, one for each quadrant"). PyTorch's adaptive pooling uses the same
    boundaries.
    """
    if regions < 1:
        raise ConfigError(f"Invalid number of pooling regions {regions}; must be >= 1")
    if size < regions:
        raise ShapeError(
            f"an axis of length {size} cannot be split into {regions} pooling regions; use "
            f"fewer regions or a larger input"
        )
    i = torch.arange(regions, device=device)
    start = (i * size) // regions
    end = ((i + 1) * size + regions - 1) // regions
    pos = torch.arange(size, device=device)
    return (pos >= start[:, None]) & (pos < end[:, None])


def adaptive_pool(x: Tensor, output_size: int | Sequence[int], kind: str = "max") -> Tensor:
    r"""Pool ``(N, C, *spatial)`` to a fixed number of regions per axis, whatever the input
    size: region :math:`i` of :math:`n` on an axis of length :math:`L` covers
    :math:`[\lfloor i L / n \rfloor, \lceil (i + 1) L / n \rceil)`.

    Kinds "max", "avg" and "l2". Rectangular regions are products of per-axis intervals,
    so each axis is reduced in turn with a (regions x length) membership mask: a
    masked max, or a matrix product for sums. Same numbers as
    ``torch.nn.functional.adaptive_max_pool2d`` / ``adaptive_avg_pool2d``.
    """
    if x.dim() not in (3, 4):
        raise ShapeError(
            f"adaptive_pool expects (batch, channels, length) or (batch, channels, height, "
            f"width), got {tuple(x.shape)}"
        )
    if kind not in ("max", "avg", "l2"):
        raise ConfigError(f"Unknown adaptive pooling kind {kind!r}; use 'max', 'avg' or 'l2'")
    dims = x.dim() - 2
    out = as_tuple(output_size, dims, "output_size")
    y = x * x if kind == "l2" else x
    for axis in range(dims):
        dim = 2 + axis
        mask = adaptive_regions(y.shape[dim], out[axis], x.device)     # (n, L)
        moved = y.movedim(dim, -1)                                     # (..., L)
        if kind == "max":
            masked = moved.unsqueeze(-2).masked_fill(~mask, float("-inf"))  # (..., n, L)
            reduced = masked.amax(dim=-1)
        else:
            weights = mask.to(y.dtype)
            if kind == "avg":
                weights = weights / weights.sum(dim=1, keepdim=True)
            reduced = moved @ weights.T
        y = reduced.movedim(-1, dim)
    if kind == "l2":
        # sqrt with a zero (not NaN) gradient where a whole region is zero.
        positive = y > 0
        return torch.where(positive, y, torch.ones_like(y)).sqrt() * positive
    return y


__all__ = [
    "pooled_size",
    "max_pool",
    "avg_pool",
    "l2_pool",
    "weighted_pool",
    "distance_weights",
    "pool",
    "global_pool",
    "channel_pool",
    "adaptive_regions",
    "adaptive_pool",
]
