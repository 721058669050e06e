"""Data-parallel scaling of the Trainer: images/s of Nielsen's final network.

The network is ``NielsenNet()`` as ``descend train --config nielsen`` builds it (conv-pool 20 and 40 maps,
two fully connected layers of 1000 ReLU units with dropout 0.5, batch norm; 1.67M
parameters), on MNIST-shaped random images (speed does not depend on the pixel values),
trained with SGD + momentum at a global batch of 128. Rows:

* ``1 proc x T threads``: one process, ``torch.set_num_threads(T)``;
* ``P procs x 1 thread``: P processes on ``torch.distributed`` (gloo, loopback), DDP,
  each computing 128/P examples per step;

each measured twice, through the descend ``Trainer`` (one epoch of warm-up, then the
``images_per_s`` of the next epoch) and as a hand-written plain-PyTorch loop (the same
steps; ratio = Trainer / plain). The communication share of a DDP step is
``1 - t(step under ddp.no_sync()) / t(step)``: the time the gradient all-reduce adds
(DDP overlaps it with the backward pass), and, more robust on a busy machine, the time of
one all-reduce of a gradient-sized buffer divided by the step time.
Scaling efficiency = (images/s with P processes) / (P x images/s of one 1-thread process).

With ``--device cuda`` (one GPU): one process in fp32, and with bf16 autocast plus
channels-last, through the Trainer.

Wall-clock timings: the best epoch of each run, and the best of ``--repeat`` turns in which
the configurations alternate; on a shared machine they are still noisy.

    python benchmarks/scaling.py --quick
    python benchmarks/scaling.py --out bench-results/scaling.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from descend.io import atomic_write_json

GLOBAL_BATCH = 128


def make_model(device="cpu"):
    from descend.models import NielsenNet

    torch.manual_seed(0)
    return NielsenNet().to(device)


def make_data(steps: int):
    from descend.data import Splits, TensorPair

    g = torch.Generator().manual_seed(0)
    n = steps * GLOBAL_BATCH
    return Splits(TensorPair(torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)))


def optimizer(model):
    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


def trainer_rate(steps: int, rounds: int, device="cpu", amp="none", channels_last=False) -> float:
    """images/s of the Trainer (all processes together), best over rounds, after one warm-up epoch."""
    from descend.train import Trainer

    model = make_model(device)
    t = Trainer(model, optimizer(model), make_data(steps), epochs=1 + rounds, batch_size=GLOBAL_BATCH, quiet=True,
                device=device, amp=amp, channels_last=channels_last, evaluate_test=False)
    history = t.fit()
    return max(h["images_per_s"] for h in history[1:])


def plain_rate(steps: int, rounds: int, ddp=None, model=None, no_sync=False, device="cpu") -> float:
    """images/s of a hand-written loop over the same global batches (this rank's piece of each)."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    model = model or make_model(device)
    net = ddp or model
    opt = optimizer(model)
    data = make_data(steps).train
    best = 0.0
    for r in range(1 + rounds):
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(r))
        if device != "cpu":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for idx in order.split(GLOBAL_BATCH):
            idx = idx.tensor_split(world)[rank]
            x, y = data.x[idx].to(device), data.y[idx].to(device)
            opt.zero_grad(set_to_none=True)
            if no_sync:
                with ddp.no_sync():
                    F.cross_entropy(net(x), y).backward()
            else:
                F.cross_entropy(net(x), y).backward()
            opt.step()
        if device != "cpu":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        if r > 0:  # round 0 warms up
            best = max(best, len(data) / seconds)
    return best


