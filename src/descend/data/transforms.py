"""More data augmentation, batched: crops, flips, affine and elastic distortions,
AlexNet's PCA colour jitter, and test-time augmentation.

Every training augmentation follows the protocol of :mod:`descend.data.augment`:
``augment(x, generator) -> x`` on a batch (n, channels, rows, cols), drawing all its
random numbers from ``generator`` (the Trainer seeds one per epoch, so runs and resumed
runs see the same distortions). Each draws the parameters of the whole batch at once and
moves all images with one tensor operation (a ``gather`` or one ``grid_sample``), never a
Python loop over images or pixels.

    RandomCrop(size, padding)     a random size x size window of the zero-padded image
                                  (AlexNet: 224 of 256; CIFAR: 32 of 32 padded by 4)
    RandomFlip(p)                 left-right mirror with probability p (off for digits:
                                  a mirrored 2, 3, 7 is no digit)
    RandomAffine(...)             small rotations, scalings, shears and translations
    ElasticDistortion(alpha, sigma)  Simard et al. (2003): a random displacement field,
                                  smoothed by a Gaussian of width sigma, scaled by alpha
    AffineElastic(affine, elastic)  both in one resampling (Ciresan et al. 2012)
    PCAColorJitter(std)           AlexNet sec. 4.1: add sum_i p_i alpha_i lambda_i to every
                                  RGB pixel (p_i, lambda_i: the eigenvectors/values of the
                                  training set's RGB covariance, alpha_i ~ N(0, std^2))
    Compose(a, b, ...)            apply several in turn

Test-time augmentation (AlexNet: "extracting five 224 x 224 patches (the four corner
patches and the center patch) as well as their horizontal reflections (hence ten patches
in all), and averaging the predictions made by the network's softmax layer"):
``tta_views`` makes the views and ``tta_predict`` averages the softmax outputs over them.

Geometric transforms use ``torch.nn.functional.affine_grid`` / ``grid_sample`` with
``align_corners=False``: pixel centres sit at normalized coordinates (2j + 1)/W - 1, so
whole-pixel moves and quarter turns land exactly on pixel centres; uncovered pixels are 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from descend.data.augment import _check_images
from descend.errors import ConfigError, DataError, ShapeError


def _uniform(n: int, low: float, high: float, generator, device) -> Tensor:
    return (torch.rand(n, generator=generator) * (high - low) + low).to(device)


# ----------------------------------------------------------------------------- crops and flips
def _crop_at(x: Tensor, top: Tensor, left: Tensor, size: tuple[int, int]) -> Tensor:
    """Image i's window of ``size`` whose top-left pixel is (top[i], left[i]): one gather."""
    n, c, rows, cols = x.shape
    h, w = size
    r = top[:, None] + torch.arange(h, device=x.device)  # (n, h)
    q = left[:, None] + torch.arange(w, device=x.device)  # (n, w)
    index = (r[:, :, None] * cols + q[:, None, :]).reshape(n, 1, h * w).expand(n, c, h * w)
    return x.reshape(n, c, -1).gather(2, index).reshape(n, c, h, w)


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


class RandomCrop:
    """A random ``size`` window of each image, after zero-padding it by ``padding`` pixels.

    With ``size`` equal to the image size this is :class:`~descend.data.RandomShift` with
    ``max_shift = padding``; with a smaller ``size`` it is AlexNet's random patches (the
    network is then built for ``size``, and tested on :func:`center_crop` or ten crops).
    """

    def __init__(self, size: int | tuple[int, int], padding: int = 0) -> None:
        self.size = _size(size)
        if min(self.size) < 1 or not isinstance(padding, int) or padding < 0:
            raise ConfigError(f"RandomCrop needs size >= 1 and an integer padding >= 0, got {size!r}, {padding!r}")
        self.padding = padding

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_images(x)
        p = self.padding
        if p:
            x = F.pad(x, (p, p, p, p))
        n, _, rows, cols = x.shape
        h, w = self.size
        if h > rows or w > cols:
            raise ShapeError(f"RandomCrop of {self.size} does not fit in padded images of {(rows, cols)}")
        top = torch.randint(0, rows - h + 1, (n,), generator=generator).to(x.device)
        left = torch.randint(0, cols - w + 1, (n,), generator=generator).to(x.device)
        return _crop_at(x, top, left, self.size)

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size}, padding={self.padding})"


