"""NumPy transcriptions of the convolution equations of Deep Learning ch. 9.

Plain loops over every index, no cleverness: these are the oracles that
``descend.nn.functional`` is checked against. One example at a time (no batch axis),
0-based indices (the book's "-1"s vanish). Any number of spatial axes where the
equation allows it.
"""

from __future__ import annotations

import itertools

import numpy as np


def zero_pad(V, pads):
    """Explicit zeros (before, after) on each spatial axis of V (C, *spatial)."""
    return np.pad(V, [(0, 0)] + [tuple(p) for p in pads])


def correlate(V, K, stride, pads):
    """Eqs. 9.7-9.8: Z[i, j...] = sum_{l, m...} V[l, j*s + m ...] K[i, l, m...] on padded V."""
    V = zero_pad(V, pads)
    O, C, *k = K.shape
    spatial = V.shape[1:]
    out = [(n - kk) // s + 1 for n, kk, s in zip(spatial, k, stride)]
    Z = np.zeros([O] + out)
    for i in range(O):
        for j in itertools.product(*[range(o) for o in out]):
            total = 0.0
            for l in range(C):
                for m in itertools.product(*[range(kk) for kk in k]):
                    idx = tuple(jj * s + mm for jj, s, mm in zip(j, stride, m))
                    total += V[(l, *idx)] * K[(i, l, *m)]
            Z[(i, *j)] = total
    return Z


def convolve(V, K, stride, pads):
    """True convolution, eq. 9.3/9.4 literally, then the padding mode's window and stride.

    Full convolution S[t] = sum_a x[a] w[t - a] (t from 0 to n + k - 2 on each axis),
    summed over input channels. Padding (b, a) of an axis means the output starts at
    full index k - 1 - b (MATLAB's 'same' for b = (k-1)//2) and has
    (n + b + a - k) // s + 1 entries spaced s apart.
    """
    O, C, *k = K.shape
    spatial = V.shape[1:]
    full_size = [n + kk - 1 for n, kk in zip(spatial, k)]
    S = np.zeros([O] + full_size)
    for i in range(O):
        for l in range(C):
            for t in itertools.product(*[range(f) for f in full_size]):
                total = 0.0
                for a in itertools.product(*[range(n) for n in spatial]):
                    off = tuple(tt - aa for tt, aa in zip(t, a))
                    if all(0 <= o < kk for o, kk in zip(off, k)):
                        total += V[(l, *a)] * K[(i, l, *off)]
                S[(i, *t)] += total
    index = [slice(None)]
    for n, kk, s, (b, a) in zip(spatial, k, stride, pads):
        count = (n + b + a - kk) // s + 1
        start = kk - 1 - b
        index.append(slice(start, start + (count - 1) * s + 1, s))
    return S[tuple(index)]


def locally_connected2d(V, w, stride, pads):
    """Eq. 9.9: Z[i,j,k] = sum_{l,m,n} V[l, j*s+m, k*s+n] w[i,j,k,l,m,n]."""
    V = zero_pad(V, pads)
    O, OH, OW, C, KH, KW = w.shape
    Z = np.zeros((O, OH, OW))
    for i in range(O):
        for j in range(OH):
            for k in range(OW):
                for l in range(C):
                    for m in range(KH):
                        for n in range(KW):
                            Z[i, j, k] += V[l, j * stride[0] + m, k * stride[1] + n] * w[i, j, k, l, m, n]
    return Z


def tiled_conv2d(V, K, stride, pads):
    """Eq. 9.10: Z[i,j,k] = sum_{l,m,n} V[l, j*s+m, k*s+n] K[i,l,m,n, j % t_h, k % t_w]."""
    V = zero_pad(V, pads)
    O, C, KH, KW, TH, TW = K.shape
    OH = (V.shape[1] - KH) // stride[0] + 1
    OW = (V.shape[2] - KW) // stride[1] + 1
    Z = np.zeros((O, OH, OW))
    for i in range(O):
        for j in range(OH):
            for k in range(OW):
                for l in range(C):
                    for m in range(KH):
                        for n in range(KW):
                            Z[i, j, k] += (V[l, j * stride[0] + m, k * stride[1] + n]
                                           * K[i, l, m, n, j % TH, k % TW])
    return Z


def kernel_gradient(G, V, s, kernel_size):
    """Eq. 9.11: g[i,j,k,l] = sum_{m,n} G[i,m,n] V[j, m*s + k, n*s + l]."""
    O, OH, OW = G.shape
    C = V.shape[0]
    KH, KW = kernel_size
    g = np.zeros((O, C, KH, KW))
    for i in range(O):
        for j in range(C):
            for k in range(KH):
                for l in range(KW):
                    for m in range(OH):
                        for n in range(OW):
                            g[i, j, k, l] += G[i, m, n] * V[j, m * s + k, n * s + l]
    return g


def input_gradient(K, G, s, input_size):
    """Eqs. 9.12-9.13: h[i,j,k] = sum_{l,m: l*s+m=j} sum_{n,p: n*s+p=k} sum_q K[q,i,m,p] G[q,l,n]."""
    O, C, KH, KW = K.shape
    _, OH, OW = G.shape
    H, W = input_size
    h = np.zeros((C, H, W))
    for i in range(C):
        for j in range(H):
            for k in range(W):
                for l in range(OH):
                    for m in range(KH):
                        if l * s + m != j:
                            continue
                        for n in range(OW):
                            for p in range(KW):
                                if n * s + p != k:
                                    continue
                                for q in range(O):
                                    h[i, j, k] += K[q, i, m, p] * G[q, l, n]
    return h


def group_correlate(V, K, groups):
    """Fig. 9.15: output block g sees only input block g; valid, stride 1."""
    O, Cg, KH, KW = K.shape
    C = V.shape[0]
    og = O // groups
    Z = None
    for gi in range(groups):
        part = correlate(V[gi * Cg:(gi + 1) * Cg], K[gi * og:(gi + 1) * og], (1, 1), ((0, 0), (0, 0)))
        Z = part if Z is None else np.concatenate([Z, part])
    assert C == Cg * groups
    return Z


def circular_convolve2d(x, k):
    """Circular (periodic) convolution: S[i,j] = sum_{m,n} x[(i-m) % H, (j-n) % W] k[m, n]."""
    H, W = x.shape
    S = np.zeros((H, W))
    for i in range(H):
        for j in range(W):
            for m in range(k.shape[0]):
                for n in range(k.shape[1]):
                    S[i, j] += x[(i - m) % H, (j - n) % W] * k[m, n]
    return S
