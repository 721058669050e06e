"""Forward+backward time of descend's RNN and LSTM against torch.nn.RNN / torch.nn.LSTM.

Both sides get the same batch-first input (N, T, F), hidden size H, and a loss
``sum(outputs * w)`` (a fixed random w) whose backward reaches every weight and the
input. descend runs with ``explicit_bptt=True`` (the default: the BPTT recursions of
descend.nn.bptt as the backward pass) and, for reference, ``explicit_bptt=False``
(plain autograd through the Python time loop). torch.nn.LSTM on CPU calls one fused
oneDNN (mkldnn) kernel for the whole sequence, forward and backward; torch.nn.RNN
loops over time in C++.

Timing: for each size, the contenders run in interleaved rounds and the minimum over
rounds of the mean time per iteration is kept (robust to other processes on a shared
machine). Goal (issue 9): LSTM ratio <= 1.5 on CPU.

    python benchmarks/rnn.py --quick
    python benchmarks/rnn.py --out bench-results/rnn.json
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from descend.io import atomic_write_json
from descend.nn import LSTM, RNN

# (name, N, T, F, H)
SIZES = [
    ("row-mnist", 128, 28, 28, 128),
    ("medium", 32, 100, 32, 128),
    ("long", 16, 400, 8, 64),
    ("wide", 64, 50, 64, 256),
]
QUICK_SIZES = [("row-mnist", 64, 28, 28, 64), ("medium", 16, 50, 16, 64)]


def contenders(kind: str, F: int, H: int):
    torch.manual_seed(0)
    if kind == "lstm":
        ref = torch.nn.LSTM(F, H, batch_first=True)
        ours = LSTM.from_torch(ref)
        ours_ag = LSTM.from_torch(ref, explicit_bptt=False)
    else:
        ref = torch.nn.RNN(F, H, batch_first=True)
        ours = RNN(F, H)
        ours_ag = RNN(F, H, explicit_bptt=False)
    return {"torch": ref, "descend": ours, "descend (autograd)": ours_ag}


def one_iteration(module, x, w):
    module.zero_grad(set_to_none=True)
    x.grad = None
    out = module(x)[0]
    (out * w).sum().backward()


def forward_only(module, x, w):
    with torch.no_grad():
        module(x)


def time_rounds(fns: dict, rounds: int, iters: int) -> dict[str, float]:
    best = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(iters):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t0) / iters)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few rounds (for development)")
    parser.add_argument("--out", type=Path, default=Path("bench-results/rnn.json"))
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave the default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = QUICK_SIZES if args.quick else SIZES
    rounds, iters = (3, 3) if args.quick else (7, 5)

    rows = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, mkldnn={torch.backends.mkldnn.is_available()}")
    header = f"{'kind':5s} {'size':10s} {'N':>4s} {'T':>4s} {'F':>4s} {'H':>4s} | {'torch ms':>9s} {'descend ms':>10s} {'ratio':>6s} | {'autograd ms':>11s} {'ratio':>6s} | {'fwd ratio':>9s}"
    print(header)
    print("-" * len(header))
    for kind in ("rnn", "lstm"):
        for name, N, T, F, H in sizes:
            mods = contenders(kind, F, H)
            g = torch.Generator().manual_seed(1)
            x = torch.randn(N, T, F, generator=g).requires_grad_()
            w = torch.randn(N, T, H, generator=g)
            for m in mods.values():  # warm up (oneDNN primitive creation, allocator)
                one_iteration(m, x, w)
                one_iteration(m, x, w)
            fb = time_rounds({k: (lambda m=m: one_iteration(m, x, w)) for k, m in mods.items()}, rounds, iters)
            fw = time_rounds({k: (lambda m=m: forward_only(m, x, w)) for k, m in mods.items() if k != "descend (autograd)"},
                             rounds, iters)
            row = {
                "kind": kind, "size": name, "N": N, "T": T, "F": F, "H": H,
                "torch_ms": 1e3 * fb["torch"], "descend_ms": 1e3 * fb["descend"],
                "descend_autograd_ms": 1e3 * fb["descend (autograd)"],
                "ratio": fb["descend"] / fb["torch"],
                "autograd_ratio": fb["descend (autograd)"] / fb["torch"],
                "forward_torch_ms": 1e3 * fw["torch"], "forward_descend_ms": 1e3 * fw["descend"],
                "forward_ratio": fw["descend"] / fw["torch"],
            }
            rows.append(row)
            print(f"{kind:5s} {name:10s} {N:4d} {T:4d} {F:4d} {H:4d} | {row['torch_ms']:9.2f} {row['descend_ms']:10.2f} "
                  f"{row['ratio']:6.2f} | {row['descend_autograd_ms']:11.2f} {row['autograd_ratio']:6.2f} | "
                  f"{row['forward_ratio']:9.2f}")
    result = {
        "benchmark": "rnn",
        "what": "forward+backward ms per iteration, min over interleaved rounds; ratio = descend / torch",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "quick": args.quick,
        "load_average_1_5_15min": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "rows": rows,
    }
    atomic_write_json(args.out, result)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
