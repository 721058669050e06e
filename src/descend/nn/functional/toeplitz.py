"""Convolution as multiplication by a matrix (Deep Learning sec. 9.1 and 9.5).

"Discrete convolution can be viewed as multiplication by a matrix ... for univariate
discrete convolution, each row of the matrix is constrained to be equal to the row
above shifted by one element. This is known as a Toeplitz matrix. In two dimensions,
a doubly block circulant matrix corresponds to convolution." (sec. 9.1)

Two constructions, both built by index arithmetic on the kernel (never by running a
convolution, so they serve as an independent oracle in the tests):

``conv_matrix``      the zero-padded, strided, multi-channel correlation or convolution
                     of ``functional.conv`` as a dense matrix M with
                     vec(correlate(x, K)) = M vec(x); Toeplitz in 1D, block Toeplitz
                     with Toeplitz blocks in 2D. Its transpose is the matrix of the
                     transpose convolution h of eq. 9.13.
``circulant_matrix`` the circular (periodic-boundary) convolution, whose matrix is
                     circulant in 1D and doubly block circulant in 2D; the DFT
                     diagonalizes it, which is why FFT convolution works (sec. 9.8).

Meant for small inputs: the matrix has prod(output) x prod(input) x channels entries.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from descend.errors import ShapeError
from descend.nn.functional.conv import Padding, as_tuple, check_stride, output_size, resolve_padding


def _grid(sizes: Sequence[int], device) -> list[Tensor]:
    axes = [torch.arange(n, device=device) for n in sizes]
    return list(torch.meshgrid(*axes, indexing="ij")) if axes else []


def _prod(sizes: Sequence[int]) -> int:
    result = 1
    for n in sizes:
        result *= n
    return result


def _check_kernel(kernel: Tensor, input_size: Sequence[int]) -> tuple[int, ...]:
    if kernel.dim() not in (3, 4, 5):
        raise ShapeError(
            f"kernel must have shape (out_channels, in_channels, *kernel_size) with 1-3 "
            f"spatial axes, got {tuple(kernel.shape)}"
        )
    dims = kernel.dim() - 2
    return as_tuple(tuple(input_size), dims, "input_size")


def conv_matrix(
    kernel: Tensor,
    input_size: Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: Padding = "valid",
    flip: bool = False,
) -> Tensor:
    r"""The dense matrix of a strided, padded multi-channel correlation (eqs. 9.7-9.8).

    kernel: ``(O, C, *k)``; input_size: the spatial size of one input channel. Returns
    :math:`M` of shape ``(O * prod(out), C * prod(input_size))`` such that, for x of shape
    ``(C, *input_size)``, ``M @ x.flatten()`` equals
    ``correlate(x[None], kernel, stride=..., padding=...).flatten()``.
    With ``flip=True`` it is the matrix of true convolution (eq. 9.5).

    With 0-based positions (one spatial axis shown, :math:`s` the stride, :math:`P` the
    zeros padded before), the entries are (eq. 9.8 with implicit zero padding)

    .. math::

        M_{(o, j),\,(c, p)} = \begin{cases}
        K_{o,c,m} & p = j s + m - P \text{ for an offset } 0 \le m < k \\
        0 & \text{otherwise,}
        \end{cases}

    so the zeros of the padding contribute nothing and have no column.
    """
    size = _check_kernel(kernel, input_size)
    dims = len(size)
    ksize = tuple(kernel.shape[2:])
    strides = check_stride(stride, dims)
    pads = resolve_padding(padding, ksize)
    out = output_size(size, ksize, strides, padding)
    if flip:
        kernel = kernel.flip(tuple(range(2, kernel.dim())))
    n_out, n_in = kernel.shape[0], kernel.shape[1]
    out_pos = _grid(out, kernel.device)            # each: out shape
    offsets = _grid(ksize, kernel.device)          # each: kernel shape
    valid = torch.ones((*out, *ksize), dtype=torch.bool, device=kernel.device)
    flat_in = torch.zeros((*out, *ksize), dtype=torch.long, device=kernel.device)
    flat_out = torch.zeros(out, dtype=torch.long, device=kernel.device)
    for axis in range(dims):
        j = out_pos[axis].reshape(*out, *([1] * dims))
        m = offsets[axis].reshape(*([1] * dims), *ksize)
        p = j * strides[axis] + m - pads[axis][0]      # input coordinate along this axis
        valid &= (p >= 0) & (p < size[axis])
        flat_in = flat_in * size[axis] + p.clamp(0, size[axis] - 1)
        flat_out = flat_out * out[axis] + out_pos[axis]
    m_out, m_in, k_all = _prod(out), _prod(size), _prod(ksize)
    entries = valid.reshape(m_out, k_all)                 # (output position, kernel offset)
    rows = flat_out.reshape(m_out, 1).expand(m_out, k_all)[entries]
    cols = flat_in.reshape(m_out, k_all)[entries]
    offset = torch.arange(k_all, device=kernel.device).expand(m_out, k_all)[entries]
    values = kernel.reshape(n_out, n_in, k_all)[:, :, offset]          # (O, C, entries)
    matrix = kernel.new_zeros(n_out, m_out, n_in, m_in)
    # One output position never reaches one input position through two offsets
    # (p = j s + m - pad is one-to-one in m), so plain assignment is exact.
    matrix[:, rows, :, cols] = values.permute(2, 0, 1)
    return matrix.reshape(n_out * m_out, n_in * m_in)


def circulant_matrix(kernel: Tensor, input_size: Sequence[int], flip: bool = True) -> Tensor:
    r"""The (doubly block) circulant matrix of circular convolution on a periodic grid.

    Row :math:`(o, j)`, column :math:`(c, p)` holds :math:`K_{o,c,m}` for the offset
    :math:`m` with

    .. math::

        p \equiv j - m \pmod{n} \quad \text{(} \texttt{flip} \text{: true convolution)}
        \qquad \text{or} \qquad p \equiv j + m \pmod{n} \quad \text{(otherwise)},

    that is eq. 9.5 (or 9.6) with indices taken modulo the input size :math:`n`. In 2D the matrix is block circulant with circulant
    blocks: "a doubly block circulant matrix corresponds to convolution" (sec. 9.1). The
    output has the input's size; the kernel must not be larger than the input.
    """
    size = _check_kernel(kernel, input_size)
    dims = len(size)
    ksize = tuple(kernel.shape[2:])
    if any(k > n for k, n in zip(ksize, size)):
        raise ShapeError(
            f"kernel size {ksize} is larger than the periodic input {size}; use a larger input"
        )
    n_out, n_in = kernel.shape[0], kernel.shape[1]
    pos = _grid(size, kernel.device)
    offsets = _grid(ksize, kernel.device)
    flat_in = torch.zeros((*size, *ksize), dtype=torch.long, device=kernel.device)
    flat_out = torch.zeros(size, dtype=torch.long, device=kernel.device)
    sign = -1 if flip else 1
    for axis in range(dims):
        j = pos[axis].reshape(*size, *([1] * dims))
        m = offsets[axis].reshape(*([1] * dims), *ksize)
        flat_in = flat_in * size[axis] + (j + sign * m) % size[axis]
        flat_out = flat_out * size[axis] + pos[axis]
    m_all, k_all = _prod(size), _prod(ksize)
    matrix = kernel.new_zeros(n_out, m_all, n_in, m_all)
    rows = flat_out.reshape(-1, 1).expand(-1, k_all).reshape(-1)
    cols = flat_in.reshape(-1)
    values = kernel.reshape(n_out, n_in, k_all).repeat(1, 1, m_all)   # (O, C, m_all * k_all)
    # Distinct offsets never land on the same column (k <= n), so plain assignment is exact.
    matrix[:, rows, :, cols] = values.permute(2, 0, 1)
    return matrix.reshape(n_out * m_all, n_in * m_all)
