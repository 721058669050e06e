"""NumPy oracles for descend.data.augment, written pixel by pixel.

shift: NNDL ch. 6 / expand_mnist.py moves an image by whole pixels and fills the
uncovered border with zeros: out[i, j] = img[i - dy, j - dx] if that pixel exists else 0.
"""

import numpy as np


def shift(img: np.ndarray, dy: int, dx: int) -> np.ndarray:
    rows, cols = img.shape[-2:]
    out = np.zeros_like(img)
    for i in range(rows):
        for j in range(cols):
            si, sj = i - dy, j - dx
            if 0 <= si < rows and 0 <= sj < cols:
                out[..., i, j] = img[..., si, sj]
    return out


def nielsen_expand(images: np.ndarray) -> np.ndarray:
    """expand_mnist.py without the final shuffle: original, then np.roll by +-1 along each
    axis with the wrapped row/column zeroed (Nielsen's exact construction)."""
    out = []
    for image in images:  # (28, 28)
        out.append(image)
        for d, axis, index_position, index in [(1, 0, "first", 0), (-1, 0, "first", 27),
                                               (1, 1, "last", 0), (-1, 1, "last", 27)]:
            new_img = np.roll(image, d, axis)
            if index_position == "first":
                new_img[index, :] = np.zeros(28)
            else:
                new_img[:, index] = np.zeros(28)
            out.append(new_img)
    return np.stack(out)


# ---------------------------------------------------------------- descend.data.transforms
def pad(img: np.ndarray, p: int) -> np.ndarray:
    """Zero padding of the last two axes by p pixels on every side."""
    rows, cols = img.shape[-2:]
    out = np.zeros(img.shape[:-2] + (rows + 2 * p, cols + 2 * p), dtype=img.dtype)
    for i in range(rows):
        for j in range(cols):
            out[..., i + p, j + p] = img[..., i, j]
    return out


def crop(img: np.ndarray, top: int, left: int, h: int, w: int) -> np.ndarray:
    out = np.zeros(img.shape[:-2] + (h, w), dtype=img.dtype)
    for i in range(h):
        for j in range(w):
            out[..., i, j] = img[..., top + i, left + j]
    return out


def mirror(img: np.ndarray) -> np.ndarray:
    cols = img.shape[-1]
    out = np.zeros_like(img)
    for j in range(cols):
        out[..., j] = img[..., cols - 1 - j]
    return out


def _sample_bilinear(img, y, x):
    """Value of img (c, rows, cols) at real pixel position (y, x); zero outside."""
    rows, cols = img.shape[-2:]
    y0, x0 = int(np.floor(y)), int(np.floor(x))
    value = np.zeros(img.shape[0])
    for dy in (0, 1):
        for dx in (0, 1):
            yy, xx = y0 + dy, x0 + dx
            weight = (1 - abs(y - yy)) * (1 - abs(x - xx))
            if 0 <= yy < rows and 0 <= xx < cols:
                value += weight * img[:, yy, xx]
    return value


def affine(img: np.ndarray, matrix: np.ndarray, offset: np.ndarray, field: np.ndarray | None = None) -> np.ndarray:
    """Output pixel p (pixel units from the image centre, x right, y down) takes the input
    value at matrix @ p + offset (+ field[:, i, j], (x, y) in pixels, when given), bilinearly
    interpolated (img: (c, rows, cols))."""
    c, rows, cols = img.shape
    out = np.zeros_like(img)
    for i in range(rows):
        for j in range(cols):
            p = np.array([j + 0.5 - cols / 2, i + 0.5 - rows / 2])
            q = matrix @ p + offset
            if field is not None:
                q = q + field[:, i, j]
            out[:, i, j] = _sample_bilinear(img, q[1] + rows / 2 - 0.5, q[0] + cols / 2 - 0.5)
    return out


def displace(img: np.ndarray, field: np.ndarray) -> np.ndarray:
    """Output pixel (i, j) takes the input at (i + field[1, i, j], j + field[0, i, j]), bilinearly."""
    c, rows, cols = img.shape
    out = np.zeros_like(img)
    for i in range(rows):
        for j in range(cols):
            out[:, i, j] = _sample_bilinear(img, i + field[1, i, j], j + field[0, i, j])
    return out
