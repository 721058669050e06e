"""How well ``descend predict`` reads photos of digits: accuracy on MNIST digits rendered as
phone pictures beside the same model's accuracy on the same digits in MNIST format.

Each digit (28x28, from MNIST) is rendered with fixed ranges and a fixed seed:

  ink        grey level 10-70, on paper of grey level 170-245 (dark ink on light paper)
  tint       half of the pictures in colour: ink and paper each shifted by -25..25 per RGB channel
  size       the digit scaled 2-7x, placed anywhere on a page 1.3-2.5x its size (each side)
  light      a brightness gradient of 0-25 levels across the page, in a random direction
  blur       Gaussian, sigma 0-1.2 pixels (focus)
  noise      Gaussian, sigma 6 levels (sensor)
  file       JPEG quality 85 or PNG, one each in turn

and the folder of files is classified by ``descend.predict.predict_files`` (what ``descend
predict RUN_DIR FOLDER`` does); the digits themselves, as one .npy array, go through the
same function (recognised as MNIST format and used as they are).

Develop on renders of validation digits (the last 10,000 of the 60,000 training images,
Nielsen's validation split, the default); score the test digits once (``--split test``):

    python benchmarks/photos.py --run-dir runs/default-seed0
    python benchmarks/photos.py --run-dir runs/default-seed0 --split test --out bench-results/photos.json
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from descend.data.mnist import load_idx_arrays
from descend.data.transforms import gaussian_kernel1d
from descend.io import atomic_write_json
from descend.predict import predict_files


def blur(page: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of an (rows, cols, 3) page, edges replicated: two 1D convolutions."""
    k = gaussian_kernel1d(sigma)
    r = (len(k) - 1) // 2
    x = torch.from_numpy(page.astype(np.float32)).permute(2, 0, 1)[:, None]  # (3, 1, rows, cols)
    x = F.conv2d(F.pad(x, (r, r, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    return x[:, 0].permute(1, 2, 0).numpy()


def render(digit: np.ndarray, rng: np.random.Generator, index: int) -> tuple[Image.Image, str, dict]:
    """One MNIST digit (28x28 uint8, white on black) as a phone-like picture, its file format and parameters."""
    ink, paper = rng.uniform(10, 70), rng.uniform(170, 245)
    tinted = index % 2 == 1
    ink_rgb = ink + (rng.uniform(-25, 25, 3) if tinted else np.zeros(3))
    paper_rgb = paper + (rng.uniform(-25, 25, 3) if tinted else np.zeros(3))
    scale = rng.uniform(2, 7)
    side = max(2, round(28 * scale))
    alpha = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BILINEAR), dtype=np.float64) / 255
    rows, cols = (round(side * f) for f in rng.uniform(1.3, 2.5, 2))
    top, left = rng.integers(0, rows - side + 1), rng.integers(0, cols - side + 1)
    page_alpha = np.zeros((rows, cols))
    page_alpha[top : top + side, left : left + side] = alpha
    page = paper_rgb + (ink_rgb - paper_rgb) * page_alpha[..., None]  # (rows, cols, 3)
    sigma = rng.uniform(0, 1.2)
    if sigma > 0.05:
        page = blur(page, sigma)
    angle, amount = rng.uniform(0, 2 * np.pi), rng.uniform(0, 25)
    r, c = np.meshgrid(np.linspace(-0.5, 0.5, rows), np.linspace(-0.5, 0.5, cols), indexing="ij")
    page = page + (amount * (np.cos(angle) * r + np.sin(angle) * c))[..., None]
    page = page + rng.normal(0, 6, page.shape)
    fmt = "JPEG" if index % 4 < 2 else "PNG"  # both formats for colour and grey pictures
    pixels = np.clip(np.rint(page), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels if tinted else pixels[..., 0])
    return image, fmt, {"ink": ink, "paper": paper, "scale": scale, "blur": sigma, "gradient": amount}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", required=True, help="a run of descend train (the model to score)")
    parser.add_argument("--split", choices=("val", "test"), default="val",
                        help="val: renders of validation digits (develop); test: of test digits (score once)")
    parser.add_argument("--n", type=int, default=1000, help="digits to render (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", help="folder holding mnist/")
    parser.add_argument("--keep", metavar="DIR", help="keep the rendered pictures in DIR")
    parser.add_argument("--out", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args()

    x_train, y_train, x_test, y_test = load_idx_arrays("mnist", args.data_dir, download=False)
    x, y = (x_train[-10_000:], y_train[-10_000:]) if args.split == "val" else (x_test, y_test)
    pick = np.random.default_rng(args.seed).permutation(len(x))[: args.n]
    digits, labels = x.numpy()[pick], y.numpy()[pick]

    rng = np.random.default_rng(args.seed + 1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        formats = []
        for i, digit in enumerate(digits):
            image, fmt, _ = render(digit, rng, i)
            image.save(folder / f"{i:05d}.{'jpg' if fmt == 'JPEG' else 'png'}", fmt, **({"quality": 85} if fmt == "JPEG" else {}))
            formats.append(fmt)
        np.save(folder / "mnist.npy", digits)
        start = time.perf_counter()
        photo_rows = predict_files(Path(args.run_dir), sorted(folder.glob("0*")))
        seconds = time.perf_counter() - start
        mnist_rows = predict_files(Path(args.run_dir), [folder / "mnist.npy"])

    photo_pred = np.array([int(r["class"]) for r in photo_rows])
    mnist_pred = np.array([int(r["class"]) for r in mnist_rows])
    formats = np.array(formats)
    tinted = np.arange(len(digits)) % 2 == 1
    groups = {
        "all": np.ones(len(digits), bool),
        "JPEG": formats == "JPEG",
        "PNG": formats == "PNG",
        "grey": ~tinted,
        "colour": tinted,
    }
    result = {
        "split": args.split,
        "n": int(len(digits)),
        "seed": args.seed,
        "run_dir": str(args.run_dir),
        "mnist_accuracy": float((mnist_pred == labels).mean()),
        "photo_accuracy": float((photo_pred == labels).mean()),
        "photo_accuracy_by_group": {k: float((photo_pred[m] == labels[m]).mean()) for k, m in groups.items()},
        "photo_wrong_where_mnist_right": int(((photo_pred != labels) & (mnist_pred == labels)).sum()),
        "photo_right_where_mnist_wrong": int(((photo_pred == labels) & (mnist_pred != labels)).sum()),
        "seconds_per_photo": seconds / len(digits),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    print(f"{args.n} {'validation' if args.split == 'val' else 'test'} digits, model {args.run_dir}")
    print(f"{'input':28s} {'accuracy':>9s}")
    print(f"{'MNIST format (28x28 .npy)':28s} {100 * result['mnist_accuracy']:8.2f}%")
    for name, acc in result["photo_accuracy_by_group"].items():
        print(f"{'photos, ' + name:28s} {100 * acc:8.2f}%")
    print(f"gap (MNIST - photos): {100 * (result['mnist_accuracy'] - result['photo_accuracy']):.2f} points; "
          f"{result['photo_wrong_where_mnist_right']} photos wrong whose digit is right in MNIST format")
    if args.out:
        atomic_write_json(args.out, result)


if __name__ == "__main__":
    main()
