"""Convolution kernels obtained without supervised training, Deep Learning sec. 9.9-9.10.

"There are three basic strategies for obtaining convolution kernels without supervised
training. One is to simply initialize them randomly. Another is to design them by hand,
for example by setting each kernel to detect edges at a certain orientation or scale.
Finally, one can learn the kernels with an unsupervised criterion. For example, Coates
et al. (2011) apply k-means clustering to small image patches, then use each learned
centroid as a convolution kernel."

* ``random_kernels``: Gaussian filters, zero mean and unit norm (Jarrett et al. 2009)
* ``edge_kernels``: oriented first derivatives of a Gaussian (hand-designed edges)
* ``gabor_kernel``: the Gabor function of eqs. 9.16-9.18; ``gabor_bank`` a set of them
* ``kmeans_kernels``: k-means centroids of whitened patches (Coates & Ng), folded with
  the whitening into (kernel, bias) so a plain convolution applies them
* ``ConvFeatures``: a frozen convolution + rectification + pooling feature extractor,
  so "one can then extract the features for the entire training set just once" and
  train only the classifier on top.

Kernels are (K, C, k, k) tensors in cross-correlation layout (``descend.nn.functional.correlate``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from descend.errors import ConfigError, DataError, ShapeError
from descend.nn.functional.conv import correlate
from descend.nn.functional.pooling import adaptive_pool


def _coords(size: int, dtype=torch.float32) -> tuple[Tensor, Tensor]:
    """(x, y) grids centred on the kernel centre; x grows to the right, y downwards."""
    c = torch.arange(size, dtype=dtype) - (size - 1) / 2.0
    y, x = torch.meshgrid(c, c, indexing="ij")
    return x, y


def random_kernels(count: int, in_channels: int, size: int,
                   generator: torch.Generator | None = None) -> Tensor:
    r"""``count`` random filters (count, in_channels, size, size), each zero-mean, unit-norm:
    :math:`K = (G - \bar{G}) / \lVert G - \bar{G} \rVert` for a Gaussian draw :math:`G`.

    "Random filters often work surprisingly well in convolutional networks" (sec. 9.9;
    Jarrett et al. 2009, Saxe et al. 2011).
    """
    if count < 1 or in_channels < 1 or size < 1:
        raise ConfigError(f"random_kernels needs count, in_channels, size >= 1, got {count}, {in_channels}, {size}")
    k = torch.randn(count, in_channels, size, size, generator=generator)
    k = k - k.mean(dim=(1, 2, 3), keepdim=True)
    return k / k.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None, None]


def edge_kernels(size: int = 5, orientations: int = 8, sigma: float | None = None) -> Tensor:
    r"""Hand-designed edge detectors: derivatives of a Gaussian at evenly spaced angles.

    Kernel for angle :math:`\theta`, scaled to unit norm:

    .. math::

        w(x, y) \propto (x \cos\theta + y \sin\theta)
            \exp\Bigl(-\frac{x^2 + y^2}{2 \sigma^2}\Bigr);

    under cross-correlation it responds positively to brightness rising along direction
    :math:`\theta` (an edge "at a certain orientation", sec. 9.9), in proportion to
    :math:`\cos(\theta - \text{direction of the gradient})`. Angles cover :math:`[0, 2\pi)`,
    so both polarities appear.
    Returns (orientations, 1, size, size).
    """
    if size < 2 or orientations < 1:
        raise ConfigError(f"edge_kernels needs size >= 2 and orientations >= 1, got {size}, {orientations}")
    sigma = size / 4.0 if sigma is None else sigma
    x, y = _coords(size)
    theta = torch.arange(orientations, dtype=torch.float32) * (2 * math.pi / orientations)
    along = x[None] * torch.cos(theta)[:, None, None] + y[None] * torch.sin(theta)[:, None, None]
    k = along * torch.exp(-(x**2 + y**2) / (2 * sigma**2))[None]
    k = k / k.flatten(1).norm(dim=1)[:, None, None]
    return k[:, None]


def gabor_kernel(
    size: int,
    alpha: float = 1.0,
    beta_x: float = 0.1,
    beta_y: float = 0.1,
    f: float = 1.0,
    phi: float = 0.0,
    x0: float = 0.0,
    y0: float = 0.0,
    tau: float = 0.0,
) -> Tensor:
    r"""The Gabor function of eqs. 9.16-9.18 sampled on a size x size grid centred at 0.

    .. math::

        \begin{aligned}
        w(x, y; \alpha, \beta_x, \beta_y, f, \phi, x_0, y_0, \tau)
            &= \alpha \exp\bigl(-\beta_x x'^2 - \beta_y y'^2\bigr) \cos(f x' + \phi) && \text{(9.16)} \\
        x' &= (x - x_0) \cos(\tau) + (y - y_0) \sin(\tau) && \text{(9.17)} \\
        y' &= -(x - x_0) \sin(\tau) + (y - y_0) \cos(\tau) && \text{(9.18)}
        \end{aligned}

    "Reverse correlation shows us that most V1 cells have weights that are described by
    Gabor functions" (sec. 9.10). Returns a (size, size) tensor, rows = y, columns = x.
    """
    if size < 1:
        raise ConfigError(f"Invalid Gabor kernel size {size}; must be >= 1")
    x, y = _coords(size, torch.float64)
    xp = (x - x0) * math.cos(tau) + (y - y0) * math.sin(tau)
    yp = -(x - x0) * math.sin(tau) + (y - y0) * math.cos(tau)
    w = alpha * torch.exp(-beta_x * xp**2 - beta_y * yp**2) * torch.cos(f * xp + phi)
    return w.to(torch.float32)


def gabor_bank(
    size: int = 7,
    orientations: int = 8,
    frequencies: Sequence[float] = (0.8, 1.6),
    phases: Sequence[float] = (0.0, math.pi / 2),
    beta: float | None = None,
) -> Tensor:
    r"""A bank of Gabor kernels (eq. 9.16) at every orientation x frequency x phase.

    Phases :math:`\phi = 0` and :math:`\phi = \pi/2` make quadrature pairs (sec. 9.10). Each kernel is made zero-mean
    and unit-norm so that flat regions give no response. Returns
    (orientations * len(frequencies) * len(phases), 1, size, size).
    """
    beta = (2.0 / size) ** 2 if beta is None else beta
    kernels = []
    for i in range(orientations):          # a few dozen kernels, built once
        tau = math.pi * i / orientations
        for f in frequencies:
            for phi in phases:
                k = gabor_kernel(size, 1.0, beta, beta, f, phi, 0.0, 0.0, tau)
                k = k - k.mean()
                kernels.append(k / k.norm().clamp_min(1e-12))
    return torch.stack(kernels)[:, None]


def extract_patches(images: Tensor, size: int, count: int,
                    generator: torch.Generator | None = None) -> Tensor:
    """``count`` random size x size patches of (N, C, H, W) images, as rows (count, C*size*size)."""
    if images.dim() != 4:
        raise ShapeError(f"extract_patches expects images (N, C, H, W), got {tuple(images.shape)}")
    n, ch, hgt, wid = images.shape
    if size > min(hgt, wid):
        raise ShapeError(f"patch size {size} is larger than the {hgt}x{wid} images")
    idx = torch.randint(0, n, (count,), generator=generator)
    top = torch.randint(0, hgt - size + 1, (count,), generator=generator)
    left = torch.randint(0, wid - size + 1, (count,), generator=generator)
    r = top[:, None] + torch.arange(size)[None]           # (count, size)
    c = left[:, None] + torch.arange(size)[None]
    patches = images[idx[:, None, None, None], torch.arange(ch)[None, :, None, None],
                     r[:, None, :, None], c[:, None, None, :]]
    return patches.reshape(count, ch * size * size)


def zca_whitening(patches: Tensor, eps: float = 0.01) -> tuple[Tensor, Tensor]:
    r"""ZCA whitening fitted on rows of ``patches``: returns (mean, W), with the eigen-decomposition
    :math:`\Sigma = U S U^\top` of the patch covariance and :math:`\epsilon` = ``eps``,

    .. math::

        W = U (S + \epsilon I)^{-1/2} U^\top.

    ``(x - mean) @ W`` has (nearly) identity covariance; :math:`\epsilon` regularizes small eigenvalues
    (Coates & Ng use 0.1 for 0-255 pixels; 0.01 suits pixels in [0, 1]).
    """
    if patches.dim() != 2 or patches.shape[0] < 2:
        raise ShapeError(f"zca_whitening expects (count >= 2, features), got {tuple(patches.shape)}")
    data = patches.to(torch.float64)
    mean = data.mean(dim=0)
    cov = (data - mean).T @ (data - mean) / (data.shape[0] - 1)
    s, u = torch.linalg.eigh(cov)
    w = (u * (s.clamp_min(0) + eps).rsqrt()) @ u.T
    return mean.to(patches.dtype), w.to(patches.dtype)


def kmeans(data: Tensor, k: int, iterations: int = 20,
           generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    r"""Lloyd's k-means on the rows of ``data``: returns (centroids (k, D), assignment (N,)).

    Each iteration assigns every row :math:`x_i` to its nearest centroid and moves each
    centroid to the mean of its rows:

    .. math::

        a_i \leftarrow \operatorname*{arg\,min}_j \lVert x_i - \mu_j \rVert, \qquad
        \mu_j \leftarrow \frac{1}{|\{i : a_i = j\}|} \sum_{i : a_i = j} x_i.

    Initial centroids are k distinct random rows; a cluster that empties is re-seeded
    with a random row. Each iteration is two vectorized steps (distances by ``cdist``,
    means by ``index_add``), no loop over points.
    """
    n = data.shape[0]
    if data.dim() != 2 or not 1 <= k <= n:
        raise ShapeError(f"kmeans needs (N, D) data with 1 <= k <= N, got k={k} and shape {tuple(data.shape)}")
    centroids = data[torch.randperm(n, generator=generator)[:k]].clone()
    assign = torch.zeros(n, dtype=torch.long)
    for _ in range(iterations):
        assign = torch.cdist(data, centroids).argmin(dim=1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, data)
        counts = torch.bincount(assign, minlength=k).to(data.dtype)
        empty = counts == 0
        centroids = sums / counts.clamp_min(1)[:, None]
        if empty.any():
            centroids[empty] = data[torch.randint(0, n, (int(empty.sum()),), generator=generator)]
    return centroids, assign


def kmeans_kernels(
    images: Tensor,
    count: int,
    size: int,
    patches: int = 20000,
    iterations: int = 20,
    eps: float = 0.01,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Kernels learned by k-means on whitened image patches (Coates et al. 2011; sec. 9.9).

    Patches are brightness- and contrast-normalized, ZCA-whitened, and clustered. A
    centroid :math:`c` scores a raw patch :math:`p` (of :math:`n` values, :math:`\bar{p}` its
    mean, :math:`\mu` the whitening mean) by

    .. math::

        c^\top W (p - \bar{p}\, \mathbf{1} - \mu)
            = \bigl( (I - \tfrac{1}{n} \mathbf{1}\mathbf{1}^\top) W c \bigr)^\top p - (W c)^\top \mu;

    that is linear in :math:`p`, so it becomes a kernel
    :math:`(I - \frac{1}{n} \mathbf{1}\mathbf{1}^\top) W c` and a bias :math:`-(W c)^\top \mu`
    applied by an ordinary convolution ("without ever using convolution during the training process"). The
    per-patch contrast division, used while clustering, is left out at convolution time
    (it only rescales each response). Returns (kernels (count, C, size, size), bias (count,)).
    """
    rows = extract_patches(images, size, patches, generator)
    centred = rows - rows.mean(dim=1, keepdim=True)
    scale = (centred.var(dim=1, keepdim=True) + eps).sqrt()
    normalized = centred / scale
    mean, w = zca_whitening(normalized, eps)
    if not torch.isfinite(w).all():
        raise DataError("patch whitening failed (non-finite matrix); check the images for NaN")
    centroids, _ = kmeans((normalized - mean) @ w, count, iterations, generator)
    centroids = centroids / centroids.norm(dim=1, keepdim=True).clamp_min(1e-12)
    filt = centroids @ w                        # rows: (W c)^T, W symmetric
    bias = -(filt @ mean)
    filt = filt - filt.mean(dim=1, keepdim=True)   # folds the brightness normalization
    return filt.reshape(count, images.shape[1], size, size), bias


class ConvFeatures(nn.Module):
    r"""Frozen kernels -> rectification -> pooling: the fixed feature layer of sec. 9.9.

    .. math::

        \text{features} = \operatorname{flatten}\Bigl( \operatorname{avgpool}_{\text{grid}}\bigl(
            \rho(K \star x + b) \bigr) \Bigr),

    with :math:`\star` cross-correlation with the fixed kernels :math:`K` and :math:`\rho`
    the rectification: ``rectify="polarity"`` keeps both :math:`\max(z, 0)` and
    :math:`\max(-z, 0)` (Coates & Ng's polarity
    split, so sign-symmetric random and Gabor kernels lose nothing); "relu" and "abs"
    (Jarrett et al.) are the other choices. The kernels are buffers, not parameters:
    nothing here is trained.
    """

    def __init__(self, kernels: Tensor, bias: Tensor | None = None, grid: int = 4,
                 rectify: str = "polarity", padding: str = "valid") -> None:
        super().__init__()
        if kernels.dim() != 4:
            raise ShapeError(f"kernels must be (K, C, k, k), got {tuple(kernels.shape)}")
        if rectify not in ("polarity", "relu", "abs"):
            raise ConfigError(f"Unknown rectify {rectify!r}; use 'polarity', 'relu' or 'abs'")
        self.register_buffer("kernels", kernels.detach().clone())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.grid, self.rectify, self.padding = grid, rectify, padding

    @property
    def num_features(self) -> int:
        per = 2 if self.rectify == "polarity" else 1
        return self.kernels.shape[0] * per * self.grid * self.grid

    def forward(self, x: Tensor) -> Tensor:
        z = correlate(x, self.kernels.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype),
                      1, self.padding)
        if self.rectify == "polarity":
            z = torch.cat([z.clamp_min(0), (-z).clamp_min(0)], dim=1)
        elif self.rectify == "relu":
            z = z.clamp_min(0)
        else:
            z = z.abs()
        return adaptive_pool(z, self.grid, "avg").flatten(1)

    @torch.no_grad()
    def extract(self, x: Tensor, batch_size: int = 1000) -> Tensor:
        """Features of a whole data set, computed once in batches (sec. 9.9)."""
        return torch.cat([self(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])

    def extra_repr(self) -> str:
        return f"kernels={tuple(self.kernels.shape)}, grid={self.grid}, rectify={self.rectify!r}"
