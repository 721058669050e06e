"""Input preprocessing fitted on the training data only (CS189 "Normalizing the data").

CS189: "Center each feature so mean is zero. Then scale each feature so variance ~ 1 ...
Whitening reduces the eccentricity even more, but it's more expensive." With mu and
Sigma = U diag(lambda) U^T the mean and covariance of the training inputs x (flattened
to D features):

    center        x - mu
    standardize   (x - mu) / sqrt(var + eps)                   per feature (or per channel)
    pca           diag(lambda + eps)^(-1/2) U^T (x - mu)       PCA whitening (optionally the
                                                               top-k components only)
    zca           U diag(lambda + eps)^(-1/2) U^T (x - mu)     ZCA whitening (Bell & Sejnowski
                                                               1997): whitened, yet as close to
                                                               x as possible, so images stay images

:class:`Preprocess` is an ``nn.Module`` whose statistics are buffers: placed as the first
layer of a model (``with_preprocessing``), they are saved in every checkpoint and
``model.safetensors``, so ``descend evaluate`` / ``predict`` apply exactly the training
set's statistics. ``eps`` is added to every variance/eigenvalue: it keeps directions of
(near) zero variance, such as MNIST's always-black border pixels, from being blown up.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from descend.errors import ConfigError, DataError, ShapeError

METHODS = ("center", "standardize", "pca", "zca")


class Preprocess(nn.Module):
    """Centering, standardization, PCA or ZCA whitening with statistics fitted by :meth:`fit`.

    Args:
        method: one of ``METHODS``.
        input_shape: shape of one input, e.g. (1, 28, 28); the buffers are sized from it, so
            an unfitted module can receive a saved state dict.
        eps: added to each variance (standardize) or eigenvalue (pca, zca).
        per: ``"feature"`` (each pixel its own statistics, CS189's "each feature") or
            ``"channel"`` (one mean/std per colour channel) for center/standardize.
        n_components: PCA only: keep the top k directions; the output is then flat (n, k).
            Otherwise the output has the input's shape.
    """

    def __init__(
        self,
        method: str,
        input_shape: tuple[int, ...] | list[int],
        eps: float = 1e-2,
        per: str = "feature",
        n_components: int | None = None,
    ) -> None:
        super().__init__()
        if method not in METHODS:
            raise ConfigError(f"unknown preprocessing {method!r}; use one of {', '.join(METHODS)}")
        if per not in ("feature", "channel"):
            raise ConfigError(f"per must be 'feature' or 'channel', got {per!r}")
        if per == "channel" and method in ("pca", "zca"):
            raise ConfigError("per='channel' applies to center/standardize; whitening decorrelates all features")
        if not (isinstance(eps, (int, float)) and eps >= 0 and math.isfinite(eps)):
            raise ConfigError(f"Invalid eps: {eps!r}; it must be a finite number >= 0")
        self.input_shape = tuple(int(s) for s in input_shape)
        D = math.prod(self.input_shape)
        if n_components is not None and (method != "pca" or not 1 <= n_components <= D):
            raise ConfigError(f"n_components must be in [1, {D}] and only applies to method='pca', got {n_components}")
        self.method, self.eps, self.per, self.n_components = method, float(eps), per, n_components
        self.register_buffer("mean", torch.zeros(D))
        if method == "standardize":
            self.register_buffer("scale", torch.ones(D))
        elif method in ("pca", "zca"):
            rows = n_components or D
            self.register_buffer("matrix", torch.zeros(rows, D))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def fit(self, x: Tensor, chunk: int = 8192) -> "Preprocess":
        """Fit the statistics on the training inputs ``x`` ``(n, *input_shape)``; returns self."""
        if tuple(x.shape[1:]) != self.input_shape:
            raise ShapeError(f"Preprocess was built for inputs of shape {self.input_shape}, got {tuple(x.shape[1:])}")
        n = len(x)
        if n < 2:
            raise DataError(f"fitting {self.method} needs at least 2 training examples, got {n}")
        flat = x.reshape(n, -1)
        # Statistics in float64, accumulated over chunks (all of MNIST in float64 would be 300 MB).
        total = torch.zeros(flat.shape[1], dtype=torch.float64, device=x.device)
        for part in flat.split(chunk):
            total += part.double().sum(0)
        mean = total / n
        if self.per == "channel":
            per_channel = mean.reshape(self.input_shape[0], -1)
            mean = per_channel.mean(1, keepdim=True).expand_as(per_channel).reshape(-1)
        self.mean.copy_(mean)
        if self.method == "standardize":
            sq = torch.zeros_like(total)
            for part in flat.split(chunk):
                sq += (part.double() - mean).pow(2).sum(0)
            var = sq / (n - 1)
            if self.per == "channel":
                c = self.input_shape[0]
                var = (sq.reshape(c, -1).sum(1) / (n * sq.numel() // c - 1)).repeat_interleave(sq.numel() // c)
            denom = var + self.eps
            # A constant feature (variance 0, eps 0) is only centered.
            self.scale.copy_(torch.where(denom > 0, denom.rsqrt(), torch.ones_like(denom)))
        elif self.method in ("pca", "zca"):
            cov = torch.zeros(flat.shape[1], flat.shape[1], dtype=torch.float64, device=x.device)
            for part in flat.split(chunk):
                centred = part.double() - mean
                cov += centred.T @ centred
            cov /= n - 1
            lam, U = torch.linalg.eigh(cov)  # ascending
            lam, U = lam.flip(0), U.flip(1)  # largest first, for PCA's top-k
            k = self.n_components or len(lam)
            lam, U = lam[:k], U[:, :k]
            if self.eps == 0 and float(lam.min()) <= 1e-12 * max(float(lam.max()), 1e-300):
                rank = int((lam > 1e-12 * float(lam.max())).sum())
                raise DataError(
                    f"the training covariance is singular (rank {rank} < {k}); whitening it needs eps > 0 "
                    f"(e.g. 0.01), or PCA with n_components <= {rank}"
                )
            inv_sqrt = (lam.clamp_min(0) + self.eps).rsqrt()
            matrix = inv_sqrt[:, None] * U.T  # PCA: diag(lambda + eps)^(-1/2) U^T
            if self.method == "zca":
                matrix = U @ matrix  # ZCA: rotate back into pixel space
            self.matrix.copy_(matrix)
        self.fitted.fill_(True)
        return self

    def forward(self, x: Tensor) -> Tensor:
        if not bool(self.fitted):
            raise DataError("Preprocess used before fit(); fit it on the training inputs first")
        if tuple(x.shape[1:]) != self.input_shape:
            raise ShapeError(f"Preprocess expects inputs of shape (n, {', '.join(map(str, self.input_shape))}), "
                             f"got {tuple(x.shape)}")
        flat = x.reshape(len(x), -1) - self.mean
        if self.method == "standardize":
            flat = flat * self.scale
        elif self.method in ("pca", "zca"):
            flat = flat @ self.matrix.T
            if self.n_components is not None:
                return flat
        return flat.reshape(x.shape)

    def extra_repr(self) -> str:
        extra = f", n_components={self.n_components}" if self.n_components else ""
        per = f", per={self.per!r}" if self.method in ("center", "standardize") else ""
        return f"{self.method!r}, input_shape={self.input_shape}, eps={self.eps}{per}{extra}"


def with_preprocessing(model: nn.Module, preprocess: Preprocess) -> nn.Sequential:
    """``nn.Sequential(preprocess, model)``: the model with its input statistics as layer 0."""
    return nn.Sequential(preprocess, model)


def fit_preprocessing(method: str, x: Tensor, **options) -> Preprocess:
    """A :class:`Preprocess` fitted on the training inputs ``x`` (and nothing else)."""
    return Preprocess(method, tuple(x.shape[1:]), **options).fit(x)
