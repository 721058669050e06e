"""``descend predict``: classify pictures and arrays of digits with a trained run.

Inputs (files, folders and glob patterns, see :func:`expand_inputs`):

* pictures (PNG, JPEG, anything Pillow opens): read upright and in grey levels, then made
  into MNIST digits as MNIST itself was made (:mod:`descend.data.photo`: dark ink on light
  paper inverted, uneven light and specks removed, the digit's box normalized to 20x20 and
  centred by its centre of mass in 28x28);
* ``.npy`` arrays: one picture (rows, cols), or many (n, rows, cols) / (n, channels, rows,
  cols); uint8 (0-255) or float in [0, 1]. Read memory-mapped with ``allow_pickle=False``
  and predicted ``batch_size`` pictures at a time, so an array larger than memory works.

Pictures already in MNIST format (the model's size, dark background) are used as they are
(``mode="auto"``); ``mode="as-is"`` uses every input unchanged, ``mode="preprocess"``
normalizes every one. Each row of the result holds the ``top_k`` classes by probability
(the softmax, averaged over an ensemble's members).
"""

from __future__ import annotations

import csv
import glob
import io
import tokenize
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from descend.data import photo
from descend.errors import CheckpointError, ConfigError, DataError, DataNotFound

PICTURES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm")
FORMATS = ("text", "csv", "json")


# --------------------------------------------------------------------------------- inputs
def expand_inputs(items: list[str | Path]) -> list[Path]:
    """Files, folders (their pictures and .npy files, sorted) and glob patterns as a list of files."""
    files: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in (*PICTURES, ".npy"))
            if not found:
                raise DataNotFound(f"{path} holds no pictures or .npy files ({', '.join(PICTURES)}, .npy)")
            files += found
        elif path.exists() or not any(ch in str(item) for ch in "*?["):
            if not path.exists():
                raise DataNotFound(f"{path} does not exist")
            files.append(path)
        else:
            found = sorted(Path(p) for p in glob.glob(str(item), recursive=True) if Path(p).is_file())
            if not found:
                raise DataNotFound(f"no file matches {item}")
            files += found
    return files


def open_array(path: Path) -> np.ndarray:
    """An .npy file, memory-mapped (read-only), never unpickled."""
    try:
        a = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise DataNotFound(f"{path} does not exist") from None
    except (OSError, ValueError, EOFError, OverflowError, SyntaxError, TypeError, tokenize.TokenError) as exc:
        raise DataError(f"{path} is not a readable .npy array of numbers ({type(exc).__name__}: {exc})") from None
    if not isinstance(a, np.ndarray):  # an .npz archive
        a.close()
        raise DataError(f"{path} is an .npz archive; save one array with numpy.save")
    if a.dtype.kind not in "buif":
        raise DataError(f"{path} holds {a.dtype}; use uint8 (0-255) or float pixels in [0, 1]")
    return a


def as_pictures(a: np.ndarray, path: Path, channels: int) -> tuple[np.ndarray, bool]:
    """The array as (n, rows, cols) pictures, or (n, channels, rows, cols) for a
    multi-channel model; and whether it is a batch (n given) or one picture."""
    if a.ndim == 2:
        return a[None], False
    if a.ndim == 3 and channels > 1 and a.shape[0] == channels:
        return a[None], False
    if a.ndim == 3:
        return a, True
    if a.ndim == 4 and a.shape[1] == 1:
        return a[:, 0], True
    if a.ndim == 4 and a.shape[1] == channels:
        return a, True
    raise DataError(f"{path} has shape {a.shape}; give one picture (rows, cols) or a batch (n, rows, cols) "
                    f"or (n, {channels}, rows, cols)")


def to_float(a: np.ndarray, where: str) -> torch.Tensor:
    """uint8/integer pixels 0-255, float pixels in [0, 1] or booleans as float32 in [0, 1]."""
    if a.dtype.kind == "b":
        return torch.from_numpy(np.array(a, dtype=np.float32))
    if a.dtype.kind == "f":
        x = torch.from_numpy(np.array(a, dtype=np.float32))
        if x.numel() and not bool(torch.isfinite(x).all()):
            raise DataError(f"{where} holds NaN or infinite values")
        if x.numel() and (float(x.min()) < 0 or float(x.max()) > 1):
            raise DataError(f"{where} holds floats in [{float(x.min()):g}, {float(x.max()):g}]; "
                            "scale the pixels to [0, 1] (or save them as uint8, 0-255)")
        return x
    x = torch.from_numpy(np.asarray(a, dtype=np.int64).copy())
    if x.numel() and (int(x.min()) < 0 or int(x.max()) > 255):
        raise DataError(f"{where} holds integers in [{int(x.min())}, {int(x.max())}]; pixels must be 0-255")
    return x.to(torch.float32) / 255.0


