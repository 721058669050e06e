"""Pictures of digits made into MNIST digits: the preprocessing that produced MNIST, for photos.

MNIST's digits were made this way (LeCun, Bottou, Bengio and Haffner 1998, "Gradient-based
learning applied to document recognition", sec. III-A; the MNIST page; Nielsen ch. 1):

    The original black and white (bilevel) images from NIST were size normalized to fit in
    a 20x20 pixel box while preserving their aspect ratio. The resulting images contain
    grey levels as a result of the anti-aliasing technique used by the normalization
    algorithm. The images were centered in a 28x28 image by computing the center of mass
    of the pixels, and translating the image so as to position this point at the center
    of the 28x28 field.

A network trained on them has only seen white strokes on a black field of exactly that
size and position, so a phone picture (dark ink on light paper, uneven light, noise, the
digit anywhere on a large page) is first made into one. :func:`to_mnist` does, for a
grey-level picture g with values in [0, 1]:

    t      <- Otsu's threshold of g                                   (Otsu 1979, eq. 18-19)
    if the picture's border is mostly above t:  g <- 1 - g, t <- 1 - t   (dark ink on paper)
    b(r,c) <- plane a0 + a1 r + a2 c fitted by least squares to the paper {g <= t}
    d      <- g - b                                                    (uneven light removed)
    s      <- 1.4826 * median |d - median d| over the paper            (noise level, robust)
    k      <- 90th percentile of d over the ink {g > t}                (ink level)
    v      <- clip((d - 3s) / (k - 3s), 0, 1)     (paper 0, ink 1; 3s -> 0 when k < 6s)
    bilevel image {v > 1/2}; its 8-connected components under 5% of the largest are
    specks and are erased
    crop v to the bounding box of the bilevel image, resize it (anti-aliased) so that its
    longer side is 20 pixels, and paste it into a 28x28 field at the whole-pixel offset
    that puts its centre of mass nearest (14, 14)

Centre of mass in (row, column) pixel indices, as MNIST's own digits: theirs all lie in
[13.48, 14.5] on both axes. A picture that already is an MNIST digit (the model's size, dark
background, centred) is left as it is (:func:`is_mnist_format`). For a model of another
input size the box and the centre scale with it (box = 20/28 of the field).

:func:`load_picture` reads a file: Pillow decodes it, EXIF orientation is applied, colour
becomes luma (ITU-R 601-2, Pillow's "L"), transparency is flattened onto a background
that contrasts with the drawing, and a large picture is reduced to at most 512 pixels a
side (a 20-pixel digit needs no more). Damaged files, and files over ``MAX_PIXELS`` pixels
(checked from the header, before decoding), raise :class:`~descend.errors.DataError`.
"""

from __future__ import annotations

import math
import os
import struct
import warnings
import zlib

import numpy as np
import torch
import torch.nn.functional as F

from descend.errors import DataError, DataNotFound, ShapeError

MAX_PIXELS = 150_000_000  # pictures larger than this are refused before decoding
WORKING_SIZE = 512  # longer side of the picture the digit is found in
BOX, FIELD = 20, 28  # MNIST: the digit's box and the field it is centred in
SPECK = 0.05  # components of the bilevel image smaller than this share of the largest are specks
MODES = ("auto", "as-is", "preprocess")


