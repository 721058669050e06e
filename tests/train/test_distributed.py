"""Data parallelism on 2 gloo processes over the loopback interface.

The test starts two ``distributed_worker.py`` processes with the environment torchrun
sets and checks what they wrote against single-process oracles: a hand-written PyTorch
training loop on the global batches (the order of Algorithm 8.1's minibatches
re-derived here from the seed), a plain-torch evaluation, and a single-process L-BFGS.
Each launch is bounded by a timeout: a hang fails the test instead of blocking it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import load_file

from descend.errors import ConfigError, DistributedError
from descend.train import distributed
from descend.train.trainer import CHECKPOINT, METRICS, WEIGHTS

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="this torch build has no torch.distributed gloo backend")

WORKER_PATH = Path(__file__).with_name("distributed_worker.py")
_spec = importlib.util.spec_from_file_location("distributed_worker", WORKER_PATH)
W = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(W)

LAUNCH_TIMEOUT = 240  # seconds; a hang fails the test


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(scenario: str, out: Path) -> list[str]:
    """Run the worker in 2 processes as torchrun would; return their outputs."""
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE="2",
               LOCAL_WORLD_SIZE="2", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", DESCEND_OFFLINE="1")
    if Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"  # loopback only
    procs = [
        subprocess.Popen([sys.executable, str(WORKER_PATH), scenario, str(out)], env=dict(env, RANK=str(r), LOCAL_RANK=str(r)),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for r in range(2)
    ]
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=LAUNCH_TIMEOUT)[0])
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"the 2-process {scenario!r} run did not finish within {LAUNCH_TIMEOUT} s (a hang)")
    return outputs


def order_of_epoch(n: int, epoch: int) -> torch.Tensor:
    """The single process's example order: a permutation drawn from the seed and the epoch."""
    return torch.randperm(n, generator=torch.Generator().manual_seed((W.SEED * 1_000_003 + epoch) * 7))


