"""Step time of every descend optimizer against its torch.optim equivalent (foreach path).

Two parameter sets, a few large tensors and many small ones:
  (a) "mlp-10M": one MLP 1000-5000-1000-10 (10.0M parameters, 6 tensors);
  (b) "500-small": 500 small tensors (16x16, 64, 4x4x3x3 in turn; 92k parameters).

Gradients are fixed random tensors, so only ``optimizer.step()`` is timed. Both sides use
``foreach=True``. The closure-based book forms (Nesterov Alg. 8.3, RMSProp+Nesterov
Alg. 8.6) get a closure that leaves the gradients as they are, so their extra interim-point
pass is included. Algorithms torch lacks are compared with their nearest torch cousin
(named in the table) and, where the ``pytorch-optimizer`` package has a version and is
installed (``/work/bench-venv``), with that too.

Timing: for each pair, steps of ours and theirs are interleaved in rounds and the minimum
over rounds of the mean step time is kept. On CPU the clock is the process CPU time
(``time.process_time``, with one torch thread by default), which other processes on a
shared machine disturb far less than wall time; on CUDA it is wall time after a
synchronize.

    python benchmarks/optimizers.py --quick
    /work/bench-venv/bin/python benchmarks/optimizers.py --out bench-results/optimizers.json
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

import descend.optim as D
from descend.io import atomic_write_json

try:  # benchmark-only dependency
    import pytorch_optimizer as PO
except ImportError:  # pragma: no cover - depends on the environment
    PO = None

NOOP_CLOSURE = lambda: None  # noqa: E731 - gradients are preset

# name, descend factory, (torch label, torch factory), (pytorch-optimizer label, factory) or None
PAIRS = [
    ("sgd", lambda p: D.SGD(p, lr=1e-3, foreach=True),
     ("SGD", lambda p: torch.optim.SGD(p, lr=1e-3, foreach=True)),
     ("SGDW(momentum=0)", lambda p: PO.SGDW(p, lr=1e-3, momentum=0.0, foreach=True))),
    ("momentum", lambda p: D.Momentum(p, lr=1e-3, momentum=0.9, foreach=True),
     ("SGD(momentum)", lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.9, foreach=True)),
     ("SGDW(momentum)", lambda p: PO.SGDW(p, lr=1e-3, momentum=0.9, foreach=True))),
    ("nesterov (Alg. 8.3, closure)", lambda p: D.NesterovMomentum(p, lr=1e-3, momentum=0.9, foreach=True),
     ("SGD(nesterov)", lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.9, nesterov=True, foreach=True)),
     ("SGDW(nesterov)", lambda p: PO.SGDW(p, lr=1e-3, momentum=0.9, nesterov=True, foreach=True))),
    ("nesterov-reformulated", lambda p: D.NesterovMomentumReformulated(p, lr=1e-3, momentum=0.9, foreach=True),
     ("SGD(nesterov)", lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.9, nesterov=True, foreach=True)),
     ("SGDW(nesterov)", lambda p: PO.SGDW(p, lr=1e-3, momentum=0.9, nesterov=True, foreach=True))),
    ("adagrad", lambda p: D.AdaGrad(p, lr=1e-3, foreach=True),
     ("Adagrad", lambda p: torch.optim.Adagrad(p, lr=1e-3, foreach=True)), None),
    ("rmsprop", lambda p: D.RMSProp(p, lr=1e-3, foreach=True),
     ("RMSprop", lambda p: torch.optim.RMSprop(p, lr=1e-3, foreach=True)), None),
    ("rmsprop-nesterov (Alg. 8.6, closure)", lambda p: D.RMSPropNesterov(p, lr=1e-3, momentum=0.9, foreach=True),
     ("RMSprop(momentum) [cousin]", lambda p: torch.optim.RMSprop(p, lr=1e-3, momentum=0.9, foreach=True)), None),
    ("adam", lambda p: D.Adam(p, lr=1e-3, foreach=True),
     ("Adam", lambda p: torch.optim.Adam(p, lr=1e-3, foreach=True)), None),
    ("adam (decoupled wd)", lambda p: D.Adam(p, lr=1e-3, weight_decay=1e-2, decoupled_weight_decay=True, foreach=True),
     ("AdamW", lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=1e-2, foreach=True)), None),
    ("amsgrad", lambda p: D.AMSGrad(p, lr=1e-3, foreach=True),
     ("Adam(amsgrad)", lambda p: torch.optim.Adam(p, lr=1e-3, amsgrad=True, foreach=True)), None),
    ("delta-bar-delta", lambda p: D.DeltaBarDelta(p, lr=1e-3, foreach=True),
     ("Rprop [cousin]", lambda p: torch.optim.Rprop(p, lr=1e-3, foreach=True)), None),
]


def parameter_sets(quick: bool) -> dict[str, list[torch.Size]]:
    small = [(16, 16), (64,), (4, 4, 3, 3)]
    mlp = [(5000, 1000), (5000,), (1000, 5000), (1000,), (10, 1000), (10,)]
    if quick:
        mlp = [(1000, 500), (1000,), (500, 1000), (500,)]  # 1M parameters
    return {"mlp-10M" if not quick else "mlp-1M": mlp, "500-small": [small[i % 3] for i in range(500)]}


def make_params(shapes, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    params = []
    for s in shapes:
        p = torch.nn.Parameter(torch.randn(s, generator=g).to(device))
        p.grad = (0.01 * torch.randn(s, generator=g)).to(device)
        params.append(p)
    return params


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_pair(make_a, make_b, shapes, device, steps, rounds, closure_a):
    """Min over rounds of the mean step time (seconds) of a and b, interleaved."""
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    opt_a, opt_b = make_a(make_params(shapes, device)), make_b(make_params(shapes, device))
    runs = [(opt_a, closure_a), (opt_b, None)]
    for opt, closure in runs:  # warm-up: state allocation, first-step paths
        for _ in range(3):
            opt.step(closure) if closure else opt.step()
    best = [float("inf"), float("inf")]
    for _ in range(rounds):
        for i, (opt, closure) in enumerate(runs):
            _sync(device)
            t0 = clock()
            for _ in range(steps):
                opt.step(closure) if closure else opt.step()
            _sync(device)
            best[i] = min(best[i], (clock() - t0) / steps)
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few rounds (for development)")
    parser.add_argument("--out", type=Path, default=Path("bench-results/optimizers.json"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: stable timings)")
    parser.add_argument("--only", nargs="*", help="optimizer names to run (default: all)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    steps, rounds = (5, 3) if args.quick else (5, 15)
    pairs = [p for p in PAIRS if not args.only or p[0] in args.only]

    rows = []
    for set_name, shapes in parameter_sets(args.quick).items():
        n = sum(torch.Size(s).numel() for s in shapes)
        print(f"\n{set_name}: {len(shapes)} tensors, {n / 1e6:.2f}M parameters, device {device}, threads {args.threads}")
        header = f"{'descend':38s} {'ms':>8s}  {'torch.optim':28s} {'ms':>8s} {'ratio':>6s}"
        if PO is not None:
            header += f"  {'pytorch-optimizer':18s} {'ms':>8s} {'ratio':>6s}"
        print(header)
        print("-" * len(header))
        for name, ours, (torch_label, theirs), po in pairs:
            closure = NOOP_CLOSURE if getattr(ours(make_params([(1,)], device)), "needs_closure", False) else None
            t_ours, t_torch = time_pair(ours, theirs, shapes, device, steps, rounds, closure)
            row = {"set": set_name, "optimizer": name, "descend_ms": 1e3 * t_ours, "torch": torch_label,
                   "torch_ms": 1e3 * t_torch, "ratio": t_ours / t_torch}
            line = f"{name:38s} {1e3 * t_ours:8.3f}  {torch_label:28s} {1e3 * t_torch:8.3f} {t_ours / t_torch:6.2f}"
            if PO is not None and po is not None:
                po_label, po_make = po
                t_ours2, t_po = time_pair(ours, po_make, shapes, device, steps, rounds, closure)
                row.update({"pytorch_optimizer": po_label, "pytorch_optimizer_ms": 1e3 * t_po, "ratio_po": t_ours2 / t_po})
                line += f"  {po_label:18s} {1e3 * t_po:8.3f} {t_ours2 / t_po:6.2f}"
            print(line, flush=True)
            rows.append(row)

    worst = max(r["ratio"] for r in rows)
    print(f"\nworst descend/torch ratio: {worst:.2f} (goal <= 1.10)")
    meta = {"torch": torch.__version__, "device": str(device), "threads": args.threads, "quick": args.quick,
            "steps_per_round": steps, "rounds": rounds, "machine": platform.processor() or platform.machine(),
            "pytorch_optimizer": getattr(PO, "__version__", None) if PO is not None else None}
    atomic_write_json(args.out, {"meta": meta, "rows": rows})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
