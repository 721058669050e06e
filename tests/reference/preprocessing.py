"""NumPy oracles for descend.data.preprocessing (CS189 "normalizing the data", whitening)."""

import numpy as np


def standardize(train, x, eps):
    """Per feature: (x - mean) / sqrt(var + eps), statistics of ``train`` (rows = examples)."""
    mu = train.mean(axis=0)
    var = train.var(axis=0, ddof=1)
    return (x - mu) / np.sqrt(var + eps)


def whitening_matrices(train, eps):
    """(PCA, ZCA) whitening matrices of ``train``: diag(l + eps)^-1/2 U^T and U diag(l + eps)^-1/2 U^T."""
    mu = train.mean(axis=0)
    c = train - mu
    cov = c.T @ c / (len(train) - 1)
    lam, U = np.linalg.eigh(cov)
    order = np.argsort(lam)[::-1]
    lam, U = lam[order], U[:, order]
    pca = np.diag(1.0 / np.sqrt(lam + eps)) @ U.T
    zca = U @ pca
    return pca, zca
