"""Trainer overhead: descend's training loop vs a hand-written PyTorch loop (issue 4).

Same model (Nielsen's final network with batch norm), same data, same optimizer;
one epoch each, alternated, medians of several repeats, per batch size. Prints the
table and writes JSON (default bench-results/trainer_overhead.json). Goal: ratio <= 1.03.

    python benchmarks/trainer_overhead.py [--quick] [--out PATH]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from descend import bench
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
    atomic_write_json(args.out, result)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