def _ddp_worker(rank: int, world: int, port: int, steps: int, rounds: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        result = {"trainer": trainer_rate(steps, rounds)}
        model = make_model()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        result["plain"] = plain_rate(steps, rounds, ddp=ddp, model=model)
        result["plain_no_sync"] = plain_rate(steps, rounds, ddp=ddp, model=model, no_sync=True)
        # the all-reduce alone, on a buffer as large as the gradient
        flat = torch.zeros(sum(p.numel() for p in model.parameters()))
        for _ in range(3):
            dist.all_reduce(flat)
        start = time.perf_counter()
        for _ in range(10):
            dist.all_reduce(flat)
        result["allreduce_ms"] = (time.perf_counter() - start) / 10 * 1e3
        result["gradient_mb"] = flat.numel() * 4 / 1e6
        if rank == 0:
            Path(out).write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_rates(world: int, steps: int, rounds: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "result.json")
        mp.spawn(_ddp_worker, args=(world, free_port(), steps, rounds, out), nprocs=world, join=True)
        return json.loads(Path(out).read_text())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few steps and rounds (for development)")
    parser.add_argument("--out", type=Path, default=Path("bench-results/scaling.json"))
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--procs", type=int, default=2, help="processes of the data-parallel rows")
    parser.add_argument("--repeat", type=int, help="turns of every configuration (default 1 quick, 3 full)")
    args = parser.parse_args(argv)
    steps, rounds = (6, 2) if args.quick else (24, 3)
    args.repeat = args.repeat or (1 if args.quick else 3)
    rows = []

    if args.device == "cuda":
        if not torch.cuda.is_available():
            parser.error("--device cuda but no CUDA GPU is available")
        plain = plain_rate(steps, rounds, device="cuda")
        for label, amp, cl in (("1 GPU fp32", "none", False), ("1 GPU bf16 + channels-last", "bf16", True),
                               ("1 GPU fp16 + channels-last", "fp16", True)):
            rate = trainer_rate(steps, rounds, device="cuda", amp=amp, channels_last=cl)
            rows.append({"config": label, "trainer_img_s": rate, "plain_img_s": plain if amp == "none" else None})
    else:
        # The configurations take turns, --repeat times; each keeps its best (a shared
        # machine's other load then hurts all of them alike, not the one that ran during it).
        threads = torch.get_num_threads()
        one: dict[int, dict[str, float]] = {}
        d: dict[str, float] = {}
        for _ in range(args.repeat):
            for t in sorted({1, args.procs}):
                torch.set_num_threads(t)
                best = one.setdefault(t, {"trainer": 0.0, "plain": 0.0})
                best["trainer"] = max(best["trainer"], trainer_rate(steps, rounds))
                best["plain"] = max(best["plain"], plain_rate(steps, rounds))
            torch.set_num_threads(threads)
            new = ddp_rates(args.procs, steps, rounds)
            if not d or new["trainer"] > d["trainer"]:
                d = new
        for t in sorted(one):
            rows.append({"config": f"1 proc x {t} thread{'s' if t > 1 else ''}", "trainer_img_s": one[t]["trainer"],
                         "plain_img_s": one[t]["plain"]})
        comm = 1.0 - d["plain"] / d["plain_no_sync"]
        rows.append({"config": f"{args.procs} procs x 1 thread (DDP, gloo)", "trainer_img_s": d["trainer"],
                     "plain_img_s": d["plain"], "plain_no_sync_img_s": d["plain_no_sync"], "comm_share": comm,
                     "allreduce_ms": d["allreduce_ms"], "gradient_mb": d["gradient_mb"],
                     "step_ms": 1e3 * GLOBAL_BATCH / d["trainer"],
                     "comm_share_allreduce": d["allreduce_ms"] / (1e3 * GLOBAL_BATCH / d["trainer"]),
                     "efficiency_vs_1_thread": d["trainer"] / (args.procs * one[1]["trainer"]),
                     "speedup_vs_1_proc_same_cores": d["trainer"] / one[args.procs]["trainer"]})

    print(f"{'configuration':38s} {'Trainer img/s':>14s} {'plain img/s':>12s} {'ratio':>6s}")
    for row in rows:
        plain = row.get("plain_img_s")
        ratio = f"{row['trainer_img_s'] / plain:6.2f}" if plain else "     -"
        print(f"{row['config']:38s} {row['trainer_img_s']:14.0f} {plain or float('nan'):12.0f} {ratio}")
    for row in rows:
        if "comm_share" in row:
            print(f"\n{row['config']}: communication share of a step {100 * row['comm_share']:.1f}% by no_sync, "
                  f"{100 * row['comm_share_allreduce']:.1f}% as all-reduce time / step time (all-reduce of "
                  f"{row['gradient_mb']:.1f} MB alone: {row['allreduce_ms']:.1f} ms, step {row['step_ms']:.0f} ms); scaling "
                  f"efficiency vs one 1-thread process {100 * row['efficiency_vs_1_thread']:.0f}%; "
                  f"speed-up vs one process on the same {args.procs} cores x{row['speedup_vs_1_proc_same_cores']:.2f}")
    meta = {"torch": torch.__version__, "machine": platform.machine(), "cpus": os.cpu_count(),
            "load_average": os.getloadavg(), "quick": args.quick, "steps_per_round": steps, "rounds": rounds,
            "global_batch": GLOBAL_BATCH, "device": args.device, "repeat": args.repeat}
    atomic_write_json(args.out, {"meta": meta, "rows": rows})
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
