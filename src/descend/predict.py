"""``descend predict``: classify image files with a trained run.

Accepted files:

* PNG / JPEG (anything Pillow opens): converted to grayscale, resized to the training
  image size, scaled to [0, 1]. MNIST digits are white on black; a picture that is
  mostly light (a dark digit on white paper) is inverted to match.
* ``.npy``: one image (rows, cols) or a batch (n, rows, cols) / (n, channels, rows, cols),
  uint8 (0-255) or float in [0, 1]; read with ``allow_pickle=False``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from descend.errors import DataError, DataNotFound


def load_image(path: Path, size: tuple[int, int]) -> torch.Tensor:
    """One picture as a float tensor (1, 1, rows, cols) in [0, 1], white digit on black."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("L").resize((size[1], size[0]), Image.Resampling.LANCZOS)
            a = np.asarray(im, dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise DataNotFound(f"{path} does not exist") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path} is not an image Pillow can read ({exc}); give a PNG/JPEG or an .npy array") from None
    if a.mean() > 0.5:  # dark digit on a light background
        a = 1.0 - a
    return torch.from_numpy(a)[None, None]


def load_array(path: Path, shape: tuple[int, ...]) -> torch.Tensor:
    """Images from an .npy file as float (n, channels, rows, cols)."""
    try:
        a = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataNotFound(f"{path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} is not a readable .npy array of numbers ({exc})") from None
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    elif a.dtype.kind == "f":
        a = a.astype(np.float32)
    else:
        raise DataError(f"{path} holds {a.dtype}; use uint8 (0-255) or float pixels in [0, 1]")
    t = torch.from_numpy(a)
    if t.ndim == 2:
        t = t[None, None]
    elif t.ndim == 3:
        t = t[:, None] if shape[0] == 1 or t.shape[0] != shape[0] else t[None]
    if t.ndim != 4 or tuple(t.shape[1:]) != tuple(shape):
        raise DataError(f"{path} has shape {a.shape}; the model expects images of shape {tuple(shape)} "
                        f"(or a batch of them)")
    return t


def predict_files(run_dir: Path, files: list[Path]) -> list[dict[str, Any]]:
    """The predicted class and its probability for each image in ``files``."""
    from descend import runs
    from descend.train.ensemble import average_probabilities

    dirs = runs.member_dirs(run_dir) or [run_dir]
    models = [runs.load_model(d) for d in dirs]
    meta = models[0][1]
    shape, classes = tuple(meta["input_shape"]), meta["classes"]
    rows = []
    for path in files:
        if path.suffix.lower() == ".npy":
            x = load_array(path, shape)
        else:
            x = load_image(path, shape[-2:])
            if shape[0] != 1:
                x = x.expand(-1, shape[0], -1, -1)
        with torch.no_grad():
            probs = average_probabilities(torch.stack([model(x) for model, _ in models]))
        p, label = probs.max(dim=1)
        for i in range(len(x)):
            name = f"{path}[{i}]" if len(x) > 1 else str(path)
            cls = int(label[i])
            rows.append({"file": name, "label": classes[cls] if classes else str(cls),
                         "class": cls, "probability": float(p[i])})
    return rows
