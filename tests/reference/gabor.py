"""NumPy transcription of the Gabor function, Deep Learning eqs. 9.16-9.18."""

from __future__ import annotations

import math

import numpy as np


def gabor(size, alpha, beta_x, beta_y, f, phi, x0, y0, tau):
    """w[row, col] at x = col - (size-1)/2, y = row - (size-1)/2 (grid centred at 0)."""
    w = np.zeros((size, size))
    for row in range(size):
        for col in range(size):
            x = col - (size - 1) / 2.0
            y = row - (size - 1) / 2.0
            xp = (x - x0) * math.cos(tau) + (y - y0) * math.sin(tau)           # eq. 9.17
            yp = -(x - x0) * math.sin(tau) + (y - y0) * math.cos(tau)          # eq. 9.18
            w[row, col] = alpha * math.exp(-beta_x * xp ** 2 - beta_y * yp ** 2) * math.cos(f * xp + phi)  # eq. 9.16
    return w