def oracle(case: str, n_train: int = W.N_TRAIN) -> tuple[dict[str, torch.Tensor], list[float]]:
    """One process, plain PyTorch: Algorithm 8.1 on the global batches; returns state and epoch losses."""
    make_model, opt_name, batch, _, dtype = W.CASES[case]
    data = W.make_data(n_train, dtype=dtype).train
    torch.manual_seed(W.MODEL_SEED)
    model = make_model().to(dtype)
    opt = W.make_optimizer(opt_name, model)
    losses = []
    for epoch in range(1, W.EPOCHS + 1):
        total = 0.0
        for idx in order_of_epoch(len(data), epoch).split(batch):
            x, y = data.x[idx], data.y[idx]

            def closure():
                opt.zero_grad()
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                return loss

            if opt_name == "lbfgs":
                loss = opt.step(closure)
            else:
                loss = closure()
                opt.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(data))
    return model.state_dict(), losses


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One 2-process launch for every scenario of ``distributed_worker.main``."""
    out = tmp_path_factory.mktemp("ddp")
    # (b) of the resume test: a checkpoint of epoch 1 written by one process.
    torch.manual_seed(0)
    first = W.build("sgd", run_dir=out / "resume-b")
    first.epochs = 1
    first.fit()
    outputs = launch("main", out)
    reports = []
    for rank in range(2):
        path = out / f"report-rank{rank}.json"
        assert path.exists(), f"rank {rank} failed:\n{outputs[rank][-3000:]}"
        reports.append(json.loads(path.read_text()))
    return out, reports


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a.double(), b.double(), rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("case", list(W.CASES))
def test_n_ranks_with_b_over_n_equal_one_process_with_b(run, case):
    """SGD (momentum), Adam, sync batch norm, L-BFGS: parameters and losses after 2 epochs."""
    out, reports = run
    ranks = [load_file(str(out / f"{case}-rank{r}.safetensors")) for r in range(2)]
    expected, losses = oracle(case)
    for key, value in expected.items():
        if case == "syncbn" or "running" not in key:  # per-rank statistics differ only without sync
            assert torch.equal(ranks[0][key], ranks[1][key]), f"{case}: ranks disagree on {key}"
        if key.endswith("num_batches_tracked"):
            assert int(ranks[0][key]) == int(value)
        else:
            assert close(ranks[0][key], value), f"{case}: {key} differs from one process by {(ranks[0][key] - value).abs().max()}"
    history = reports[0][case]["history"]
    assert [h["train_loss"] for h in history] == pytest.approx(losses, rel=1e-5)
    def same_on_every_rank(h):
        return {k: v for k, v in h.items() if k not in ("seconds", "images_per_s")}

    assert list(map(same_on_every_rank, history)) == list(map(same_on_every_rank, reports[1][case]["history"]))


def test_a_batch_step_on_the_bare_model_gets_averaged_gradients(run):
    out, _ = run
    ranks = [load_file(str(out / f"batchstep-rank{r}.safetensors")) for r in range(2)]
    expected, _ = oracle("sgd", n_train=192)
    for key, value in expected.items():
        assert torch.equal(ranks[0][key], ranks[1][key]), key
        assert close(ranks[0][key], value), key


def test_only_rank_0_writes_files(run):
    out, _ = run
    rank0, rank1 = out / "sgd-run-rank0", out / "sgd-run-rank1"
    assert (rank0 / CHECKPOINT).is_file() and (rank0 / WEIGHTS).is_file()
    assert [json.loads(line)["epoch"] for line in (rank0 / METRICS).read_text().splitlines()] == [1, 2]
    assert not rank1.exists()


@pytest.mark.parametrize("case", ["sgd", "syncbn"])
def test_sharded_evaluation_equals_one_process(run, case):
    """Accuracy exactly, loss to rounding, of the final weights scored by plain torch in one process."""
    out, reports = run
    torch.manual_seed(0)
    model = W.CASES[case][0]()
    model.load_state_dict(load_file(str(out / f"{case}-rank0.safetensors")))
    model.eval()
    data = W.make_data()
    with torch.no_grad():
        for name, pair, result in (("test", data.test, reports[0][case]["test"]),
                                   ("val", data.val, {"accuracy": reports[0][case]["history"][-1]["val_accuracy"],
                                                      "loss": reports[0][case]["history"][-1]["val_loss"]})):
            logits = model(pair.x)
            assert result["accuracy"] == (logits.argmax(1) == pair.y).sum().item() / len(pair), name
            assert result["loss"] == pytest.approx(F.cross_entropy(logits, pair.y).item(), rel=1e-5), name
    assert reports[0][case]["test"] == reports[1][case]["test"]


def test_every_epoch_is_partitioned_in_the_single_process_order(run):
    """Global batch i = rank 0's batch i + rank 1's batch i; nothing seen twice or missed."""
    _, reports = run
    for n in (23, 21):
        for epoch in ("1", "2"):
            local = [reports[r][f"ids-{n}"][epoch] for r in range(2)]
            order = order_of_epoch(n, int(epoch)).tolist()
            global_batches = [order[i : i + 4] for i in range(0, n, 4)]
            if n == 21:  # the last global batch (1 example) is smaller than the 2 ranks: dropped, as documented
                assert len(global_batches[-1]) == 1
                global_batches.pop()
            assert [a + b for a, b in zip(*local)] == global_batches
            seen = [i for batch in local[0] + local[1] for i in batch]
            assert len(seen) == len(set(seen))
            assert set(seen) == (set(range(n)) if n == 23 else set(range(n)) - {order[-1]})


def test_two_process_checkpoint_resumes_in_one_process(run):
    out, _ = run
    trainer = W.build("sgd", run_dir=out / "resume-a")
    trainer.resume()
    history = trainer.fit()
    expected, losses = oracle("sgd")
    for key, value in expected.items():
        assert close(trainer.model.state_dict()[key], value), key
    assert [h["epoch"] for h in history] == [1, 2]
    assert [h["train_loss"] for h in history] == pytest.approx(losses, rel=1e-5)


def test_one_process_checkpoint_resumes_in_two_processes(run):
    out, _ = run
    state = load_file(str(out / "resume-b-rank0.safetensors"))
    expected, _ = oracle("sgd")
    for key, value in expected.items():
        assert close(state[key], value), key


def test_full_batch_closure_helper_all_reduces_loss_and_gradient(run):
    """L-BFGS on 2 half data sets through all_reduce_closure == L-BFGS on all the data."""
    from descend.optim import LBFGS, model_closure

    out, _ = run
    ranks = [load_file(str(out / f"helper-rank{r}.safetensors")) for r in range(2)]
    data = W.make_data(dtype=torch.float64).train
    torch.manual_seed(W.MODEL_SEED)
    model = W.mlp().double()
    opt = LBFGS(model.parameters(), max_iter=5, history_size=5)
    for _ in range(2):
        opt.step(model_closure(model, F.cross_entropy, data.x, data.y))
    for key, value in model.state_dict().items():
        assert torch.equal(ranks[0][key], ranks[1][key])
        assert close(ranks[0][key], value), key


def test_runs_train_under_a_process_group_shares_one_run_directory(run):
    out, reports = run
    dirs = [r["runs"]["run_dir"] for r in reports]
    assert dirs[0] == dirs[1]
    run_dir = out / dirs[0]
    for name in ("config.toml", "results.json", "model.safetensors", "metrics.jsonl"):
        assert (run_dir / name).is_file(), name
    written = json.loads((run_dir / "results.json").read_text())
    assert reports[0]["runs"]["results"]["test_accuracy"] == reports[1]["runs"]["results"]["test_accuracy"]
    assert written["test_accuracy"] == reports[0]["runs"]["results"]["test_accuracy"]


def test_a_dead_rank_stops_the_run_with_a_distributed_error(tmp_path):
    """Rank 1 exits in the middle of an epoch: rank 0 raises, it does not wait."""
    outputs = launch("die", tmp_path)
    check_failure(tmp_path / "die-rank0.json", outputs[0])


def test_a_hung_rank_times_out_with_a_distributed_error(run):
    """Rank 1 stops answering for longer than the collective timeout (2 s; end of the main launch)."""
    out, _ = run
    check_failure(out / "hang-rank0.json", "")
    assert "imed out" in json.loads((out / "hang-rank0.json").read_text())["message"]


def check_failure(path: Path, output: str) -> None:
    assert path.exists(), output[-3000:]
    outcome = json.loads(path.read_text())
    assert outcome["error"] == "DistributedError", outcome
    assert "collective operation failed" in outcome["message"] and "--resume" in outcome["message"]


# ---------------------------------------------------------------- single-process pieces
@given(n=st.integers(1, 200), world=st.integers(1, 8))
def test_shards_concatenate_to_the_batch_and_weights_give_the_global_mean(n, world):
    values = torch.arange(n, dtype=torch.float64) ** 1.5
    pieces = [distributed.shard(values, r, world) for r in range(world)]
    assert torch.equal(torch.cat(pieces), values)
    assert max(map(len, pieces)) - min(map(len, pieces)) <= 1
    # DDP's average of the weighted local means == the mean over the global batch
    weighted = [distributed.shard_weight(len(p), n, world) * p.mean() for p in pieces if len(p)]
    assert float(sum(weighted) / world) == pytest.approx(float(values.mean()), rel=1e-12)


def test_without_a_process_group_everything_is_one_process(monkeypatch):
    for key in ("WORLD_SIZE", "RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    assert distributed.world() == (0, 1) and distributed.is_rank0()
    assert distributed.init_from_env(torch.device("cpu")) is False
    t = torch.tensor([1.0, 2.0])
    assert distributed.all_reduce_sum(t) is t
    assert distributed.broadcast_string("runs/x") == "runs/x"
    assert distributed.local_device(torch.device("cuda", 1)) == torch.device("cuda", 1)


def test_misconfigured_environment_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(DistributedError, match="torchrun"):
        distributed.init_from_env(torch.device("cpu"))
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(DistributedError, match="not an integer"):
        distributed.launched_world_size()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="LOCAL_RANK"):
        distributed.local_device(torch.device("cuda", 1))


def test_failed_collectives_become_distributed_errors_others_pass():
    with pytest.raises(DistributedError, match="rank 0: a collective operation failed"):
        with distributed.collective_errors():
            raise RuntimeError("[gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:1")
    with pytest.raises(RuntimeError, match="mat1 and mat2"):
        with distributed.collective_errors():
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")
    with pytest.raises(RuntimeError, match="gloo"):
        with distributed.collective_errors(active=False):
            raise RuntimeError("gloo timed out")


def test_convert_sync_batchnorm_shares_parameters_and_keeps_keys():
    torch.manual_seed(0)
    model = W.bn_cnn()
    params = dict(model.named_parameters())
    keys = list(model.state_dict())
    converted = distributed.convert_sync_batchnorm(model)
    assert isinstance(converted[1], distributed.SyncBatchNorm) and isinstance(converted[5], distributed.SyncBatchNorm)
    assert all(p is params[k] for k, p in converted.named_parameters())
    assert list(converted.state_dict()) == keys
    # outside a process group it is ordinary batch norm (oracle: torch's, in a copy of the original)
    torch.manual_seed(0)
    reference = W.bn_cnn()
    x = torch.randn(6, 1, 8, 8)
    assert torch.allclose(converted(x), reference(x), atol=1e-6)
    assert torch.allclose(converted[1].running_var, reference[1].running_var)


def test_convert_sync_batchnorm_refuses_other_batch_norms():
    from descend.nn import BatchNorm2d

    with pytest.raises(ConfigError, match="torch.nn.BatchNorm"):
        distributed.convert_sync_batchnorm(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), BatchNorm2d(2)))