class RandomFlip:
    """Mirror each image left-right with probability ``p`` (``vertical=True``: upside down)."""

    def __init__(self, p: float = 0.5, vertical: bool = False) -> None:
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"RandomFlip probability must be in [0, 1], got {p}")
        self.p, self.dim = p, -2 if vertical else -1

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_images(x)
        flip = (torch.rand(len(x), generator=generator) < self.p).to(x.device)
        return torch.where(flip[:, None, None, None], x.flip(self.dim), x)

    def __repr__(self) -> str:
        return f"RandomFlip(p={self.p}, {'vertical' if self.dim == -2 else 'horizontal'})"


def center_crop(x: Tensor, size: int | tuple[int, int]) -> Tensor:
    """The central ``size`` window of every image (the rounding puts an odd margin's extra pixel below/right)."""
    _check_images(x)
    h, w = _size(size)
    top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    return x[..., top : top + h, left : left + w]


def five_crop(x: Tensor, size: int | tuple[int, int]) -> list[Tensor]:
    """The four corner windows and the centre window of ``size`` (AlexNet's test patches)."""
    _check_images(x)
    h, w = _size(size)
    rows, cols = x.shape[-2:]
    if h > rows or w > cols:
        raise ShapeError(f"crops of {(h, w)} do not fit in images of {(rows, cols)}")
    return [x[..., :h, :w], x[..., :h, cols - w :], x[..., rows - h :, :w], x[..., rows - h :, cols - w :],
            center_crop(x, (h, w))]


def ten_crop(x: Tensor, size: int | tuple[int, int]) -> list[Tensor]:
    """:func:`five_crop` and the horizontal reflections of the five crops."""
    crops = five_crop(x, size)
    return crops + [c.flip(-1) for c in crops]


# ----------------------------------------------------------------------------- geometric distortions
def affine(x: Tensor, matrix: Tensor, offset: Tensor, mode: str = "bilinear", field: Tensor | None = None) -> Tensor:
    """Resample each image: output pixel p (in pixels from the image centre, x to the right,
    y down) takes the input value at ``matrix[i] @ p + offset[i]`` (``+ field[i, :, p]``
    when a displacement field (n, 2, rows, cols) is given, as in :func:`displace`); zero outside.

    ``matrix`` (n, 2, 2) and ``offset`` (n, 2) are in pixel units; they are converted to the
    normalized coordinates of ``affine_grid`` so that non-square images are not stretched.
    """
    _check_images(x)
    n, _, rows, cols = x.shape
    if matrix.shape != (n, 2, 2) or offset.shape != (n, 2):
        raise ShapeError(f"affine needs matrix (n, 2, 2) and offset (n, 2) for n={n}, got "
                         f"{tuple(matrix.shape)}, {tuple(offset.shape)}")
    if field is not None and field.shape != (n, 2, rows, cols):
        raise ShapeError(f"affine needs a field of shape (n, 2, rows, cols) = {(n, 2, rows, cols)}, "
                         f"got {tuple(field.shape)}")
    half = torch.tensor([cols / 2.0, rows / 2.0], dtype=x.dtype, device=x.device)  # D = diag(W/2, H/2)
    m = matrix.to(x) * half[None, None, :] / half[None, :, None]  # D^-1 M D
    t = offset.to(x) / half  # D^-1 offset
    theta = torch.cat([m, t[:, :, None]], dim=2)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    if field is not None:  # (n, 2, rows, cols) pixels -> (n, rows, cols, 2) normalized units
        grid = grid + field.to(x).permute(0, 2, 3, 1) / half
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)


