"""NumPy oracle for descend.data.photo.otsu_threshold: Otsu (1979), "A threshold selection
method from gray-level histograms", IEEE Trans. SMC 9(1), transcribed literally.

Levels 1..L with probabilities p_i (eq. 1); for each k:
    omega(k) = sum_{i<=k} p_i                                      (eq. 6)
    mu(k)    = sum_{i<=k} i p_i                                    (eq. 7)
    mu_T     = mu(L)                                               (eq. 8)
    sigma_B^2(k) = [mu_T omega(k) - mu(k)]^2 / (omega(k) [1 - omega(k)])   (eq. 18)
k* maximizes sigma_B^2 (eq. 19) over the k with 0 < omega(k) < 1.

The levels are the bins of numpy.histogram(x, bins, range=(min, max)) and the level's value
is its bin centre; the threshold is the value of level k* (the brighter class is above it).
"""

import numpy as np


def otsu_threshold(x, bins=256):
    x = np.asarray(x, dtype=np.float64).ravel()
    if x.min() == x.max():
        return float(x.min())
    counts, edges = np.histogram(x, bins=bins, range=(x.min(), x.max()))
    levels = (edges[:-1] + edges[1:]) / 2
    p = counts / counts.sum()
    mu_T = sum(levels[i] * p[i] for i in range(bins))
    best_k, best = None, -1.0
    omega, mu = 0.0, 0.0
    for k in range(bins - 1):
        omega += p[k]
        mu += levels[k] * p[k]
        if omega <= 0 or omega >= 1:
            continue
        sigma_b2 = (mu_T * omega - mu) ** 2 / (omega * (1 - omega))
        if sigma_b2 > best:
            best_k, best = k, sigma_b2
    return float(levels[best_k])
