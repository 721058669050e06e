"""Data-parallel training on ``torch.distributed``: the pieces the Trainer calls.

One training loop serves one process and many. Launched by ``torchrun`` (or
``descend train --nproc N``), every process runs the same program; the Trainer finds
the process group and then:

* takes the single process's example order for ``(seed, epoch)`` and gives rank r the
  r-th contiguous piece of every global batch (:func:`shard`), so that global batch i
  of one process is the concatenation of the ranks' local batches i. ``batch_size`` is
  the *global* batch m of Algorithm 8.1: N ranks each see m/N examples per step, and
  the same config trains the same model whatever N is.
* averages gradients with ``DistributedDataParallel`` (DDP). The mean over ranks of
  per-rank mean losses equals the global mean only when the local batches are equally
  large, so each rank's loss is weighted by ``n_local * N / n_global`` before backward
  (:func:`shard_weight`); with that, the parameters after k steps equal those of one
  process with batch m, to float rounding, for any optimizer. A last global batch with
  fewer than N examples is dropped (a rank would get none).
* evaluates sharded: each rank scores a piece of the data, and sums of losses and
  counts of correct answers are all-reduced (exact counts, so accuracies are the
  single process's).
* writes checkpoints, metrics, plots and the progress bar on rank 0 only.

Batch normalization: by default each rank normalizes with the statistics of its own
m/N examples (as DDP does); the running averages used at test time are rank 0's,
which DDP broadcasts to the other ranks. :func:`convert_sync_batchnorm` (config
``train.sync_batchnorm = true``) makes the statistics those of the global batch, as
in one process: ``torch.nn.SyncBatchNorm`` on GPUs, :class:`SyncBatchNorm` below on
CPUs (torch's refuses non-GPU inputs).

Random numbers: the example order and the augmentation come from generators seeded by
``(seed, epoch)``, identical on every rank; the global RNG (dropout) is re-seeded at
the start of every epoch from ``(seed, epoch, rank)`` (:func:`rank_seed`), so ranks
draw different masks and a resumed distributed run draws the same ones again.

Failures: collectives time out (``timeout``, default 300 s) instead of waiting
forever, and a peer that dies closes its connections; either surfaces as a
:class:`~descend.errors.DistributedError` naming the rank (:func:`collective_errors`).
Under torchrun the launcher also stops the other ranks when one fails.

Where PyTorch differs: ``DistributedSampler`` pads or drops to give every rank the
same number of examples and treats the batch size as per-rank; here the batch is
global and the order is exactly the single process's.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import os
from typing import Callable, Iterator, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from descend.errors import ConfigError, DistributedError, ShapeError

DEFAULT_TIMEOUT = 300.0  # seconds a collective may wait for its peers


# ------------------------------------------------------------------ the process group
def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialized process group; ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_rank0() -> bool:
    """True in the process that writes files and prints (rank 0, or the only process)."""
    return world()[0] == 0


def launched_rank() -> int:
    """The rank torchrun gave this process (``$RANK``), whether or not a group is joined yet."""
    return int(os.environ.get("RANK", "0"))


def launched_world_size() -> int:
    """The number of processes torchrun started (``$WORLD_SIZE``; 1 without torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise DistributedError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") from None


def local_device(device: torch.device) -> torch.device:
    """This process's device: with several processes per node, ``cuda`` means ``cuda:LOCAL_RANK``."""
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if device.type != "cuda" or local_world <= 1:
        return device
    if device.index is not None:
        raise ConfigError(
            f"device = {str(device)!r} names one GPU, but torchrun started {local_world} processes on this "
            'node; use device = "cuda" (each process then takes cuda:LOCAL_RANK)'
        )
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % max(1, torch.cuda.device_count()))