def batches(files: list[Path], shape: tuple[int, ...], mode: str = "auto",
            batch_size: int = 1000) -> Iterator[tuple[list[str], torch.Tensor]]:
    """(names, inputs (b, *shape)) for the files, at most ``batch_size`` pictures at a time."""
    channels, size = shape[0], tuple(shape[-2:])

    def model_input(x: torch.Tensor) -> torch.Tensor:  # (b, rows, cols) -> (b, *shape)
        return x[:, None].expand(-1, channels, -1, -1) if x.ndim == 3 else x

    names: list[str] = []
    pending: list[torch.Tensor] = []
    for path in files:
        if path.suffix.lower() != ".npy":
            gray = photo.load_picture(path)
            try:
                pending.append(photo.prepare(gray[None], size, mode)[0])
            except DataError as exc:
                raise DataError(f"{path}: {exc}") from None
            names.append(str(path))
            if len(pending) == batch_size:
                yield names, model_input(torch.stack(pending))
                names, pending = [], []
            continue
        if pending:  # keep the order of the files
            yield names, model_input(torch.stack(pending))
            names, pending = [], []
        a, many = as_pictures(open_array(path), path, channels)
        if a.ndim == 4 and channels > 1:
            if tuple(a.shape[1:]) != tuple(shape):
                raise DataError(f"{path} has pictures of shape {a.shape[1:]}; the model takes {tuple(shape)}")
        for start in range(0, len(a), batch_size):
            where = f"{path}[{start}:{start + batch_size}]"
            try:
                x = to_float(a[start : start + batch_size], where)
            except (OSError, ValueError) as exc:  # a memory map cut short under us
                if isinstance(exc, DataError):
                    raise
                raise DataError(f"{where} cannot be read ({exc})") from None
            if x.ndim == 3:
                try:
                    x = photo.prepare(x, size, mode)
                except DataError as exc:
                    raise DataError(f"{where}: {exc}") from None
            yield [f"{path}[{i}]" if many else str(path) for i in range(start, start + len(x))], model_input(x)
    if pending:
        yield names, model_input(torch.stack(pending))


# --------------------------------------------------------------------------------- models
def load_models(run_dir: Path, weights: str = "last") -> tuple[list[torch.nn.Module], dict[str, Any]]:
    """The networks of a run (one, or an ensemble's members) with their ``weights`` (``last``:
    model.safetensors, the final weights; ``best``: best.safetensors) and the data description."""
    from descend import runs

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} is not a run directory (made by descend train)")
    models, meta = [], {}
    for d in runs.member_dirs(run_dir) or [run_dir]:
        model, meta = runs.load_model(d, weights)
        models.append(model.eval())
    return models, meta


# ----------------------------------------------------------------------------- prediction
def predict_files(run_dir: Path, files: list[Path], top_k: int = 1, weights: str = "last", mode: str = "auto",
                  batch_size: int = 1000) -> list[dict[str, Any]]:
    """For each picture in ``files``: the ``top_k`` classes and their probabilities.

    Each row: ``file``, ``label``, ``class`` and ``probability`` of the most probable class
    and, when ``top_k`` > 1, ``top_k``: a list of ``{label, class, probability}``, most
    probable first.
    """
    if mode not in photo.MODES:
        raise ConfigError(f"mode must be one of {', '.join(photo.MODES)}, got {mode!r}")
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    models, meta = load_models(run_dir, weights)
    shape, classes = tuple(meta["input_shape"]), meta.get("classes")
    if not 1 <= top_k <= meta["num_classes"]:
        raise ConfigError(f"--top-k {top_k}: choose 1 to {meta['num_classes']} (the number of classes)")
    rows = []
    for names, x in batches(files, shape, mode, batch_size):
        with torch.inference_mode():
            probs = torch.stack([model(x) for model in models]).softmax(-1).mean(0)
        p, label = probs.topk(top_k, dim=1)
        for name, pi, li in zip(names, p.tolist(), label.tolist()):
            top = [{"label": classes[c] if classes else str(c), "class": c, "probability": q} for c, q in zip(li, pi)]
            row = {"file": name, **top[0]}
            if top_k > 1:
                row["top_k"] = top
            rows.append(row)
    return rows


# --------------------------------------------------------------------------------- output
def to_text(rows: list[dict[str, Any]]) -> str:
    return "".join(f"{row['file']}: " + ", ".join(f"{t['label']} ({100 * t['probability']:.1f}%)"
                                                   for t in row.get("top_k", [row])) + "\n" for row in rows)


def to_csv(rows: list[dict[str, Any]]) -> str:
    """One line per picture: file, label, class, probability, then label_2, probability_2, ..."""
    k = max((len(row.get("top_k", [row])) for row in rows), default=1)
    header = ["file", "label", "class", "probability"]
    for i in range(2, k + 1):
        header += [f"label_{i}", f"class_{i}", f"probability_{i}"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        top = row.get("top_k", [row])
        writer.writerow([row["file"], *(v for t in top for v in (t["label"], t["class"], repr(t["probability"])))])
    return out.getvalue()


def format_rows(rows: list[dict[str, Any]], fmt: str) -> str:
    import json

    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    if fmt == "csv":
        return to_csv(rows)
    if fmt == "text":
        return to_text(rows)
    raise ConfigError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