# ------------------------------------------------------------------------- Otsu's threshold
def otsu_threshold(images: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """Otsu's threshold of each image (..., H, W): shape (...); pixels above it are the bright class.

    Otsu (1979), "A threshold selection method from gray-level histograms", eq. 18-19:
    over the histogram of ``bins`` equal bins spanning [min, max], choose the level k* that
    maximizes the between-class variance (eq. 18, written with both classes' means)

        sigma_B^2(k) = omega_0(k) omega_1(k) (mu_0(k) - mu_1(k))^2,

    omega the class weights and mu the class means of the levels 0..k and k+1..L-1; the
    threshold is the centre of bin k*. The bins are those of ``numpy.histogram`` and the
    result that of ``skimage.filters.threshold_otsu`` (float images). All images at once:
    one ``scatter_add_`` histogram and cumulative sums.
    """
    x = images.reshape(*images.shape[:-2], -1).to(torch.float64)
    lo, hi = x.amin(-1, keepdim=True), x.amax(-1, keepdim=True)
    width = hi - lo
    span = torch.where(width > 0, width, torch.ones_like(width))
    edges = lo + span / bins * torch.arange(bins + 1, dtype=torch.float64)
    edges[..., -1:] = torch.where(width > 0, hi, edges[..., -1:])
    idx = ((x - lo) / span * bins).long().clamp_(0, bins - 1)
    idx -= (x < edges.gather(-1, idx)).long()  # numpy.histogram's corrections at the bin edges
    idx += ((x >= edges.gather(-1, idx + 1)) & (idx != bins - 1)).long()
    counts = torch.zeros(*x.shape[:-1], bins, dtype=torch.float64).scatter_add_(-1, idx, torch.ones_like(x))
    centers = (edges[..., :-1] + edges[..., 1:]) / 2
    mass = counts * centers
    omega0, omega1 = counts.cumsum(-1), counts.flip(-1).cumsum(-1).flip(-1)
    mu0 = mass.cumsum(-1) / omega0
    mu1 = mass.flip(-1).cumsum(-1).flip(-1) / omega1
    sigma_b = omega0[..., :-1] * omega1[..., 1:] * (mu0[..., :-1] - mu1[..., 1:]) ** 2
    threshold = centers.gather(-1, sigma_b.argmax(-1, keepdim=True))
    return torch.where(width > 0, threshold, lo)[..., 0]


# ---------------------------------------------------------------------------- MNIST format
def is_mnist_format(images: torch.Tensor, size: tuple[int, int] = (FIELD, FIELD)) -> torch.Tensor:
    """Which images (n, H, W) in [0, 1] already look like MNIST digits: the model's size, a
    dark field (median <= 0.1) and border (mean of the outermost pixels <= 0.1), and the
    centre of mass within a pixel of the field's centre (all 70,000 MNIST digits pass)."""
    n = images.shape[0]
    if tuple(images.shape[-2:]) != tuple(size):
        return torch.zeros(n, dtype=torch.bool)
    x = images.to(torch.float32)
    border = torch.cat([x[:, 0], x[:, -1], x[:, 1:-1, 0], x[:, 1:-1, -1]], 1)
    mass = x.sum((1, 2))
    rows = (x.sum(2) * torch.arange(size[0])).sum(1) / mass
    cols = (x.sum(1) * torch.arange(size[1])).sum(1) / mass
    centred = ((rows - size[0] / 2).abs() <= 1) & ((cols - size[1] / 2).abs() <= 1) | (mass == 0)
    return (x.reshape(n, -1).median(1).values <= 0.1) & (border.mean(1) <= 0.1) & centred


def center_of_mass(image: torch.Tensor) -> tuple[float, float]:
    """(row, column) of the centre of mass of a non-negative (H, W) image, in pixel indices."""
    mass = image.sum()
    rows = (image.sum(1) * torch.arange(image.shape[0], dtype=image.dtype)).sum() / mass
    cols = (image.sum(0) * torch.arange(image.shape[1], dtype=image.dtype)).sum() / mass
    return float(rows), float(cols)


def ink(gray: torch.Tensor) -> torch.Tensor:
    """The ink of a grey-level picture (H, W) in [0, 1] as bright strokes on 0: Otsu's
    threshold, inversion when the paper is light, the paper's plane of uneven light and its
    noise removed, the ink level mapped to 1 (see the module docstring)."""
    g = gray.to(torch.float32)
    t = float(otsu_threshold(g))
    if float(g.amax() - g.amin()) < 1e-3:
        raise DataError("the picture is uniform: there is no digit to read")
    border = torch.cat([g[0], g[-1], g[1:-1, 0], g[1:-1, -1]])
    if float(border.median()) > t:  # light paper: dark ink becomes bright
        g, t = 1.0 - g, 1.0 - t
    rows, cols = g.shape
    r = torch.linspace(-1, 1, rows).view(-1, 1).expand(rows, cols)
    c = torch.linspace(-1, 1, cols).view(1, -1).expand(rows, cols)
    paper = g <= t
    design = torch.stack([torch.ones_like(g[paper]), r[paper], c[paper]], 1)
    coef = torch.linalg.lstsq(design.double(), g[paper].double().unsqueeze(1)).solution[:, 0].float()
    d = g - (coef[0] + coef[1] * r + coef[2] * c)
    paper_d = d[paper]
    noise = 1.4826 * float((paper_d - paper_d.median()).abs().median())
    level = float(torch.quantile(d[~paper], 0.9))
    floor = 3 * noise if level > 6 * noise else 0.0
    return ((d - floor) / max(level - floor, 1e-6)).clamp_(0, 1)


def _components(mask: torch.Tensor) -> torch.Tensor:
    """Labels of the 8-connected components of a boolean (H, W) mask (0 off the mask): each
    pixel takes the largest index in its component, spread by repeated 3x3 max pooling."""
    on = mask.to(torch.float32)[None, None]
    labels = torch.arange(1, mask.numel() + 1, dtype=torch.float32).view_as(on) * on
    while True:
        previous = labels
        for _ in range(8):
            labels = F.max_pool2d(labels, 3, 1, 1) * on
        if torch.equal(labels, previous):
            return labels[0, 0].long()


def without_specks(v: torch.Tensor, fraction: float = SPECK, grid: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """``v`` with the specks erased, and its bilevel image {v > 1/2} without them.

    Components are found on a grid of at most ``grid`` cells a side (each cell on if any
    pixel in it is: strokes broken by less than a cell stay one component); components
    with fewer cells than ``fraction`` of the largest are specks.
    """
    bilevel = v > 0.5
    f = max(1, math.ceil(max(v.shape) / grid))
    cells = F.max_pool2d(bilevel.to(torch.float32)[None, None], f, f, ceil_mode=True)[0, 0] > 0
    labels = _components(cells)
    area = torch.bincount(labels.flatten())
    area[0] = 0
    keep = (area >= fraction * area.max())[labels] & cells
    near = F.max_pool2d(keep.to(torch.float32)[None, None], 3, 1, 1)[0, 0] > 0  # the strokes' soft edges
    expand = lambda m: m.repeat_interleave(f, 0).repeat_interleave(f, 1)[: v.shape[0], : v.shape[1]]
    return v * expand(near), bilevel & expand(keep)


def normalize(v: torch.Tensor, size: tuple[int, int] = (FIELD, FIELD)) -> torch.Tensor:
    """MNIST's normalization of an ink image ``v`` (H, W) (bright strokes on 0): the bounding
    box of its bilevel image, resized with anti-aliasing so its longer side is 20 pixels
    (preserving the aspect ratio), pasted into a 28x28 field with its centre of mass at the
    whole pixel nearest (14, 14). Other sizes scale the box (20/28 of the field)."""
    v, bilevel = without_specks(v)
    rows_on, cols_on = bilevel.any(1).nonzero()[:, 0], bilevel.any(0).nonzero()[:, 0]
    if len(rows_on) == 0:
        raise DataError("no digit found in the picture (no ink above half of the ink level)")
    r0, r1, c0, c1 = int(rows_on[0]), int(rows_on[-1]) + 1, int(cols_on[0]), int(cols_on[-1]) + 1
    box = max(1, round(BOX * min(size) / FIELD))
    scale = box / max(r1 - r0, c1 - c0)
    h, w = max(1, round((r1 - r0) * scale)), max(1, round((c1 - c0) * scale))
    digit = F.interpolate(v[None, None, r0:r1, c0:c1], size=(h, w), mode="bilinear", antialias=True,
                          align_corners=False)[0, 0].clamp_(0, 1)
    cy, cx = center_of_mass(digit) if float(digit.sum()) > 0 else ((h - 1) / 2, (w - 1) / 2)
    top = min(max(round(size[0] / 2 - cy), 0), size[0] - h)
    left = min(max(round(size[1] / 2 - cx), 0), size[1] - w)
    out = torch.zeros(size)
    out[top : top + h, left : left + w] = digit
    return out


def to_mnist(gray: torch.Tensor, size: tuple[int, int] = (FIELD, FIELD)) -> torch.Tensor:
    """A grey-level picture (H, W) in [0, 1] of one digit as an MNIST digit (rows, cols) in [0, 1]."""
    if gray.ndim != 2:
        raise ShapeError(f"to_mnist takes one grey-level picture (H, W), got shape {tuple(gray.shape)}")
    if max(gray.shape) > WORKING_SIZE:
        s = WORKING_SIZE / max(gray.shape)
        shape = (max(1, round(gray.shape[0] * s)), max(1, round(gray.shape[1] * s)))
        gray = F.interpolate(gray[None, None].float(), size=shape, mode="bilinear", antialias=True)[0, 0]
    return normalize(ink(gray), size)


def prepare(images: torch.Tensor, size: tuple[int, int] = (FIELD, FIELD), mode: str = "auto") -> torch.Tensor:
    """Pictures (n, H, W) in [0, 1] as the model's input (n, rows, cols).

    mode ``auto``: the ones already in MNIST format (:func:`is_mnist_format`) as they are,
    the others through :func:`to_mnist`; ``preprocess``: all through :func:`to_mnist`;
    ``as-is``: none (they must have the model's size).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "as-is":
        if tuple(images.shape[-2:]) != tuple(size):
            raise DataError(f"a {images.shape[-2]}x{images.shape[-1]} picture is not in the model's "
                            f"{size[0]}x{size[1]} format; drop --as-is to have it normalized like MNIST")
        return images.to(torch.float32)
    ready = is_mnist_format(images, size) if mode == "auto" else torch.zeros(len(images), dtype=torch.bool)
    if bool(ready.all()):
        return images.to(torch.float32)
    out = torch.empty(len(images), *size)
    if bool(ready.any()):
        out[ready] = images[ready].to(torch.float32)
    for i in (~ready).nonzero()[:, 0].tolist():  # one picture at a time: each has its own box
        out[i] = to_mnist(images[i], size)
    return out


# ------------------------------------------------------------------------------ reading files
_PILLOW_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, TypeError,
                  ZeroDivisionError, struct.error, zlib.error)


def load_picture(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """A picture file as grey levels (H, W) in [0, 1], upright (EXIF orientation), at most
    ``WORKING_SIZE`` pixels a side; a file Pillow cannot decode, or one of more than
    ``max_pixels`` pixels, raises DataError."""
    from PIL import Image, ImageOps

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked below
            with Image.open(path) as im:
                cols, rows = im.size
                if cols * rows > max_pixels:
                    raise DataError(f"{path} is {cols}x{rows} = {cols * rows / 1e6:.0f} megapixels, over the limit of "
                                    f"{max_pixels / 1e6:.0f} megapixels; scale it down (a digit needs far less)")
                if im.format == "JPEG":  # decode at a reduced scale straight from the DCT
                    im.draft("L" if im.mode in ("L", "RGB", "CMYK", "YCbCr") else None, (WORKING_SIZE, WORKING_SIZE))
                im = ImageOps.exif_transpose(im)
                return _gray(im, path)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataNotFound(f"{path} does not exist") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a folder, not a picture") from None
    except Image.DecompressionBombError:  # Pillow's own limit, above ours
        raise DataError(f"{path} is over the limit of {max_pixels / 1e6:.0f} megapixels; scale it down "
                        "(a digit needs far less)") from None
    except Image.UnidentifiedImageError:
        raise DataError(f"{path} is not a picture Pillow can read; give a PNG/JPEG or an .npy array") from None
    except _PILLOW_ERRORS as exc:
        raise DataError(f"{path} is truncated or damaged ({type(exc).__name__}: {exc}); re-export the picture") from None


def _gray(im, path: str | os.PathLike) -> torch.Tensor:
    """A loaded Pillow image as grey levels in [0, 1], reduced to ``WORKING_SIZE``."""
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):  # 16/32-bit: stretch to [0, 1]
        a = np.asarray(im, dtype=np.float64)
        if not np.isfinite(a).all():
            raise DataError(f"{path} holds NaN or infinite values")
        a = (a - a.min()) / max(float(a.max() - a.min()), 1e-12)
        g = torch.from_numpy(a.astype(np.float32))
    elif "A" in im.getbands() or "transparency" in im.info:
        la = np.asarray(im.convert("RGBA").convert("LA"), dtype=np.float32) / 255.0
        luma, alpha = la[..., 0], la[..., 1]
        # a drawing on a transparent sheet: flatten it onto the shade that contrasts with it
        drawn = float((luma * alpha).sum() / max(float(alpha.sum()), 1e-6))
        sheet = 1.0 if drawn < 0.5 else 0.0
        g = torch.from_numpy(luma * alpha + sheet * (1 - alpha))
    else:
        g = torch.from_numpy(np.asarray(im.convert("L"), dtype=np.float32) / 255.0)
    if max(g.shape) > WORKING_SIZE:
        s = WORKING_SIZE / max(g.shape)
        shape = (max(1, round(g.shape[0] * s)), max(1, round(g.shape[1] * s)))
        g = F.interpolate(g[None, None], size=shape, mode="bilinear", antialias=True)[0, 0]
    if g.numel() == 0:
        raise DataError(f"{path} has no pixels")
    return g.contiguous()