def init_from_env(device: torch.device, *, timeout: float = DEFAULT_TIMEOUT, backend: str | None = None) -> bool:
    """Join the process group torchrun describes ($RANK, $WORLD_SIZE, $MASTER_ADDR, $MASTER_PORT).

    Returns True if this call initialized the group (the caller then calls
    :func:`teardown`), False when there is nothing to join (one process) or a group
    already exists. ``backend``: ``nccl`` for CUDA devices, ``gloo`` otherwise.
    """
    size = launched_world_size()
    if size <= 1 or dist.is_initialized():
        return False
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise DistributedError(
            f"WORLD_SIZE={size} but {', '.join(missing)} not set; start distributed runs with "
            "torchrun (or descend train --nproc N), which sets them"
        )
    if not timeout > 0:
        raise ConfigError(f"Invalid distributed timeout: {timeout}; it must be > 0 seconds")
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
    except (RuntimeError, ValueError) as exc:
        raise DistributedError(
            f"rank {launched_rank()} of {size} could not join the process group at "
            f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} within {timeout:g} s "
            f"({_first_line(exc)}); check that every rank was started and can reach rank 0"
        ) from None
    return True


def teardown(*, wait: bool = True) -> None:
    """Leave the process group (if one is initialized).

    The trainers' DDP wrappers hold the group too; those the caller has dropped are
    collected first, so that the group's worker threads are stopped and joined here. A
    group that outlives this call is destroyed during interpreter shutdown instead, where
    gloo's threads can abort the process ("terminate called without an active
    exception") after a run that succeeded.

    With ``wait`` (a run that ended normally) every rank first waits at a barrier until
    all are leaving, so no rank closes its connections while a peer is still inside a
    collective. A run that failed passes ``wait=False``: its peers may be gone, and the
    barrier would only wait out the timeout.
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        if wait:
            with contextlib.suppress(RuntimeError, ValueError):
                dist.barrier()
        dist.destroy_process_group()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _is_collective_failure(exc: BaseException) -> bool:
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc)
    return any(s in text for s in ("gloo", "NCCL", "Connection closed", "Connection reset", "imed out", "ProcessGroup"))


@contextlib.contextmanager
def collective_errors(active: bool = True) -> Iterator[None]:
    """Turn a failed collective (a peer died or hung past the timeout) into a DistributedError."""
    try:
        yield
    except RuntimeError as exc:
        if not active or isinstance(exc, DistributedError) or not _is_collective_failure(exc):
            raise
        raise DistributedError(
            f"rank {world()[0]}: a collective operation failed ({_first_line(exc)}). Another process of the "
            "run probably died or stopped responding (see its output). The last finished epoch's checkpoint "
            "is kept: descend train --resume RUN_DIR continues from it, with any number of processes"
        ) from None


# ------------------------------------------------------------------ collectives
def _comm_device(t: Tensor) -> torch.device:
    """NCCL reduces CUDA tensors only; gloo reduces CPU (and CUDA) tensors."""
    if dist.get_backend() == "nccl" and t.device.type != "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return t.device


def all_reduce_sum(t: Tensor) -> Tensor:
    """The sum of ``t`` over all ranks (a new tensor on ``t``'s device); ``t`` itself in one process."""
    if world()[1] == 1:
        return t
    out = t.detach().to(_comm_device(t), copy=True)
    dist.all_reduce(out)
    return out.to(t.device)


def broadcast_string(text: str) -> str:
    """Rank 0's ``text`` on every rank (no pickling: UTF-8 bytes in a tensor)."""
    if world()[1] == 1:
        return text
    probe = torch.empty(0)
    device = _comm_device(probe)
    data = torch.tensor(list(text.encode("utf-8")), dtype=torch.uint8)
    length = torch.tensor([len(data)], dtype=torch.int64, device=device)
    dist.broadcast(length, 0)
    buffer = data.to(device) if is_rank0() else torch.empty(int(length), dtype=torch.uint8, device=device)
    dist.broadcast(buffer, 0)
    return bytes(buffer.cpu().tolist()).decode("utf-8")


def barrier(timeout: float | None = None) -> None:
    """Wait for every rank. With ``timeout`` (gloo only), a rank that does not arrive in time
    is named in the error; a rank that died is reported at once."""
    if world()[1] == 1:
        return
    with collective_errors():
        if timeout is not None and dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=datetime.timedelta(seconds=timeout))
        else:
            dist.barrier()


