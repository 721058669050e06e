"""``descend bench``: what the training loop costs, measured against plain PyTorch.

For a model and batch size, one epoch over the same in-memory data is timed twice,
alternately, several times:

* a hand-written PyTorch loop (index a batch, forward, cross-entropy, backward, step);
* descend's Trainer doing the same work (no evaluation, no checkpoints);

each in the contiguous (NCHW) and the channels-last (NHWC) memory layout, to see
whether oneDNN's channels-last convolutions pay off on this CPU.

The median of the pairs' time ratios is the Trainer's overhead. The images/s of the Trainer are
also converted to FLOP/s (3x the forward FLOPs of the network's convolutions and
matrix products per image, the usual estimate of forward + backward) and compared
with the machine's measured single-precision matrix-multiply rate.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from descend.data.tensors import Splits, TensorPair
from descend.errors import ConfigError
from descend.train.trainer import Trainer


def forward_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-add FLOPs (2 per MAC) of the Conv2d and Linear layers for one input."""
    flops = 0

    def conv_hook(m: nn.Conv2d, inp, out):
        nonlocal flops
        k = m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups
        flops += 2 * out[0].numel() * k

    def linear_hook(m: nn.Linear, inp, out):
        nonlocal flops
        flops += 2 * m.in_features * m.out_features

    handles = [m.register_forward_hook(conv_hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    handles += [m.register_forward_hook(linear_hook) for m in model.modules() if isinstance(m, nn.Linear)]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *input_shape))
    model.train(was_training)
    for h in handles:
        h.remove()
    return flops


def machine() -> str:
    """The processor by name, its cores, whether it has bfloat16 in hardware, torch's version
    and thread count: the line every benchmark's table starts with."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    from descend.build import native_bf16

    bf16 = "bf16 in hardware" if native_bf16(torch.device("cpu")) else "no bf16 in hardware"
    return (f"{name}, {os.cpu_count()} cores, {bf16}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


def sgemm_flops(size: int = 1024, seconds: float = 1.0) -> float:
    """The machine's float32 matrix-multiply rate (FLOP/s) on ``size`` x ``size`` products."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
    return 2 * size**3 * n / (time.perf_counter() - start)


def _hand_written_epoch(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                        batch_size: int, order: torch.Tensor, channels_last: bool = False, amp: str = "none") -> None:
    model.train()
    for idx in order.split(batch_size):
        xb, yb = x[idx], y[idx]
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp == "bf16"):
            loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()


def trainer_overhead(make_model: Callable[[], nn.Module], input_shape: tuple[int, ...], batch_size: int,
                     images: int = 2048, repeats: int = 5, seed: int = 0, channels_last: bool = False,
                     amp: str = "none") -> dict[str, Any]:
    """Median seconds per epoch of ``images`` random inputs, hand-written loop vs Trainer
    (both channels-last when ``channels_last``; both under bf16 autocast when ``amp = "bf16"``).

    The two run in pairs, alternating which goes first, and the ratio is the median of
    the pairs' ratios: a slow drift of the machine's speed then cancels within a pair.
    ``ratio_low`` / ``ratio_high`` are the smallest and largest pair ratios (the noise).
    """
    if amp not in ("none", "bf16"):
        raise ConfigError(f"trainer_overhead compares float32 ('none') or bf16 autocast ('bf16'), got amp={amp!r}")
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(images, *input_shape, generator=g)
    y = torch.randint(0, 10, (images,), generator=g)
    torch.manual_seed(seed)
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    trainer = Trainer(model, opt, Splits(TensorPair(x, y)), epochs=0, batch_size=batch_size, quiet=True,
                      checkpoint=False, evaluate_test=False, seed=seed, channels_last=channels_last, amp=amp)
    def hand_epoch() -> float:
        start = time.perf_counter()
        _hand_written_epoch(model, opt, x, y, batch_size, torch.randperm(images, generator=g), channels_last, amp)
        return time.perf_counter() - start

    def trainer_epoch() -> float:
        trainer.epochs += 1
        start = time.perf_counter()
        trainer.fit()
        return time.perf_counter() - start

    hand_epoch(), trainer_epoch()  # warm-up
    hand, ours = [], []
    for r in range(repeats):
        if r % 2:
            ours.append(trainer_epoch())
            hand.append(hand_epoch())
        else:
            hand.append(hand_epoch())
            ours.append(trainer_epoch())
    ratios = [t / h for t, h in zip(ours, hand)]
    h, t = statistics.median(hand), statistics.median(ours)
    return {"batch_size": batch_size, "channels_last": channels_last, "amp": amp, "images": images, "hand_s": h,
            "trainer_s": t, "ratio": statistics.median(ratios), "ratio_low": min(ratios), "ratio_high": max(ratios),
            "trainer_images_per_s": images / t, "hand_images_per_s": images / h}


def run(make_model: Callable[[], nn.Module], input_shape: tuple[int, ...], batch_sizes=(10, 64, 256),
        images: int = 2048, repeats: int = 5, layouts=(False, True)) -> dict[str, Any]:
    """The overhead and throughput table for each batch size and memory layout
    (contiguous, channels-last), plus the FLOP/s fraction."""
    peak = sgemm_flops()
    per_image = 3 * forward_flops(make_model(), input_shape)
    rows = []
    for bs in batch_sizes:
        for channels_last in layouts:
            row = trainer_overhead(make_model, input_shape, bs, images, repeats, channels_last=channels_last)
            row["gflops"] = row["trainer_images_per_s"] * per_image / 1e9
            row["fraction_of_sgemm"] = row["trainer_images_per_s"] * per_image / peak
            rows.append(row)
    return {"threads": torch.get_num_threads(), "sgemm_gflops": peak / 1e9,
            "train_flops_per_image": per_image, "rows": rows}


def table(result: dict[str, Any]) -> str:
    lines = [f"threads {result['threads']}, sgemm {result['sgemm_gflops']:.1f} GFLOP/s, "
             f"{result['train_flops_per_image'] / 1e6:.1f} MFLOP per training image",
             "batch | layout | hand-written s | Trainer s | ratio (median of pairs) | pair range | Trainer img/s | GFLOP/s | of sgemm",
             "---:|---|---:|---:|---:|---|---:|---:|---:"]
    for r in result["rows"]:
        layout = "channels-last" if r["channels_last"] else "contiguous"
        lines.append(f"{r['batch_size']} | {layout} | {r['hand_s']:.3f} | {r['trainer_s']:.3f} | {r['ratio']:.3f} | "
                     f"{r['ratio_low']:.2f}-{r['ratio_high']:.2f} | "
                     f"{r['trainer_images_per_s']:.0f} | {r['gflops']:.1f} | {100 * r['fraction_of_sgemm']:.0f}%")
    return "\n".join(lines)