class RandomAffine:
    """Small random affine distortions of each image, one ``grid_sample`` per batch.

    Per image: a rotation by U(-degrees, degrees), a scaling of the content by
    U(1 - scale, 1 + scale), a horizontal shear by U(-shear, shear) degrees and a
    translation by U(-translate, translate) pixels in each direction, about the centre.
    """

    def __init__(self, degrees: float = 10.0, scale: float = 0.1, shear: float = 0.0, translate: float = 2.0,
                 mode: str = "bilinear") -> None:
        if degrees < 0 or not 0 <= scale < 1 or shear < 0 or translate < 0:
            raise ConfigError(
                f"RandomAffine needs degrees >= 0, 0 <= scale < 1, shear >= 0, translate >= 0; "
                f"got {degrees}, {scale}, {shear}, {translate}"
            )
        if mode not in ("bilinear", "nearest"):
            raise ConfigError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
        self.degrees, self.scale, self.shear, self.translate, self.mode = degrees, scale, shear, translate, mode

    def parameters(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """The (matrix, offset) of ``affine`` for n images: the inverse of content <- content."""
        angle = torch.deg2rad(_uniform(n, -self.degrees, self.degrees, generator, "cpu"))
        s = _uniform(n, 1 - self.scale, 1 + self.scale, generator, "cpu")
        shear = torch.tan(torch.deg2rad(_uniform(n, -self.shear, self.shear, generator, "cpu")))
        t = _uniform(2 * n, -self.translate, self.translate, generator, "cpu").reshape(n, 2)
        cos, sin = torch.cos(angle), torch.sin(angle)
        # Sampling map: input = R(angle) Shear(shear) / s (output - t).
        rot = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
        sh = torch.zeros(n, 2, 2)
        sh[:, 0, 0], sh[:, 0, 1], sh[:, 1, 1] = 1.0, shear, 1.0
        matrix = rot @ sh / s[:, None, None]
        offset = -(matrix @ t[:, :, None])[:, :, 0]
        return matrix, offset

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_images(x)
        matrix, offset = self.parameters(len(x), generator)
        return affine(x, matrix, offset, self.mode)

    def __repr__(self) -> str:
        return (f"RandomAffine(degrees={self.degrees}, scale={self.scale}, shear={self.shear}, "
                f"translate={self.translate})")


def displace(x: Tensor, field: Tensor, mode: str = "bilinear") -> Tensor:
    """Output pixel (i, j) of image k takes the input value at (i + field[k, 1, i, j],
    j + field[k, 0, i, j]) (in pixels; bilinear between pixels, 0 outside the image)."""
    _check_images(x)
    n, _, rows, cols = x.shape
    if field.shape != (n, 2, rows, cols):
        raise ShapeError(f"displace needs a field of shape (n, 2, rows, cols) = {(n, 2, rows, cols)}, "
                         f"got {tuple(field.shape)}")
    # Pixel centres in normalized coordinates (align_corners=False), plus the field.
    gx = (2 * torch.arange(cols, dtype=x.dtype, device=x.device) + 1) / cols - 1
    gy = (2 * torch.arange(rows, dtype=x.dtype, device=x.device) + 1) / rows - 1
    grid_x = gx[None, None, :] + field[:, 0].to(x) * (2.0 / cols)
    grid_y = gy[None, :, None] + field[:, 1].to(x) * (2.0 / rows)
    grid = torch.stack([grid_x, grid_y], dim=-1)
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)


def gaussian_kernel1d(sigma: float, truncate: float = 4.0, dtype=torch.float32) -> Tensor:
    """A normalized Gaussian of std ``sigma`` on the taps -r..r, r = int(truncate sigma + 0.5) (as SciPy)."""
    radius = int(truncate * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).to(dtype)


def gaussian_matrix(n: int, sigma: float, truncate: float = 4.0, dtype=torch.float32) -> Tensor:
    """The (n, n) matrix of 1D Gaussian smoothing with zeros outside: a banded Toeplitz matrix,
    row i holding the kernel centred on i (convolution as a matrix, Deep Learning sec. 9.1)."""
    k = gaussian_kernel1d(sigma, truncate, dtype)
    r = (len(k) - 1) // 2
    i = torch.arange(n)
    d = i[None, :] - i[:, None] + r  # kernel tap of column j in row i
    inside = (d >= 0) & (d < len(k))
    return torch.where(inside, k[d.clamp(0, len(k) - 1)], torch.zeros((), dtype=dtype))