def sync_buffers(module: nn.Module) -> None:
    """Copy rank 0's buffers (batch-norm running averages) to every rank, as DDP does before
    each training forward; evaluation calls it so that all ranks score the same model."""
    if world()[1] == 1:
        return
    with torch.no_grad():
        for buf in module.buffers():
            comm = _comm_device(buf)
            if comm == buf.device:
                dist.broadcast(buf, 0)
            else:
                out = buf.to(comm)
                dist.broadcast(out, 0)
                buf.copy_(out)


# ------------------------------------------------------------------ sharding the data
def shard(t: Tensor, rank: int, world_size: int) -> Tensor:
    """Rank ``rank``'s contiguous piece of a global batch (sizes differ by at most one).

    ``torch.cat([shard(t, r, N) for r in range(N)])`` is ``t``: the concatenation of the
    local batches is the single process's batch, in order.
    """
    return t.tensor_split(world_size)[rank]


def shard_weight(n_local: int, n_global: int, world_size: int) -> float:
    """The factor on a rank's mean loss that makes DDP's gradient average the global mean.

    DDP computes (1/N) sum_r grad L_r; the global batch's gradient is
    sum_r (n_r / n) grad L_r, so rank r scales its mean loss L_r by n_r N / n
    (exactly 1 when the batch divides evenly).
    """
    return n_local * world_size / n_global


def rank_seed(seed: int, epoch: int, rank: int) -> int:
    """The global-RNG seed of ``rank`` in ``epoch`` (dropout masks differ between ranks)."""
    return ((seed * 1_000_003 + epoch) * 7 + 5) * 10_007 + rank


# ------------------------------------------------------------------ gradients
def average_gradients(params: Sequence[Tensor], weight: float | None = None) -> None:
    """All-reduce ``p.grad`` over ranks in one flat buffer: the mean, or with ``weight``
    (this rank's share, the weights summing to 1 over ranks) the weighted sum."""
    rank, size = world()
    if size == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.detach().reshape(-1) for g in grads])
    flat.mul_(weight if weight is not None else 1.0 / size)
    flat = all_reduce_sum(flat)
    offset = 0
    for g in grads:
        g.detach().copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def all_reduce_closure(closure: Callable[[], Tensor], params: Sequence[Tensor] | None, weight: float) -> Callable[[], Tensor]:
    """A full-batch closure over sharded data: the loss (and gradient) of all ranks' data.

    Full-batch methods (L-BFGS, BFGS, nonlinear CG, Newton; sec. 8.6) decide their
    line searches on J(theta); every rank must see the same J and grad J, those of the
    whole data set. The wrapped closure returns sum_r w_r J_r with w_r = n_r / n
    (``weight``, this rank's share of the examples) and, when ``params`` is given (a
    model that is *not* wrapped in DDP), replaces each gradient by sum_r w_r grad J_r.
    With DDP, pass ``params=None``: DDP already averages the gradient (the Trainer
    scales each rank's loss so that the average is the weighted one).
    """

    def reduced() -> Tensor:
        loss = closure()
        if params is not None:
            average_gradients(params, weight)
        if not torch.is_tensor(loss):
            return loss
        return all_reduce_sum(loss.detach() * weight)

    return reduced


def register_gradient_averaging(optimizer: torch.optim.Optimizer) -> torch.utils.hooks.RemovableHandle:
    """Average gradients (and a closure's loss) over ranks before every ``optimizer.step``.

    For training code that runs its own forward/backward on the bare model (the
    Trainer's ``batch_step``, e.g. truncated BPTT), where DDP's hooks never fire. With
    a closure, the averaging happens after each closure call. Ranks are weighted
    equally: exact when the local batches are equally large.
    """

    def params() -> list[Tensor]:
        return [p for g in optimizer.param_groups for p in g["params"]]

    def hook(opt, args, kwargs):
        args = tuple(args)
        closure = args[1] if len(args) > 1 else kwargs.get("closure")
        if closure is None:
            average_gradients(params())
            return None
        size = world()[1]
        wrapped = all_reduce_closure(closure, params(), 1.0 / size)
        if len(args) > 1:
            return (args[0], wrapped, *args[2:]), kwargs
        return args, {**kwargs, "closure": wrapped}

    return optimizer.register_step_pre_hook(hook)


