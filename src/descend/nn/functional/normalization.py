"""Batch normalization, Deep Learning sec. 8.7.1, eqs. 8.35-8.37.

    H' = (H - mu) / sigma                                   eq. 8.35
    mu = 1/m sum_i H_{i,:}                                  eq. 8.36
    sigma = sqrt(delta + 1/m sum_i (H - mu)_i^2)            eq. 8.37
    output = gamma H' + beta

"Crucially, we back-propagate through these operations for computing the mean and the
standard deviation": the statistics are ordinary autograd nodes, not constants. "At test
time, mu and sigma may be replaced by running averages that were collected during
training time." In convolutional networks "the same normalizing mu and sigma [apply] at
every spatial location within a feature map", so statistics are taken over the batch and
all spatial positions, one pair per channel.

Where PyTorch's ``batch_norm`` differs: torch keeps a running average of the *unbiased*
variance (divides by m - 1) and its default eps is 1e-5; here the running average is of
the very sigma^2 - delta of eq. 8.37 (divides by m) and delta defaults to 1e-5 too (the
text suggests "a small positive value such as 1e-8"; 1e-5 is safer in float32).
"""

from __future__ import annotations

import torch
from torch import Tensor

from descend.errors import ConfigError, ShapeError
from descend.nn.functional.autocast import HALF


def batch_norm(
    x: Tensor,
    gamma: Tensor | None,
    beta: Tensor | None,
    running_mean: Tensor | None = None,
    running_var: Tensor | None = None,
    training: bool = True,
    momentum: float = 0.1,
    delta: float = 1e-5,
) -> Tensor:
    r"""Normalize ``(N, D)`` or ``(N, C, *spatial)`` per feature / channel, eqs. 8.35-8.37.

    .. math::

        \begin{aligned}
        \mu &= \frac{1}{m} \sum_i H_{i,:} && \text{(8.36)} \\
        \sigma &= \sqrt{\delta + \frac{1}{m} \sum_i (H - \mu)_i^2} && \text{(8.37)} \\
        H' &= \frac{H - \mu}{\sigma} && \text{(8.35)} \\
        \text{output} &= \gamma H' + \beta
        \end{aligned}

    with :math:`H` the activations arranged one example per row, :math:`\mu` and
    :math:`\sigma` broadcast over the rows, and :math:`\gamma` = ``gamma``, :math:`\beta` =
    ``beta`` per feature (omitted when None).

    Training: :math:`\mu` and :math:`\sigma` from this minibatch (over the batch and spatial
    axes, so :math:`m` counts every position), differentiated through; if running buffers
    are given they are updated in place,
    :math:`r \leftarrow (1 - \texttt{momentum})\, r + \texttt{momentum} \cdot r_{\text{batch}}`.
    Evaluation: the running buffers replace :math:`\mu` and :math:`\sigma^2 - \delta`.
    """
    if x.dim() < 2:
        raise ShapeError(f"batch_norm expects (batch, features, ...), got {tuple(x.shape)}")
    if not 0.0 <= momentum <= 1.0:
        raise ConfigError(f"Invalid momentum: {momentum}; must lie in [0, 1]")
    if delta < 0:
        raise ConfigError(f"Invalid delta: {delta}; must be >= 0")
    channels = x.shape[1]
    for name, t in (("gamma", gamma), ("beta", beta), ("running_mean", running_mean),
                    ("running_var", running_var)):
        if t is not None and tuple(t.shape) != (channels,):
            raise ShapeError(f"{name} must have shape ({channels},), got {tuple(t.shape)}")
    if x.dtype in HALF:
        # The mean and variance of eq. 8.36 are sums over the whole minibatch; an 8- or
        # 11-bit mantissa loses them (the reason autocast keeps reductions in float32).
        # Normalize in float32 and return the input's dtype, as torch's batch norm does.
        return batch_norm(x.float(), gamma, beta, running_mean, running_var, training, momentum,
                          delta).to(x.dtype)
    axes = (0, *range(2, x.dim()))
    shape = (1, channels, *([1] * (x.dim() - 2)))
    if training:
        m = x.numel() // channels
        if m < 2:
            raise ShapeError(
                f"batch_norm in training needs more than one value per channel to estimate a "
                f"standard deviation, got input shape {tuple(x.shape)}; use a larger batch or eval()"
            )
        var, mu = torch.var_mean(x, dim=axes, correction=0)   # eq. 8.36; 1/m sum (H - mu)^2
        if running_mean is not None and running_var is not None:
            with torch.no_grad():
                running_mean.lerp_(mu.detach().to(running_mean.dtype), momentum)
                running_var.lerp_(var.detach().to(running_var.dtype), momentum)
    else:
        if running_mean is None or running_var is None:
            raise ConfigError("batch_norm in evaluation mode needs running_mean and running_var")
        mu, var = running_mean.to(x.dtype), running_var.to(x.dtype)
    inv_sigma = torch.rsqrt(delta + var)                              # 1 / sigma, eq. 8.37
    # gamma (H - mu) / sigma + beta (eq. 8.35 and the affine step) as one multiply-add
    # per element: scale = gamma / sigma and shift = beta - mu * scale are per channel.
    scale = inv_sigma if gamma is None else inv_sigma * gamma
    shift = -mu * scale if beta is None else beta - mu * scale
    return torch.addcmul(shift.reshape(shape), x, scale.reshape(shape))
