"""Speed of the chapter-9 toolkit (descend.nn) against plain PyTorch, in one run.

Sections:

  unshared   LocallyConnected2d and TiledConv2d forward+backward against (a) a
             per-position Python loop reference (one small matmul per output position,
             what eq. 9.9 / 9.10 say literally) and (b) a shared ``torch`` Conv2d of the
             same size, which has the same FLOPs. Goal: unshared <= 3x the shared conv.
             Rows: ``LocallyConnected2d`` is the layer (its weight stored position-major),
             ``locally_connected2d`` the functional form on a contiguous weight (one more
             copy of the weight gradient per call); x requires grad in every contender.
  fft        FFT convolution (``functional.fft_conv``) against direct convolution
             (``torch.nn.functional.conv2d``) for kernel sizes 3-31 on 64x64 and
             256x256 inputs ("same" padding, forward); the crossover kernel size is the
             smallest k from which the FFT wins. Also against the ``fft-conv-pytorch``
             package (benchmark-only dependency; run with /work/bench-venv/bin/python).
  separable  rank-1 separable convolution (two 1D passes) against the full k x k
             convolution, k = 3-31 (forward); measured speed-up vs the k/2 that
             sec. 9.8 predicts (k^2 against 2k multiply-adds per output).
  batchnorm  descend.nn.BatchNorm2d (the text's eqs. 8.35-8.37 in plain tensor ops)
             against torch.nn.BatchNorm2d (fused kernel), training forward+backward.

Timing: the contenders of one row run in interleaved rounds and the minimum over rounds
of the mean time per call is kept (robust to other processes on a shared machine).
Ratios > 1 mean descend is slower than the reference.

    python benchmarks/conv.py --quick
    /work/bench-venv/bin/python benchmarks/conv.py --out bench-results/conv.json
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import descend.nn as dnn
from descend.io import atomic_write_json
from descend.nn import functional as DF

try:  # benchmark-only dependency
    from fft_conv_pytorch import fft_conv as package_fft_conv
except ImportError:  # pragma: no cover - depends on the environment
    package_fft_conv = None


def timed(contenders: dict, rounds: int, reps: int) -> dict[str, float]:
    """Min over ``rounds`` of the mean seconds per call, contenders interleaved per round."""
    best = {name: float("inf") for name in contenders}
    for fn in contenders.values():      # warm-up (allocator, oneDNN primitive caches)
        fn()
    for _ in range(rounds):
        for name, fn in contenders.items():
            start = time.perf_counter()
            for _ in range(reps):
                fn()
            best[name] = min(best[name], (time.perf_counter() - start) / reps)
    return best


# ------------------------------------------------------------------ unshared
def locally_connected_loop(x, weight):
    """Eq. 9.9 position by position: one (N, C k k) @ (C k k, O) product per output unit."""
    n_out, oh, ow, n_in, kh, kw = weight.shape
    out = []
    for j in range(oh):
        row = []
        for k in range(ow):
            patch = x[:, :, j:j + kh, k:k + kw].reshape(x.shape[0], -1)
            row.append(patch @ weight[:, j, k].reshape(n_out, -1).T)
        out.append(torch.stack(row, dim=-1))
    return torch.stack(out, dim=-2)


def tiled_loop(x, weight):
    """Eq. 9.10 position by position, kernel (j % t, k % t) at output (j, k)."""
    n_out, n_in, kh, kw, th, tw = weight.shape
    oh, ow = x.shape[2] - kh + 1, x.shape[3] - kw + 1
    out = []
    for j in range(oh):
        row = []
        for k in range(ow):
            patch = x[:, :, j:j + kh, k:k + kw].reshape(x.shape[0], -1)
            row.append(patch @ weight[..., j % th, k % tw].reshape(n_out, -1).T)
        out.append(torch.stack(row, dim=-1))
    return torch.stack(out, dim=-2)


def fwd_bwd(fn, *tensors):
    def run():
        for t in tensors:
            t.grad = None
        fn().sum().backward()
    return run


def bench_unshared(quick: bool) -> list[dict]:
    # (batch, in channels, out channels, input side, kernel)
    sizes = [(32, 16, 32, 16, 3), (64, 1, 16, 28, 5)] if quick else \
        [(32, 16, 32, 16, 3), (64, 1, 16, 28, 5), (32, 32, 32, 14, 3), (16, 32, 64, 12, 3)]
    rounds, reps = (3, 2) if quick else (9, 3)
    rows = []
    g = torch.Generator().manual_seed(0)
    for n, c, o, side, k in sizes:
        out = side - k + 1
        x = torch.randn(n, c, side, side, generator=g, requires_grad=True)
        kc = torch.randn(o, c, k, k, generator=g, requires_grad=True)
        w_lc = torch.randn(o, out, out, c, k, k, generator=g, requires_grad=True)
        # The layer as users get it: position-major weight storage (descend.nn.local);
        # no bias, like the Conv2d it is compared with.
        layer = dnn.LocallyConnected2d(c, o, side, k, bias=None)
        with torch.no_grad():
            layer.weight.copy_(w_lc)
        contenders = {
            "torch Conv2d (shared)": fwd_bwd(lambda: F.conv2d(x, kc), x, kc),
            "LocallyConnected2d": fwd_bwd(lambda: layer(x), x, layer.weight),
            "locally_connected2d": fwd_bwd(lambda: DF.locally_connected2d(x, w_lc), x, w_lc),
            "loop LocallyConnected": fwd_bwd(lambda: locally_connected_loop(x, w_lc), x, w_lc),
        }
        tiles = [2, 4]
        w_t = {t: torch.randn(o, c, k, k, t, t, generator=g, requires_grad=True) for t in tiles}
        for t in tiles:
            contenders[f"TiledConv2d t={t}"] = fwd_bwd(lambda t=t: DF.tiled_conv2d(x, w_t[t]), x, w_t[t])
            contenders[f"loop Tiled t={t}"] = fwd_bwd(lambda t=t: tiled_loop(x, w_t[t]), x, w_t[t])
        times = timed(contenders, rounds, reps)
        base = times["torch Conv2d (shared)"]
        size = f"N={n} C={c} O={o} {side}x{side} k={k}"
        for name, loop in [("LocallyConnected2d", "loop LocallyConnected"),
                           ("locally_connected2d", "loop LocallyConnected"),
                           *((f"TiledConv2d t={t}", f"loop Tiled t={t}") for t in tiles)]:
            rows.append(dict(section="unshared", size=size, name=name, seconds=times[name], conv_seconds=base,
                             loop_seconds=times[loop], vs_conv=times[name] / base,
                             speedup_vs_loop=times[loop] / times[name]))
    return rows


# ------------------------------------------------------------------ fft
def bench_fft(quick: bool) -> list[dict]:
    kernels = [3, 7, 15, 31] if quick else [3, 5, 7, 9, 11, 15, 19, 23, 27, 31]
    sides = [64, 256]
    rounds, reps = (2, 1) if quick else (5, 2)
    rows = []
    g = torch.Generator().manual_seed(1)
    for side in sides:
        n, c, o = (4, 4, 4) if side == 64 else (1, 4, 4)
        x = torch.randn(n, c, side, side, generator=g)
        for k in kernels:
            w = torch.randn(o, c, k, k, generator=g)
            contenders = {
                "direct": lambda: F.conv2d(x, w, padding=k // 2),
                "descend fft_conv": lambda: DF.fft_conv(x, w, padding="same"),
            }
            if package_fft_conv is not None:
                contenders["fft-conv-pytorch"] = lambda: package_fft_conv(x, w, padding=k // 2)
            with torch.no_grad():
                times = timed(contenders, rounds, reps)
            row = dict(section="fft", size=f"N={n} C={c} O={o} {side}x{side}", k=k,
                       direct_seconds=times["direct"], fft_seconds=times["descend fft_conv"],
                       fft_vs_direct=times["descend fft_conv"] / times["direct"])
            if "fft-conv-pytorch" in times:
                row["package_seconds"] = times["fft-conv-pytorch"]
                row["fft_vs_package"] = times["descend fft_conv"] / times["fft-conv-pytorch"]
            rows.append(row)
    return rows


def crossovers(rows: list[dict]) -> dict[str, int | None]:
    """Per input size, the smallest k from which FFT stays faster than direct convolution."""
    result = {}
    for size in dict.fromkeys(r["size"] for r in rows):
        ks = [r for r in rows if r["size"] == size]
        cross = None
        for i, r in enumerate(ks):
            if all(s["fft_vs_direct"] < 1 for s in ks[i:]):
                cross = r["k"]
                break
        result[size] = cross
    return result


# ------------------------------------------------------------------ separable
def bench_separable(quick: bool) -> list[dict]:
    kernels = [3, 7, 15, 31] if quick else [3, 5, 7, 9, 11, 15, 19, 23, 27, 31]
    rounds, reps = (2, 1) if quick else (5, 3)
    # one channel (image filtering, the book's setting) and a small multi-channel layer
    sizes = [(8, 1, 1, 128), (4, 8, 8, 64)]
    rows = []
    g = torch.Generator().manual_seed(2)
    for n, c, o, side in sizes:
        x = torch.randn(n, c, side, side, generator=g)
        for k in kernels:
            col = torch.randn(o, c, 1, k, generator=g)
            row = torch.randn(o, c, 1, k, generator=g)
            full = DF.separable_kernel(col, row)
            contenders = {
                "full k x k": lambda: F.conv2d(x, full, padding=k // 2),
                "separable": lambda: DF.separable_conv2d(x, col, row, padding="same"),
            }
            with torch.no_grad():
                times = timed(contenders, rounds, reps)
            rows.append(dict(section="separable", size=f"N={n} C={c} O={o} {side}x{side}", k=k,
                             full_seconds=times["full k x k"], separable_seconds=times["separable"],
                             speedup=times["full k x k"] / times["separable"], predicted=k / 2))
    return rows


# ------------------------------------------------------------------ batchnorm
def bench_batchnorm(quick: bool) -> list[dict]:
    sizes = [(64, 32, 28)] if quick else [(64, 32, 28), (128, 64, 14), (256, 20, 24)]
    rounds, reps = (3, 3) if quick else (7, 5)
    rows = []
    g = torch.Generator().manual_seed(3)
    for n, c, side in sizes:
        x = torch.randn(n, c, side, side, generator=g, requires_grad=True)
        ours, theirs = dnn.BatchNorm2d(c), torch.nn.BatchNorm2d(c)
        times = timed({
            "torch BatchNorm2d": fwd_bwd(lambda: theirs(x), x),
            "descend BatchNorm2d": fwd_bwd(lambda: ours(x), x),
        }, rounds, reps)
        rows.append(dict(section="batchnorm", size=f"N={n} C={c} {side}x{side}",
                         torch_seconds=times["torch BatchNorm2d"], descend_seconds=times["descend BatchNorm2d"],
                         ratio=times["descend BatchNorm2d"] / times["torch BatchNorm2d"]))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few sizes and rounds (development)")
    parser.add_argument("--out", default="bench-results/conv.json", help="JSON results path")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's); 1 is steadier on a busy machine")
    parser.add_argument("--sections", default="unshared,fft,separable,batchnorm",
                        help="comma-separated subset of: unshared, fft, separable, batchnorm")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    runners = {"unshared": bench_unshared, "fft": bench_fft, "separable": bench_separable,
               "batchnorm": bench_batchnorm}
    unknown = [s for s in sections if s not in runners]
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {list(runners)}")
    results: dict = {"machine": platform.platform(), "python": platform.python_version(),
                     "load_average_1_5_15min_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
                     "torch": torch.__version__, "threads": torch.get_num_threads(), "quick": args.quick,
                     "fft_conv_pytorch": package_fft_conv is not None}
    for section in sections:
        started = time.perf_counter()
        rows = runners[section](args.quick)
        results[section] = rows
        print(f"\n== {section} ({time.perf_counter() - started:.0f} s)")
        if section == "unshared":
            print(f"{'size':34} {'layer':22} {'ms':>9} {'x conv':>8} {'loop/ours':>10}")
            for r in rows:
                print(f"{r['size']:34} {r['name']:22} {r['seconds'] * 1e3:9.2f} {r['vs_conv']:8.2f} "
                      f"{r['speedup_vs_loop']:10.1f}")
        elif section == "fft":
            has_pkg = package_fft_conv is not None
            print(f"{'size':26} {'k':>3} {'direct ms':>10} {'fft ms':>9} {'fft/direct':>10}"
                  + (f" {'pkg ms':>9} {'fft/pkg':>8}" if has_pkg else ""))
            for r in rows:
                line = (f"{r['size']:26} {r['k']:3d} {r['direct_seconds'] * 1e3:10.2f} "
                        f"{r['fft_seconds'] * 1e3:9.2f} {r['fft_vs_direct']:10.2f}")
                if has_pkg:
                    line += f" {r['package_seconds'] * 1e3:9.2f} {r['fft_vs_package']:8.2f}"
                print(line)
            results["fft_crossover"] = crossovers(rows)
            print("crossover kernel size (FFT faster from here on):", results["fft_crossover"])
        elif section == "separable":
            print(f"{'size':26} {'k':>3} {'full ms':>9} {'sep ms':>8} {'speed-up':>9} {'k/2':>5}")
            for r in rows:
                print(f"{r['size']:26} {r['k']:3d} {r['full_seconds'] * 1e3:9.2f} "
                      f"{r['separable_seconds'] * 1e3:8.2f} {r['speedup']:9.2f} {r['predicted']:5.1f}")
        else:
            print(f"{'size':24} {'torch ms':>9} {'descend ms':>11} {'ratio':>6}")
            for r in rows:
                print(f"{r['size']:24} {r['torch_seconds'] * 1e3:9.2f} {r['descend_seconds'] * 1e3:11.2f} "
                      f"{r['ratio']:6.2f}")
    if hasattr(os, "getloadavg"):
        results["load_average_1_5_15min_at_end"] = os.getloadavg()
        print("load average (1, 5, 15 min) at start / end:",
              results["load_average_1_5_15min_at_start"], results["load_average_1_5_15min_at_end"])
    out = Path(args.out)
    atomic_write_json(out, results)
    print(f"\nresults written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