def gaussian_blur(x: Tensor, sigma: float, truncate: float = 4.0) -> Tensor:
    """Smooth every channel of x (n, c, rows, cols) with a Gaussian of std ``sigma``, zero
    outside the image. The Gaussian is separable (sec. 9.8): G_rows @ x @ G_cols^T with the
    banded matrices of :func:`gaussian_matrix`, two batched matrix products (several times
    faster on a CPU than a 1 x (8 sigma + 1) convolution of single-channel maps)."""
    _check_images(x)
    if sigma <= 0:
        return x
    rows, cols = x.shape[-2:]
    g_rows = gaussian_matrix(rows, sigma, truncate, x.dtype).to(x.device)
    g_cols = gaussian_matrix(cols, sigma, truncate, x.dtype).to(x.device)
    return g_rows @ x @ g_cols.T


class ElasticDistortion:
    """Elastic distortion (Simard, Steinkraus & Platt 2003, the MNIST augmentation):
    draw a displacement field U(-1, 1) per pixel and direction, smooth it with a Gaussian
    of std ``sigma`` pixels, scale it by ``alpha``, and resample the image along it.
    Simard et al. use sigma = 4, alpha = 34 on 28 x 28 digits.
    """

    def __init__(self, alpha: float = 34.0, sigma: float = 4.0, mode: str = "bilinear") -> None:
        if alpha < 0 or sigma <= 0:
            raise ConfigError(f"ElasticDistortion needs alpha >= 0 and sigma > 0, got {alpha}, {sigma}")
        if mode not in ("bilinear", "nearest"):
            raise ConfigError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
        self.alpha, self.sigma, self.mode = alpha, sigma, mode

    def field(self, n: int, rows: int, cols: int, generator: torch.Generator | None = None) -> Tensor:
        """The smoothed, scaled displacement fields (n, 2, rows, cols), in pixels."""
        raw = torch.rand(n, 2, rows, cols, generator=generator) * 2 - 1
        return gaussian_blur(raw, self.sigma) * self.alpha

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_images(x)
        n, _, rows, cols = x.shape
        return displace(x, self.field(n, rows, cols, generator).to(x.device), self.mode)

    def __repr__(self) -> str:
        return f"ElasticDistortion(alpha={self.alpha}, sigma={self.sigma})"


class AffineElastic:
    """A random affine distortion and an elastic one in a single resampling (Ciresan et al.
    2012 distort MNIST digits this way for their committees of networks): output pixel p
    takes the input at ``M p + offset + u(p)``, with (M, offset) drawn by ``affine`` and the
    displacement field u drawn by ``elastic``. One bilinear interpolation instead of two,
    so the digit is blurred once.
    """

    def __init__(self, affine: RandomAffine, elastic: ElasticDistortion) -> None:
        if affine.mode != elastic.mode:
            raise ConfigError(f"AffineElastic needs one interpolation mode, got {affine.mode!r} and {elastic.mode!r}")
        self.affine, self.elastic = affine, elastic

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_images(x)
        n, _, rows, cols = x.shape
        matrix, offset = self.affine.parameters(n, generator)
        field = self.elastic.field(n, rows, cols, generator).to(x.device)
        return affine(x, matrix, offset, self.affine.mode, field=field)

    def __repr__(self) -> str:
        return f"AffineElastic({self.affine!r}, {self.elastic!r})"


