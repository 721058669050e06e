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
