"""One process of the 2-process gloo runs of test_distributed.py (not a test module).

The test starts two of these with the environment torchrun would set (RANK,
WORLD_SIZE, MASTER_ADDR=127.0.0.1, MASTER_PORT) and reads what they write into OUT:

    python distributed_worker.py SCENARIO OUT

``main``: every equivalence, sharding, writing, evaluation and resume scenario in one
process group (one start-up for all), then ``hang``: rank 1 stops answering for longer
than the (then shortened) collective timeout. ``die``: rank 1 exits in the middle of an
epoch.
The data and models are built here and imported by the test, which computes the
single-process oracles from them.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from descend.data import Splits, TensorPair

N_TRAIN, N_VAL, N_TEST = 203, 37, 41  # odd sizes: uneven shards, uneven last batch (203 = 4 * 48 + 11)
BATCH = 48
EPOCHS = 2
SEED = 7
MODEL_SEED = 1234


def make_data(n_train: int = N_TRAIN, dtype: torch.dtype = torch.float32) -> Splits:
    """Synthetic 10-class images (1x8x8) labelled by a random linear teacher: learnable, offline."""
    g = torch.Generator().manual_seed(99)
    teacher = torch.randn(64, 10, generator=g)

    def pair(n: int) -> TensorPair:
        x = torch.randn(n, 1, 8, 8, generator=g)
        return TensorPair(x.to(dtype), (x.reshape(n, -1) @ teacher).argmax(1))

    return Splits(pair(n_train), pair(N_VAL), pair(N_TEST))


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))


def bn_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
        nn.Linear(4 * 6 * 6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10),
    )


def make_optimizer(name: str, model: nn.Module) -> torch.optim.Optimizer:
    from descend import optim

    if name == "sgd":
        return optim.Momentum(model.parameters(), lr=0.1, momentum=0.9)
    if name == "adam":
        return optim.Adam(model.parameters(), lr=0.01)
    if name == "lbfgs":
        return optim.LBFGS(model.parameters(), max_iter=5, history_size=5)
    raise ValueError(name)


# scenario name -> (model, optimizer, batch size, sync batch norm, dtype)
# L-BFGS in float64: its curvature pairs amplify float32 rounding (a different summation
# order of the same gradient moves float32 L-BFGS by 1e-1 after 10 iterations, float64 by 1e-12).
CASES = {
    "sgd": (mlp, "sgd", BATCH, False, torch.float32),
    "adam": (mlp, "adam", BATCH, False, torch.float32),
    "syncbn": (bn_cnn, "sgd", BATCH, True, torch.float32),
    "lbfgs": (mlp, "lbfgs", N_TRAIN, False, torch.float64),  # full batch: the closure's loss is all-reduced
}


def build(case: str, run_dir=None, **kw):
    from descend.train import Trainer

    make_model, opt_name, batch, sync, dtype = CASES[case]
    torch.manual_seed(MODEL_SEED)
    model = make_model().to(dtype)
    return Trainer(model, make_optimizer(opt_name, model), make_data(dtype=dtype), epochs=EPOCHS, batch_size=batch,
                   seed=SEED, quiet=True, run_dir=run_dir, sync_batchnorm=sync, **kw)


def state_of(trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in trainer.model.state_dict().items()}


class RecordIds:
    """Records the example ids (stored in pixel 0) of every local batch."""

    def __init__(self) -> None:
        self.epochs: dict[int, list[list[int]]] = {}

    def on_epoch_start(self, trainer, epoch):
        self.epochs[epoch] = []

    def on_batch_end(self, trainer, batch_index, loss):
        self.epochs[trainer.epoch + 1].append(trainer.batch[0][:, 0, 0, 0].round().long().tolist())


def id_data(n: int) -> Splits:
    x = torch.zeros(n, 1, 8, 8)
    x[:, 0, 0, 0] = torch.arange(n, dtype=torch.float32)
    return Splits(TensorPair(x, torch.arange(n) % 10))


def main(out: Path, rank: int) -> None:
    from descend.train import Trainer
    from descend.train.trainer import CHECKPOINT

    report: dict = {}
    # Equivalence with one process (parameters, losses), rank-0-only writing, sharded evaluation.
    for case in CASES:
        trainer = build(case, run_dir=out / f"{case}-run-rank{rank}")
        history = trainer.fit()
        save_file(state_of(trainer), str(out / f"{case}-rank{rank}.safetensors"))
        test = trainer.evaluate(trainer.data.test)  # a collective: both ranks call it
        report[case] = {"history": history, "test": test}

    # A batch_step that runs the bare model (as truncated BPTT does): gradients are averaged
    # before each step. 192 = 4 * 48: equal pieces, where equal weights are exact.
    def batch_step(trainer, x, y):
        trainer.optimizer.zero_grad()
        loss = F.cross_entropy(trainer.model(x), y)
        loss.backward()
        trainer.optimizer.step()
        return loss

    torch.manual_seed(MODEL_SEED)
    model = mlp()
    trainer = Trainer(model, make_optimizer("sgd", model), make_data(192), epochs=EPOCHS, batch_size=BATCH, seed=SEED,
                      quiet=True, batch_step=batch_step)
    trainer.fit()
    save_file(state_of(trainer), str(out / f"batchstep-rank{rank}.safetensors"))

    # Sharding: which examples each rank saw in each batch (ids in pixel 0).
    for n in (23, 21):  # 23 = 5 * 4 + 3 (last batch split 2 + 1); 21: last batch of 1 < 2 ranks
        recorder = RecordIds()
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        Trainer(model, torch.optim.SGD(model.parameters(), lr=0.0), id_data(n), epochs=2, batch_size=4, seed=SEED,
                callbacks=[recorder], quiet=True).fit()
        report[f"ids-{n}"] = recorder.epochs

    # Resume across process counts: (a) a 2-process run stops after epoch 1 (the test resumes it
    # in one process); (b) continue, with 2 processes, a checkpoint the test wrote in one process.
    trainer = build("sgd", run_dir=out / "resume-a")
    trainer.epochs = 1
    trainer.fit()
    trainer = build("sgd", run_dir=out / "resume-b")
    trainer.resume(out / "resume-b" / CHECKPOINT)
    trainer.fit()
    save_file(state_of(trainer), str(out / f"resume-b-rank{rank}.safetensors"))

    # The full-batch helper without DDP: each rank holds half the data; L-BFGS on all of it.
    from descend.optim import LBFGS, model_closure
    from descend.train.distributed import all_reduce_closure, shard

    data = make_data(dtype=torch.float64).train
    x, y = shard(data.x, rank, 2), shard(data.y, rank, 2)
    torch.manual_seed(MODEL_SEED)
    model = mlp().double()
    opt = LBFGS(model.parameters(), max_iter=5, history_size=5)
    closure = all_reduce_closure(model_closure(model, F.cross_entropy, x, y), list(model.parameters()), len(x) / len(data))
    for _ in range(2):
        opt.step(closure)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / f"helper-rank{rank}.safetensors"))

    # runs.train, the path of `descend train` under torchrun: one folder for all ranks.
    from descend import config as cfg
    from descend import runs

    config = cfg.from_dict({
        "seed": 0, "device": "cpu", "quiet": True,
        "data": {"dataset": "digits", "augment": "none", "limit": 200, "eval_limit": 100},
        "model": {"name": "nielsen", "conv": [4], "hidden": [16], "dropout": 0.2},
        "optimizer": {"name": "sgd", "lr": 0.05},
        "train": {"epochs": 1, "batch_size": 32},
    })
    os.chdir(out)  # default run directory: runs/<date-time> under out, chosen by rank 0
    run_dir, results = runs.train(config)
    report["runs"] = {"run_dir": str(run_dir), "results": results}

    (out / f"report-rank{rank}.json").write_text(json.dumps(report))
    failing(out, rank, "hang")


def failing(out: Path, rank: int, mode: str) -> None:
    """Rank 1 dies (``die``) or stops answering (``hang``) at its second batch; rank 0 reports."""
    from descend.errors import DistributedError
    from descend.train import distributed

    class Trouble:
        def on_batch_end(self, trainer, batch_index, loss):
            if rank == 1 and batch_index == 1:
                if mode == "die":
                    os._exit(3)
                time.sleep(6)
                os._exit(0)

    trainer = build("sgd", callbacks=[Trouble()])
    if mode == "hang":  # a short collective timeout, once both ranks are ready
        import datetime

        from torch.distributed.distributed_c10d import _set_pg_timeout

        distributed.barrier()
        _set_pg_timeout(datetime.timedelta(seconds=2))
    start = time.perf_counter()
    try:
        trainer.fit()
        outcome = {"error": None}
    except DistributedError as exc:
        outcome = {"error": "DistributedError", "message": str(exc)}
    except Exception as exc:  # reported, so that the test shows what went wrong
        outcome = {"error": type(exc).__name__, "message": str(exc)}
    outcome["seconds"] = time.perf_counter() - start
    (out / f"{mode}-rank{rank}.json").write_text(json.dumps(outcome))
    os._exit(0)  # do not wait for the peer in the process group's shutdown


if __name__ == "__main__":
    scenario, out_dir = sys.argv[1], Path(sys.argv[2])
    torch.set_num_threads(1)
    from descend.train import distributed

    distributed.init_from_env(torch.device("cpu"), timeout=60.0)
    rank = distributed.world()[0]
    if scenario == "main":
        main(out_dir, rank)
    else:
        failing(out_dir, rank, scenario)
    distributed.teardown()
