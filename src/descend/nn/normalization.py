"""Batch normalization layers, Deep Learning sec. 8.7.1 (eqs. 8.35-8.37).

``BatchNorm1d`` normalizes each feature of (N, D) activations (a design matrix H, one
example per row, as in the text) or each channel of (N, C, L) sequences; ``BatchNorm2d``
each channel of (N, C, H, W) feature maps, with "the same normalizing mu and sigma at
every spatial location within a feature map". The output is gamma H' + beta with
learnable gamma (init 1) and beta (init 0); in ``eval()`` mode running averages of mu
and sigma^2 - delta collected in training replace the minibatch statistics.

This is the text's version, written with plain tensor ops so autograd back-propagates
through the statistics; ``torch.nn.BatchNorm2d`` uses a fused kernel (compared in
``benchmarks/conv.py``) and keeps an unbiased running variance (see
``descend.nn.functional.normalization``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from descend.errors import ConfigError, ShapeError
from descend.nn.functional.normalization import batch_norm


class _BatchNorm(nn.Module):
    input_dims: tuple[int, ...] = ()

    def __init__(self, num_features: int, momentum: float = 0.1, delta: float = 1e-5,
                 affine: bool = True) -> None:
        super().__init__()
        if not isinstance(num_features, int) or num_features < 1:
            raise ConfigError(f"Invalid num_features {num_features!r}; must be an int >= 1")
        if not 0.0 <= momentum <= 1.0:
            raise ConfigError(f"Invalid momentum: {momentum}; must lie in [0, 1]")
        if delta < 0:
            raise ConfigError(f"Invalid delta: {delta}; must be >= 0")
        self.num_features, self.momentum, self.delta = num_features, momentum, delta
        if affine:
            self.gamma = nn.Parameter(torch.ones(num_features))
            self.beta = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("gamma", None)
            self.register_parameter("beta", None)
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() not in self.input_dims:
            raise ShapeError(
                f"{type(self).__name__} expects inputs with {' or '.join(map(str, self.input_dims))} "
                f"axes, got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.num_features:
            raise ShapeError(
                f"{type(self).__name__}({self.num_features}) got {x.shape[1]} features/channels "
                f"(input shape {tuple(x.shape)})"
            )
        return batch_norm(x, self.gamma, self.beta, self.running_mean, self.running_var,
                          self.training, self.momentum, self.delta)

    def extra_repr(self) -> str:
        return f"{self.num_features}, momentum={self.momentum}, delta={self.delta}"


class BatchNorm1d(_BatchNorm):
    r"""Batch normalization of ``(N, D)`` features or ``(N, C, L)`` sequences, eqs. 8.35-8.37.

    For a minibatch :math:`H` of :math:`m` rows (examples; for sequences every position
    counts as a row of its channel):

    .. math::

        \begin{aligned}
        \mu &= \frac{1}{m} \sum_i H_{i,:} && \text{(8.36)} \\
        \sigma &= \sqrt{\delta + \frac{1}{m} \sum_i (H - \mu)_i^2} && \text{(8.37)} \\
        H' &= \frac{H - \mu}{\sigma} && \text{(8.35)} \\
        \text{output} &= \gamma H' + \beta
        \end{aligned}

    with learnable :math:`\gamma` (init 1) and :math:`\beta` (init 0) per feature and
    :math:`\delta` = ``delta``. In ``eval()`` mode running averages of :math:`\mu` and
    :math:`\sigma^2 - \delta` replace the minibatch statistics.
    """

    input_dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    r"""Batch normalization of ``(N, C, H, W)`` maps, statistics shared over positions (sec. 8.7.1).

    Eqs. 8.35-8.37 with "the same normalizing :math:`\mu` and :math:`\sigma` at every
    spatial location within a feature map": for channel :math:`c`, over the
    :math:`m = N H W` values :math:`x_{n,c,h,w}`,

    .. math::

        \begin{aligned}
        \mu_c &= \frac{1}{m} \sum_{n,h,w} x_{n,c,h,w} \\
        \sigma_c &= \sqrt{\delta + \frac{1}{m} \sum_{n,h,w} (x_{n,c,h,w} - \mu_c)^2} \\
        y_{n,c,h,w} &= \gamma_c \frac{x_{n,c,h,w} - \mu_c}{\sigma_c} + \beta_c
        \end{aligned}
    """

    input_dims = (4,)
