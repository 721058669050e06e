"""Speed of descend's batched augmentations (CS189; Deep Learning sec. 7.4): cost per training batch, one run.

For each augmentation of ``descend.data.augment`` / ``descend.data.transforms`` on a
training batch (128 MNIST images 1x28x28, or 128 CIFAR-size images 3x32x32):

  ms           time to augment the batch (batched: one gather / one grid_sample)
  loop ms      the same with a per-image Python loop of plain PyTorch calls (what one
               writes with per-sample transforms), and loop/ours, the speed-up
  overhead     augmentation time / time of one training step (forward + backward + SGD
               step) of the reference network on the same batch: Nielsen's final
               chapter-6 network (conv 20-40, FC 1000-1000, batch norm, dropout;
               ``descend train --config nielsen``) for MNIST, the same architecture with 3 input
               channels for CIFAR size. Goal: <= 15% (augmentation must not slow
               training by more than that).
  vs MLP       the same ratio against a small MLP (784-100-10 or 3072-100-10), whose
               step is so cheap that distortions with interpolation cost more than it.

Timing: contenders run in interleaved rounds; the minimum over rounds of the mean time
per call is kept (robust to other processes on a shared machine).

    python benchmarks/augmentation.py --quick
    python benchmarks/augmentation.py --out bench-results/augmentation.json
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from descend.data import RandomShift
from descend.data.transforms import (
    Compose,
    ElasticDistortion,
    PCAColorJitter,
    RandomAffine,
    RandomCrop,
    RandomFlip,
    gaussian_kernel1d,
)
from descend.io import atomic_write_json
from descend.models import NielsenNet


def timed(contenders: dict, rounds: int, reps: int) -> dict[str, float]:
    """Min over ``rounds`` of the mean seconds per call, contenders interleaved per round."""
    best = {name: float("inf") for name in contenders}
    for fn in contenders.values():  # warm-up
        fn()
    for _ in range(rounds):
        for name, fn in contenders.items():
            start = time.perf_counter()
            for _ in range(reps):
                fn()
            best[name] = min(best[name], (time.perf_counter() - start) / reps)
    return best


# ------------------------------------------------------------------ per-image reference loops
def loop_shift(x, s, g):
    out = []
    for img in x:
        dy, dx = torch.randint(-s, s + 1, (2,), generator=g).tolist()
        padded = F.pad(img, (s, s, s, s))
        out.append(padded[:, s - dy : s - dy + img.shape[1], s - dx : s - dx + img.shape[2]])
    return torch.stack(out)


def loop_flip(x, g):
    return torch.stack([img.flip(-1) if torch.rand((), generator=g) < 0.5 else img for img in x])


def loop_affine(x, aug: RandomAffine, g):
    out = []
    for img in x:
        matrix, offset = aug.parameters(1, g)
        half = torch.tensor([img.shape[2] / 2.0, img.shape[1] / 2.0])
        theta = torch.cat([matrix * half[None, None, :] / half[None, :, None], (offset / half)[:, :, None]], 2)
        grid = F.affine_grid(theta, [1, *img.shape], align_corners=False)
        out.append(F.grid_sample(img[None], grid, align_corners=False)[0])
    return torch.stack(out)


def loop_elastic(x, aug: ElasticDistortion, g):
    k = gaussian_kernel1d(aug.sigma)
    r = (len(k) - 1) // 2
    out = []
    for img in x:
        c, rows, cols = img.shape
        field = torch.rand(2, 1, rows, cols, generator=g) * 2 - 1
        field = F.conv2d(F.conv2d(field, k.view(1, 1, 1, -1), padding=(0, r)), k.view(1, 1, -1, 1), padding=(r, 0))
        field = field[:, 0] * aug.alpha
        gx = (2 * torch.arange(cols) + 1) / cols - 1 + field[0] * 2 / cols
        gy = (2 * torch.arange(rows)[:, None] + 1) / rows - 1 + field[1] * 2 / rows
        grid = torch.stack([gx, gy], -1)[None]
        out.append(F.grid_sample(img[None], grid, align_corners=False)[0])
    return torch.stack(out)


def loop_color(x, aug: PCAColorJitter, g):
    out = []
    for img in x:
        alpha = torch.randn(3, generator=g) * aug.std
        out.append(img + ((alpha * aug.eigenvalues) @ aug.eigenvectors.T)[:, None, None])
    return torch.stack(out)


# ------------------------------------------------------------------ the benchmark
def training_step(channels: int, size: int, batch: int, mlp: bool = False):
    torch.manual_seed(0)
    if mlp:
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(channels * size * size, 100), torch.nn.ReLU(),
                                    torch.nn.Linear(100, 10))
    else:
        model = NielsenNet(in_channels=channels, image_size=size)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.rand(batch, channels, size, size), torch.randint(0, 10, (batch,))

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def bench(quick: bool) -> list[dict]:
    batch = 128
    rounds, reps = (3, 3) if quick else (7, 5)
    rows = []
    for label, channels, size in (("MNIST 1x28x28", 1, 28), ("CIFAR 3x32x32", 3, 32)):
        x = torch.rand(batch, channels, size, size)
        g = torch.Generator().manual_seed(0)
        jitter = PCAColorJitter(0.1).fit(torch.rand(256, 3, size, size)) if channels == 3 else None
        affine, elastic = RandomAffine(degrees=10, scale=0.1, shear=10, translate=2), ElasticDistortion(34, 4)
        cases = {
            "RandomShift(2)": (RandomShift(2), lambda: loop_shift(x, 2, g)),
            "RandomCrop(pad 4)": (RandomCrop(size, padding=4), lambda: loop_shift(x, 4, g)),
            "RandomFlip": (RandomFlip(0.5), lambda: loop_flip(x, g)),
            "RandomAffine": (affine, lambda: loop_affine(x, affine, g)),
            "ElasticDistortion": (elastic, lambda: loop_elastic(x, elastic, g)),
        }
        if jitter is not None:
            cases["PCAColorJitter"] = (jitter, lambda: loop_color(x, jitter, g))
            cases["crop+flip+jitter"] = (Compose(RandomCrop(size, padding=4), RandomFlip(0.5), jitter), None)
        step = training_step(channels, size, batch)
        step_time = timed({"step": step}, rounds, max(1, reps // 2))["step"]
        mlp_time = timed({"step": training_step(channels, size, batch, mlp=True)}, rounds, reps)["step"]
        for name, (aug, loop) in cases.items():
            contenders = {"ours": lambda aug=aug: aug(x, g)}
            if loop is not None and not (quick and name == "ElasticDistortion" and channels == 3):
                contenders["loop"] = loop
            t = timed(contenders, rounds, reps)
            rows.append({"size": label, "name": name, "seconds": t["ours"], "loop_seconds": t.get("loop"),
                         "speedup_vs_loop": t["loop"] / t["ours"] if "loop" in t else None,
                         "step_seconds": step_time, "overhead": t["ours"] / step_time,
                         "mlp_step_seconds": mlp_time, "overhead_vs_mlp": t["ours"] / mlp_time})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few rounds (development)")
    parser.add_argument("--out", default="bench-results/augmentation.json", help="JSON results path")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's); 1 is steadier on a busy machine")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    rows = bench(args.quick)
    print(f"augmentation of a batch of 128 ({time.perf_counter() - started:.0f} s, {torch.get_num_threads()} threads)")
    print(f"{'size':14} {'augmentation':18} {'ms':>7} {'loop ms':>8} {'loop/ours':>9} {'step ms':>8} {'overhead':>8}"
          f" {'MLP ms':>7} {'vs MLP':>7}")
    for r in rows:
        loop = f"{r['loop_seconds'] * 1e3:8.2f}" if r["loop_seconds"] else f"{'-':>8}"
        speed = f"{r['speedup_vs_loop']:9.1f}" if r["speedup_vs_loop"] else f"{'-':>9}"
        print(f"{r['size']:14} {r['name']:18} {r['seconds'] * 1e3:7.2f} {loop} {speed} "
              f"{r['step_seconds'] * 1e3:8.1f} {100 * r['overhead']:7.1f}% {r['mlp_step_seconds'] * 1e3:7.2f} "
              f"{100 * r['overhead_vs_mlp']:6.0f}%")
    worst = max(r["overhead"] for r in rows)
    print(f"largest overhead: {100 * worst:.1f}% of a training step of Nielsen's network (goal <= 15%)")
    results = {"machine": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
               "threads": torch.get_num_threads(), "quick": args.quick, "rows": rows, "largest_overhead": worst}
    out = Path(args.out)
    atomic_write_json(out, results)
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