# ------------------------------------------------------------------ the model
class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch normalization (Deep Learning sec. 8.7.1, eqs. 8.35-8.37) with the statistics of
    the global batch, for CPU (gloo) process groups.

    mu and sigma^2 are taken over the examples of all ranks: the per-channel sums are
    all-reduced (two collectives: the mean, then the mean squared deviation, the same
    two-pass computation as one process), through ``torch.distributed.nn.functional``
    so that autograd back-propagates through the statistics across ranks. Running
    averages are updated as in ``torch.nn.BatchNorm`` (unbiased variance), so they equal
    a single process's. Evaluation mode and single-process training are ordinary batch
    norm.

    Where PyTorch differs: ``torch.nn.SyncBatchNorm`` (used for CUDA models, see
    :func:`convert_sync_batchnorm`) raises on CPU inputs, and DDP refuses it on CPU
    modules; this class is the CPU counterpart.
    """

    def _check_input_dim(self, input: Tensor) -> None:  # noqa: A002 - torch's name
        if input.dim() < 2:
            raise ShapeError(f"SyncBatchNorm expects (N, C, ...) inputs, got shape {tuple(input.shape)}")

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002 - torch's name
        if not self.training or world()[1] == 1:
            return super().forward(input)
        from torch.distributed.nn.functional import all_reduce

        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked)
        # Statistics in float32 at least (under autocast the input may be bf16/fp16).
        x = input if input.dtype in (torch.float32, torch.float64) else input.float()
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = x.new_tensor([x.numel() // max(x.shape[1], 1)])
        sums = all_reduce(torch.cat([x.sum(dims), count]))
        n = sums[-1]
        mean = sums[:-1] / n
        centered = x - mean.view(shape)
        var = all_reduce((centered * centered).sum(dims)) / n  # biased, as used to normalize
        out = centered * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), factor)
                unbiased = var.detach() * (n / (n - 1).clamp(min=1))
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
        return out.to(input.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device | None = None) -> nn.Module:
    """Replace every ``torch.nn.BatchNorm*d`` in ``module`` by a synchronized one:
    ``torch.nn.SyncBatchNorm`` for a CUDA ``device``, :class:`SyncBatchNorm` otherwise.

    The new layers share the old ones' parameters and buffers (an optimizer built
    before still updates them; state-dict keys are unchanged). Returns the module (a
    new one only if ``module`` itself is a batch-norm layer).
    """
    _refuse_other_batch_norms(module)
    if device is not None and device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, (SyncBatchNorm, nn.SyncBatchNorm)):
        out = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        out.running_mean, out.running_var = module.running_mean, module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, convert_sync_batchnorm(child))
    return out


def _refuse_other_batch_norms(module: nn.Module) -> None:
    for m in module.modules():
        if "BatchNorm" in type(m).__name__ and not isinstance(m, nn.modules.batchnorm._BatchNorm):
            raise ConfigError(
                f"sync_batchnorm converts torch.nn.BatchNorm layers, but the model has a {type(m).__module__}."
                f"{type(m).__name__}; use torch.nn.BatchNorm1d/2d in the model, or train.sync_batchnorm = false"
            )


def data_parallel(model: nn.Module, device: torch.device, *, sync_batchnorm: bool = False) -> tuple[nn.Module, nn.Module]:
    """``(model, ddp)``: the model (batch norm converted if asked) and its DDP wrapper.

    The wrapper broadcasts rank 0's parameters and buffers at construction, so every
    rank starts from the same network.
    """
    if device.type == "cuda":
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        if local_world > torch.cuda.device_count():
            raise DistributedError(
                f"{local_world} processes on this node but {torch.cuda.device_count()} GPU(s); data-parallel "
                "training needs one GPU per process: use --nproc <= the number of GPUs"
            )
    if sync_batchnorm:
        model = convert_sync_batchnorm(model, device)
    with collective_errors():
        # (Buffers are broadcast from rank 0 before every forward: DDP's default.)
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return model, ddp
