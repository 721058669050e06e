"""NumPy transcription of batch normalization, Deep Learning sec. 8.7.1, eqs. 8.35-8.37.

H is a design matrix (m rows = examples, one column per unit). For feature maps the
caller reshapes (N, C, H, W) to (N*H*W, C): "the same normalizing mu and sigma at every
spatial location". The backward pass is derived by hand from the three equations (the
chain rule through mu and sigma that "we back-propagate through"):

    y = gamma h' + beta,  h' = (H - mu) / sigma,  sigma = sqrt(delta + v),  v = mean((H - mu)^2)
    dh'   = dy * gamma
    dv    = sum_i dh'_i (H_i - mu) * (-1/2) sigma^-3
    dmu   = -sum_i dh'_i / sigma + dv * mean(-2 (H_i - mu))
    dH_i  = dh'_i / sigma + dv * 2 (H_i - mu) / m + dmu / m
    dgamma = sum_i dy_i h'_i,  dbeta = sum_i dy_i
"""

from __future__ import annotations

import numpy as np


def forward(H, gamma, beta, delta):
    m = H.shape[0]
    mu = H.sum(axis=0) / m                                        # eq. 8.36
    sigma = np.sqrt(delta + ((H - mu) ** 2).sum(axis=0) / m)      # eq. 8.37
    h = (H - mu) / sigma                                          # eq. 8.35
    return gamma * h + beta, mu, sigma


def backward(dy, H, gamma, delta):
    m = H.shape[0]
    _, mu, sigma = forward(H, gamma, np.zeros_like(gamma), delta)
    hn = (H - mu) / sigma
    dhn = dy * gamma
    dv = (dhn * (H - mu)).sum(axis=0) * (-0.5) * sigma ** -3
    dmu = -(dhn / sigma).sum(axis=0) + dv * (-2.0 * (H - mu)).mean(axis=0)
    dH = dhn / sigma + dv * 2.0 * (H - mu) / m + dmu / m
    return dH, (dy * hn).sum(axis=0), dy.sum(axis=0)


def to_design_matrix(x):
    """(N, C, *spatial) -> (N * prod(spatial), C), one row per (example, position)."""
    C = x.shape[1]
    return np.moveaxis(x, 1, -1).reshape(-1, C)


def from_design_matrix(Hm, shape):
    N, C, *spatial = shape
    return np.moveaxis(Hm.reshape(N, *spatial, C), -1, 1)
