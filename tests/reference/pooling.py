"""NumPy transcriptions of the pooling functions of Deep Learning sec. 9.3 (and Nielsen ch. 6).

One example (C, H, W) or (C, L), loops over every region. A region of an axis of length
L starts at i*s and ends at min(i*s + k, L) (fig. 9.10 keeps the smaller last region);
regions are counted until one reaches the end of the axis.
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def region_bounds(L, k, s, partial=True):
    bounds = []
    start = 0
    while True:
        end = start + k
        if end > L and not partial:
            break
        bounds.append((start, min(end, L)))
        if end >= L:
            break
        start += s
        if start >= L:      # stride wider than the region skipped the rest
            break
    return bounds


def pool(x, kind, k, s, partial=True, sigma=None):
    """max: largest value; avg: mean of present values; l2: sqrt(sum x^2) (Nielsen);
    weighted: sum w x / sum w with w = exp(-d^2 / (2 sigma^2)), d the distance of a cell
    from the centre of the full k-wide region."""
    C, *spatial = x.shape
    dims = len(spatial)
    if sigma is None:
        sigma = k / 2.0
    per_axis = [region_bounds(L, k, s, partial) for L in spatial]
    out = np.zeros([C] + [len(b) for b in per_axis])
    for c in range(C):
        for idx in itertools.product(*[range(len(b)) for b in per_axis]):
            cells = list(itertools.product(*[range(per_axis[a][idx[a]][0], per_axis[a][idx[a]][1])
                                              for a in range(dims)]))
            values = np.array([x[(c, *cell)] for cell in cells])
            if kind == "max":
                out[(c, *idx)] = values.max()
            elif kind == "avg":
                out[(c, *idx)] = values.mean()
            elif kind == "l2":
                out[(c, *idx)] = math.sqrt((values ** 2).sum())
            elif kind == "weighted":
                weights = []
                for cell in cells:
                    d2 = 0.0
                    for a in range(dims):
                        centre = per_axis[a][idx[a]][0] + (k - 1) / 2.0
                        d2 += (cell[a] - centre) ** 2
                    weights.append(math.exp(-d2 / (2 * sigma ** 2)))
                weights = np.array(weights)
                out[(c, *idx)] = (weights * values).sum() / weights.sum()
    return out


def adaptive_pool2d(x, out_h, out_w, kind="max"):
    """Region i of an axis of length L covers [floor(i L / n), ceil((i + 1) L / n))."""
    C, H, W = x.shape
    out = np.zeros((C, out_h, out_w))
    for c in range(C):
        for i in range(out_h):
            for j in range(out_w):
                r0, r1 = (i * H) // out_h, -(-((i + 1) * H) // out_h)
                c0, c1 = (j * W) // out_w, -(-((j + 1) * W) // out_w)
                region = x[c, r0:r1, c0:c1]
                if kind == "max":
                    out[c, i, j] = region.max()
                elif kind == "avg":
                    out[c, i, j] = region.mean()
                else:
                    out[c, i, j] = math.sqrt((region ** 2).sum())
    return out


def maxout(x, pool_size):
    """Max over consecutive groups of channels: out[c] = max_{p < pool_size} x[c * pool_size + p]."""
    C = x.shape[0]
    out = np.zeros((C // pool_size, *x.shape[1:]))
    for c in range(C // pool_size):
        out[c] = x[c * pool_size]
        for p in range(1, pool_size):
            out[c] = np.maximum(out[c], x[c * pool_size + p])
    return out
