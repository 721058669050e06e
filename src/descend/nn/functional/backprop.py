"""The three operations that train any convolutional network (Deep Learning sec. 9.5).

    c(K, V, s)   forward: strided multi-channel correlation, eq. 9.8
                 Z[i,j,k] = sum_{l,m,n} V[l, j*s + m, k*s + n] K[i,l,m,n]
    g(G, V, s)   kernel gradient, eq. 9.11
                 dJ/dK[i,j,k,l] = sum_{m,n} G[i,m,n] V[j, m*s + k, n*s + l]
    h(K, G, s)   input gradient / transpose convolution, eqs. 9.12-9.13
                 dJ/dV[i,j,k] = sum_{l,m: l*s+m=j} sum_{n,p: n*s+p=k} sum_q K[q,i,m,p] G[q,l,n]

(indices 0-based, so the book's "-1"s disappear). G = dJ/dZ. Together they back-propagate
through any depth of convolutional network, and h with g trains convolutional
autoencoders (eq. 9.14: R = h(K, H, s); decoder gradient g(H, E, s); encoder gradient
c(K, E, s)).

Each works on one example, (C, H, W) as in the book, or on a batch (N, C, H, W), and in
1, 2 or 3 spatial dimensions. The padding is "valid" as in the book: pad V beforehand
for other modes. All three are ordinary differentiable torch code (they can themselves
be differentiated, "through g using c and h").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from descend.errors import ShapeError
from descend.nn.functional.conv import as_tuple, check_stride, conv_transpose, correlate


def _batched(t: Tensor, spatial: int, name: str) -> tuple[Tensor, bool]:
    if t.dim() == spatial + 1:
        return t.unsqueeze(0), True
    if t.dim() == spatial + 2:
        return t, False
    raise ShapeError(
        f"{name} must have shape (channels, *spatial) or (batch, channels, *spatial) with "
        f"{spatial} spatial axes, got {tuple(t.shape)}"
    )


def c(K: Tensor, V: Tensor, s: int | Sequence[int] = 1) -> Tensor:
    r"""Forward convolution c(K, V, s) of eq. 9.8: "valid" cross-correlation with stride s.

    .. math::

        Z_{i,j,k} = c(K, V, s)_{i,j,k}
            = \sum_{l,m,n} \bigl[ V_{l,\,(j-1) \times s + m,\,(k-1) \times s + n}\, K_{i,l,m,n} \bigr]

    (2D shown; 1D and 3D have one index fewer or more).
    K: ``(O, C, *k)``; V: ``(C, *spatial)`` or ``(N, C, *spatial)``. Same numbers as
    ``torch.nn.functional.conv2d(V, K, stride=s)``.
    """
    spatial = K.dim() - 2
    V, single = _batched(V, spatial, "V")
    Z = correlate(V, K, None, s, "valid")
    return Z[0] if single else Z


def g(G: Tensor, V: Tensor, s: int | Sequence[int] = 1,
      kernel_size: int | Sequence[int] | None = None) -> Tensor:
    r"""Kernel gradient g(G, V, s) of eq. 9.11: dJ/dK given G = dJ/dZ for Z = c(K, V, s).

    .. math::

        g(G, V, s)_{i,j,k,l} = \frac{\partial}{\partial K_{i,j,k,l}} J(V, K)
            = \sum_{m,n} G_{i,m,n}\, V_{j,\,(m-1) \times s + k,\,(n-1) \times s + l}

    with :math:`G_{i,j,k} = \partial J / \partial Z_{i,j,k}` (2D shown).
    G: ``(O, *out)`` or ``(N, O, *out)``; V: ``(C, *spatial)`` or ``(N, C, *spatial)`` (summed over the
    batch). ``kernel_size`` is needed because under a stride several kernel sizes give
    the same output size; the default is the largest, spatial - (out - 1) * s. Tensors
    are 2D images unless ``kernel_size`` is a tuple, whose length gives the number of
    spatial axes (1D: ``kernel_size=(k,)``, 3D: ``(k, k, k)``).

    Computed literally: every s-strided k-window of V (``Tensor.unfold``, a view) is
    weighted by the G entry of the output it produced and summed (an einsum).
    """
    if kernel_size is None or isinstance(kernel_size, int):
        spatial = 2  # the book's case: images, (C, H, W) or (N, C, H, W)
    else:
        spatial = len(tuple(kernel_size))
    G, _ = _batched(G, spatial, "G")
    V, _ = _batched(V, spatial, "V")
    if G.shape[0] != V.shape[0]:
        raise ShapeError(f"G has batch size {G.shape[0]} but V has {V.shape[0]}")
    strides = check_stride(s, spatial)
    out = tuple(G.shape[2:])
    size = tuple(V.shape[2:])
    if kernel_size is None:
        ksize = tuple(m - (o - 1) * st for m, o, st in zip(size, out, strides))
    else:
        ksize = as_tuple(kernel_size, spatial, "kernel_size")
    for m, o, k, st in zip(size, out, ksize, strides):
        if k < 1 or (o - 1) * st + k > m or (m - k) // st + 1 != o:
            raise ShapeError(
                f"G of spatial size {out} cannot come from a stride-{strides} valid "
                f"convolution of V of size {size} with a kernel of size {ksize}"
            )
    windows = V
    for axis, (k, st) in enumerate(zip(ksize, strides)):
        windows = windows.unfold(2 + axis, k, st)   # (N, C, *out, *k) after all axes
    # Crop windows to the output grid (unfold may yield more when trailing rows are unused).
    windows = windows[(slice(None), slice(None), *(slice(0, o) for o in out))]
    letters = "pqr"[:spatial]
    kl = "xyz"[:spatial]
    return torch.einsum(f"no{letters},nc{letters}{kl}->oc{kl}", G, windows)


def h(K: Tensor, G: Tensor, s: int | Sequence[int] = 1,
      input_size: Sequence[int] | None = None) -> Tensor:
    r"""Input gradient h(K, G, s) of eqs. 9.12-9.13: dJ/dV given G = dJ/dZ, Z = c(K, V, s).

    .. math::

        \begin{aligned}
        h(K, G, s)_{i,j,k} &= \frac{\partial}{\partial V_{i,j,k}} J(V, K) \\
        &= \sum_{\substack{l,m \\ \text{s.t.} \\ (l-1) \times s + m = j}}
            \sum_{\substack{n,p \\ \text{s.t.} \\ (n-1) \times s + p = k}} \sum_q K_{q,i,m,p}\, G_{q,l,n}
        \end{aligned}

    (2D shown). K: ``(O, C, *k)``; G: ``(O, *out)`` or ``(N, O, *out)``. As sec. 9.5 warns, several input sizes
    give the same output size under a stride, so the original spatial size can be passed
    as ``input_size``; the default is the smallest, (out - 1) * s + k. This is the
    transpose convolution (``conv_transpose``) and also the decoder :math:`R = h(K, H, s)` of
    eq. 9.14.
    """
    spatial = K.dim() - 2
    G, single = _batched(G, spatial, "G")
    size = None if input_size is None else tuple(input_size)[-spatial:]
    out = conv_transpose(G, K, None, s, "valid", size)
    return out[0] if single else out


__all__ = ["c", "g", "h"]
