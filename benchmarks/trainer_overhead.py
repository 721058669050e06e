"""Trainer overhead: descend's training loop vs a hand-written PyTorch loop.

Same model (Nielsen's final network with batch norm), same data, same optimizer;
one epoch each, in pairs that alternate which goes first; the ratio is the median of
the pairs' ratios (with their range), per batch size and memory layout. Prints the
table and writes JSON (default bench-results/trainer_overhead.json). Goal: ratio <= 1.03.
Then the Trainer's own cost per batch on a one-layer model, and, on a CPU with native
bf16, the images/s of bf16 autocast against float32.

    python benchmarks/trainer_overhead.py [--quick] [--out PATH]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
from torch import nn

from descend import bench, build
from descend.io import atomic_write_json
from descend.models import NielsenNet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer images and repeats")
    parser.add_argument("--out", type=Path, default=Path("bench-results/trainer_overhead.json"))
    args = parser.parse_args()
    images, repeats = (512, 3) if args.quick else (4096, 7)
    result = bench.run(NielsenNet, (1, 28, 28), (10, 64, 256), images, repeats)
    print(bench.table(result))

    # On a shared or virtual machine one epoch's time wanders by +-10% or more, which
    # hides a 3% difference. The Trainer's own cost per batch is measured more sharply
    # on a model that does almost nothing (one linear layer): whatever the Trainer adds
    # shows up there as absolute time, to set against the real network's time per step.
    print("\nthe Trainer's own cost per batch, measured on a one-layer linear model:")
    print("batch | extra per batch (us) | Nielsen net step (ms) | overhead on the Nielsen net")
    print("---:|---:|---:|---:")
    result["per_batch"] = []
    tiny_images, tiny_repeats = (1024, 5) if args.quick else (8192, 15)
    for bs in (10, 64, 256):
        row = bench.trainer_overhead(lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), (1, 28, 28), bs,
                                     tiny_images, tiny_repeats)
        extra = (row["trainer_s"] - row["hand_s"]) / math.ceil(tiny_images / bs)
        step = min(r["hand_s"] for r in result["rows"] if r["batch_size"] == bs) / math.ceil(images / bs)
        result["per_batch"].append({"batch_size": bs, "extra_s": extra, "nielsen_step_s": step, "overhead": extra / step})
        print(f"{bs} | {1e6 * extra:.0f} | {1e3 * step:.1f} | {100 * extra / step:.2f}%")

    # bf16 autocast (train.amp = "auto" on a CPU with AVX512-BF16 or AMX): the same loops,
    # channels-last, forward pass under torch.autocast; the speed-up is over float32.
    if build.native_bf16(torch.device("cpu")):
        print("\nbf16 autocast vs float32 (channels-last; Trainer and hand-written loop both under autocast):")
        print("batch | float32 img/s | bf16 img/s | speed-up | bf16 Trainer / hand-written (pair range)")
        print("---:|---:|---:|---:|---")
        result["bf16"] = []
        for bs in (64, 128, 256):
            fp32, bf16 = (bench.trainer_overhead(NielsenNet, (1, 28, 28), bs, images, repeats, channels_last=True,
                                                 amp=amp) for amp in ("none", "bf16"))
            speedup = bf16["trainer_images_per_s"] / fp32["trainer_images_per_s"]
            result["bf16"].append({"batch_size": bs, "float32": fp32, "bf16": bf16, "speedup": speedup})
            print(f"{bs} | {fp32['trainer_images_per_s']:.0f} | {bf16['trainer_images_per_s']:.0f} | {speedup:.2f}x | "
                  f"{bf16['ratio']:.3f} ({bf16['ratio_low']:.2f}-{bf16['ratio_high']:.2f})")
    else:
        print("\nthis CPU has no native bf16 (oneDNN reports none): the bf16 comparison is skipped")
    atomic_write_json(args.out, result)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
