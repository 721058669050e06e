"""Forward+backward time of descend's RNN and LSTM against torch.nn.RNN / torch.nn.LSTM.

Both sides get the same batch-first input (N, T, F), hidden size H, and a loss
``sum(outputs * w)`` (a fixed random w) whose backward reaches every weight and the
input. descend runs every ``bptt`` path of each layer:

    fused      torch's own sequence kernel with descend's parameters (LSTM default)
    explicit   the BPTT recursions of descend.nn.bptt as the backward pass (RNN default)
    autograd   plain autograd through the Python loop over time (reference)

torch.nn.LSTM on CPU calls one fused oneDNN (mkldnn) kernel for the whole sequence,
forward and backward; torch.nn.RNN loops over time in C++.

Timing: for each size, the contenders run in interleaved rounds and the minimum over
rounds of the mean time per iteration is kept (robust to other processes on a shared
machine). Ratios are descend / torch, forward+backward; "fwd" columns time the forward
alone (no_grad) for the layer's default path. Goals: the LSTM's default path within
1.5x of torch.nn.LSTM on every size; its explicit path within 2x on the long sequence
and 1.5x elsewhere.

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


PATHS = {"lstm": ("fused", "explicit", "autograd"), "rnn": ("explicit", "fused", "autograd")}  # default first


def contenders(kind: str, F: int, H: int) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    if kind == "lstm":
        ref = torch.nn.LSTM(F, H, batch_first=True)
        ours = {path: LSTM.from_torch(ref, bptt=path) for path in PATHS[kind]}
    else:
        ref = torch.nn.RNN(F, H, batch_first=True)
        first = RNN(F, H)
        ours = {}
        for path in PATHS[kind]:
            ours[path] = RNN(F, H, bptt=path)
            ours[path].load_state_dict(first.state_dict())
    return {"torch": ref, **ours}


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
    header = (f"{'kind':5s} {'size':10s} {'N':>4s} {'T':>4s} {'F':>4s} {'H':>4s} | {'torch ms':>9s} | "
              + " | ".join(f"{p + ' ms':>12s} {'ratio':>5s}" for p in PATHS["lstm"]) + f" | {'fwd ratio':>9s}")
    print(header)
    print("-" * len(header))
    for kind in ("rnn", "lstm"):
        for name, N, T, F, H in sizes:
            mods = contenders(kind, F, H)
            default = PATHS[kind][0]
            g = torch.Generator().manual_seed(1)
            x = torch.randn(N, T, F, generator=g).requires_grad_()
            w = torch.randn(N, T, H, generator=g)
            for m in mods.values():  # warm up (oneDNN primitive creation, allocator)
                one_iteration(m, x, w)
                one_iteration(m, x, w)
            fb = time_rounds({k: (lambda m=m: one_iteration(m, x, w)) for k, m in mods.items()}, rounds, iters)
            fw = time_rounds({k: (lambda m=m: forward_only(m, x, w)) for k, m in mods.items() if k in ("torch", default)},
                             rounds, iters)
            row = {"kind": kind, "size": name, "N": N, "T": T, "F": F, "H": H, "default": default,
                   "torch_ms": 1e3 * fb["torch"]}
            for path in PATHS[kind]:
                row[f"{path}_ms"] = 1e3 * fb[path]
                row[f"{path}_ratio"] = fb[path] / fb["torch"]
            row["forward_torch_ms"] = 1e3 * fw["torch"]
            row["forward_default_ms"] = 1e3 * fw[default]
            row["forward_ratio"] = fw[default] / fw["torch"]
            rows.append(row)
            cells = " | ".join(f"{row[p + '_ms']:12.2f} {row[p + '_ratio']:5.2f}" for p in PATHS["lstm"])
            print(f"{kind:5s} {name:10s} {N:4d} {T:4d} {F:4d} {H:4d} | {row['torch_ms']:9.2f} | {cells} | "
                  f"{row['forward_ratio']:9.2f}")
    result = {
        "benchmark": "rnn",
        "what": "forward+backward ms per iteration, min over interleaved rounds; <path>_ratio = descend bptt=<path> / torch",
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
