"""Functional forms of the layers of Deep Learning ch. 9 (and batch norm, sec. 8.7.1).

``descend.nn.functional.<name>`` sits beside the module ``descend.nn.<Name>`` as
``torch.nn.functional.conv2d`` sits beside ``torch.nn.Conv2d``; modules hold parameters
and call these. One file per idea:

    conv.py           convolution vs cross-correlation, 1D/2D/3D, padding, stride (9.1, 9.5)
    toeplitz.py       convolution as a Toeplitz / doubly block circulant matrix (9.1)
    backprop.py       the three operations c, g, h (9.5, eqs. 9.8, 9.11-9.13)
    local.py          locally connected and tiled convolution (eqs. 9.9-9.10)
    pooling.py        max / avg / L2 / weighted, global, channel, adaptive pooling (9.3)
    normalization.py  batch normalization (8.7.1, eqs. 8.35-8.37)
    efficient.py      FFT and separable / low-rank convolution (9.8)
"""

from descend.nn.functional.backprop import c, g, h
from descend.nn.functional.conv import (
    conv_transpose,
    convolve,
    convolve1d,
    convolve2d,
    convolve3d,
    correlate,
    correlate1d,
    correlate2d,
    correlate3d,
    dilate,
    flip,
    output_size,
    resolve_padding,
)
from descend.nn.functional.efficient import (
    fft_conv,
    low_rank_kernel,
    separable_conv2d,
    separable_kernel,
)
from descend.nn.functional.local import (
    locally_connected1d,
    locally_connected2d,
    tiled_conv1d,
    tiled_conv2d,
)
from descend.nn.functional.normalization import batch_norm
from descend.nn.functional.pooling import (
    adaptive_pool,
    avg_pool,
    channel_pool,
    distance_weights,
    global_pool,
    l2_pool,
    max_pool,
    pool,
    pooled_size,
    weighted_pool,
)
from descend.nn.functional.toeplitz import circulant_matrix, conv_matrix

__all__ = [
    "adaptive_pool",
    "avg_pool",
    "batch_norm",
    "c",
    "channel_pool",
    "circulant_matrix",
    "conv_matrix",
    "conv_transpose",
    "convolve",
    "convolve1d",
    "convolve2d",
    "convolve3d",
    "correlate",
    "correlate1d",
    "correlate2d",
    "correlate3d",
    "dilate",
    "distance_weights",
    "fft_conv",
    "flip",
    "g",
    "global_pool",
    "h",
    "l2_pool",
    "locally_connected1d",
    "locally_connected2d",
    "low_rank_kernel",
    "max_pool",
    "output_size",
    "pool",
    "pooled_size",
    "resolve_padding",
    "separable_conv2d",
    "separable_kernel",
    "tiled_conv1d",
    "tiled_conv2d",
    "weighted_pool",
]