# ----------------------------------------------------------------------------- colour
class PCAColorJitter:
    """AlexNet's colour augmentation (Krizhevsky et al. 2012, sec. 4.1): "perform PCA on
    the set of RGB pixel values throughout the training set. To each training image, we add
    multiples of the found principal components, with magnitudes proportional to the
    corresponding eigenvalues times a random variable drawn from a Gaussian with mean zero
    and standard deviation 0.1":

        I_xy += [p1, p2, p3] [alpha_1 lambda_1, alpha_2 lambda_2, alpha_3 lambda_3]^T

    with one draw of alpha per image (and per batch in which it appears). Call :meth:`fit`
    on the training images first (or pass ``eigenvalues``/``eigenvectors``).
    """

    def __init__(self, std: float = 0.1, eigenvalues: Tensor | None = None, eigenvectors: Tensor | None = None) -> None:
        if std < 0:
            raise ConfigError(f"PCAColorJitter std must be >= 0, got {std}")
        self.std = std
        self.eigenvalues = None if eigenvalues is None else torch.as_tensor(eigenvalues, dtype=torch.float32)
        self.eigenvectors = None if eigenvectors is None else torch.as_tensor(eigenvectors, dtype=torch.float32)

    def fit(self, x: Tensor) -> "PCAColorJitter":
        """PCA of the RGB values of every pixel of the training images x (n, 3, rows, cols)."""
        _check_images(x)
        if x.shape[1] != 3:
            raise ShapeError(f"PCA colour jitter is for RGB images (3 channels), got {x.shape[1]} channel(s)")
        pixels = x.transpose(0, 1).reshape(3, -1).double()
        cov = torch.cov(pixels)
        lam, U = torch.linalg.eigh(cov)
        self.eigenvalues, self.eigenvectors = lam.clamp_min(0).float(), U.float()
        return self

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_images(x)
        if self.eigenvalues is None:
            raise DataError("PCAColorJitter used before fit(); fit it on the training images")
        if x.shape[1] != 3:
            raise ShapeError(f"PCA colour jitter is for RGB images (3 channels), got {x.shape[1]} channel(s)")
        alpha = torch.randn(len(x), 3, generator=generator) * self.std
        shift = (alpha * self.eigenvalues) @ self.eigenvectors.T  # (n, 3): sum_i alpha_i lambda_i p_i
        return x + shift.to(x)[:, :, None, None]

    def __repr__(self) -> str:
        return f"PCAColorJitter(std={self.std})"


class Compose:
    """Apply augmentations in turn, all drawing from the same generator."""

    def __init__(self, *augmentations) -> None:
        self.augmentations = [a for a in augmentations if a is not None]

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        for a in self.augmentations:
            x = a(x, generator)
        return x

    def __repr__(self) -> str:
        return f"Compose({', '.join(map(repr, self.augmentations))})"


# ----------------------------------------------------------------------------- test time
TTA = ("none", "flip", "five-crop", "ten-crop")


def tta_views(x: Tensor, kind: str, padding: int = 2) -> list[Tensor]:
    """The test-time views of a batch, each of the input's size.

    ``"flip"``: x and its mirror image; ``"five-crop"``: pad by ``padding`` and take the
    four corner and the centre windows of the original size (the centre one is x);
    ``"ten-crop"``: those five and their mirror images (AlexNet); ``"none"``: [x].
    """
    _check_images(x)
    if kind == "none":
        return [x]
    if kind == "flip":
        return [x, x.flip(-1)]
    if kind in ("five-crop", "ten-crop"):
        if not isinstance(padding, int) or padding < 1:
            raise ConfigError(f"{kind} test-time augmentation needs padding >= 1, got {padding!r}")
        padded = F.pad(x, (padding,) * 4)
        crops = five_crop(padded, tuple(x.shape[-2:]))
        return crops + [c.flip(-1) for c in crops] if kind == "ten-crop" else crops
    raise ConfigError(f"unknown test-time augmentation {kind!r}; use one of {', '.join(TTA)}")


@torch.no_grad()
def tta_predict(model: torch.nn.Module, x: Tensor, kind: str = "ten-crop", padding: int = 2,
                batch_size: int = 1000) -> Tensor:
    """Softmax outputs of ``model`` averaged over the test-time views of each input (n, classes)."""
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        out = []
        for chunk in x.split(batch_size):
            views = tta_views(chunk.to(device), kind, padding)
            probs = torch.stack([model(v).softmax(dim=1) for v in views]).mean(0)
            out.append(probs.cpu())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)

