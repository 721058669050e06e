"""Every way of training goes through the Trainer's one step, and every feature of that step
is *in effect* for every plugin: autocast (the dtype is observed inside the forward pass),
the fp16 gradient scaler (its scaling is applied), clipping (the optimizer only ever sees
clipped gradients), the non-finite guard (a poisoned step changes nothing) and gradient
averaging across 2 gloo processes. Cells that cannot apply are refused with a ConfigError.
"""

from __future__ import annotations

import ast
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from descend.data.tensors import Splits, TensorPair
from descend.errors import ConfigError
from descend.optim.clipping import _after_gradients
from descend.optim.nesterov import NesterovMomentum
from descend.train import Continuation, ContinuationSchedule, Trainer, TruncatedBPTT
from descend.train.pretraining import HintStep

SRC = Path(__file__).resolve().parents[2] / "src" / "descend"


class Poison(torch.autograd.Function):
    """Identity forward; NaN gradient backward (a finite loss whose gradient is not)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return g * float("nan")


class ProbeMLP(nn.Module):
    """Records the autocast state of every forward pass; can poison its gradients."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
        self.seen: list = []
        self.poison = False

    def forward(self, x):
        self.seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        out = self.net(x).float()
        return Poison.apply(out) if self.poison else out


class ProbeRNN(nn.Module):
    """h_t = tanh(W x_t + U h_{t-1}), o_t = V h_t (sec. 10.2, eq. 10.8-10.10); forward(x, state)."""

    def __init__(self) -> None:
        super().__init__()
        self.w, self.u, self.v = nn.Linear(6, 8), nn.Linear(8, 8, bias=False), nn.Linear(8, 3)
        self.seen: list = []
        self.poison = False

    def forward(self, x, state=None):
        self.seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        h = torch.zeros(x.shape[0], 8) if state is None else state
        outs = []
        for t in range(x.shape[1]):
            h = torch.tanh(self.w(x[:, t]) + self.u(h.to(x.dtype)))
            outs.append(self.v(h))
        out = torch.stack(outs, 2).float()  # (N, K, T) for cross-entropy over time
        return (Poison.apply(out) if self.poison else out), h


def images(n=16):
    g = torch.Generator().manual_seed(0)
    return Splits(TensorPair(torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)))


def sequences(n=16, T=6):
    g = torch.Generator().manual_seed(1)
    return Splits(TensorPair(torch.randn(n, T, 6, generator=g), torch.randint(0, 3, (n, T), generator=g)))


def teacher():
    torch.manual_seed(5)
    return nn.Linear(6, 3).requires_grad_(False)


# name -> (model, data, batch_step, updates per batch)
PLUGINS = {
    "plain": (ProbeMLP, images, lambda: None, 1),
    "tbptt": (ProbeRNN, sequences, lambda: TruncatedBPTT(2), 3),
    "continuation-parameters": (ProbeMLP, images, lambda: Continuation(ContinuationSchedule([0.1, 0.0]), samples=2), 1),
    "continuation-inputs": (ProbeMLP, images, lambda: Continuation(ContinuationSchedule([0.1, 0.0]), target="inputs"), 1),
    "hints": (ProbeMLP, images, lambda: HintStep(teacher()), 1),
}


def make(plugin, closure=False, **kw):
    make_model, make_data, make_step, _ = PLUGINS[plugin]
    torch.manual_seed(0)
    model = make_model()
    if closure:
        optimizer = NesterovMomentum(model.parameters(), lr=0.1, momentum=0.5)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return Trainer(model, optimizer, make_data(), epochs=1, batch_size=16, quiet=True, checkpoint=False,
                   batch_step=make_step(), **kw)


CELLS = [(p, c) for p in PLUGINS for c in (False, True)]
IDS = [f"{p}{'-closure' if c else ''}" for p, c in CELLS]


@pytest.mark.parametrize("plugin,closure", CELLS, ids=IDS)
@pytest.mark.parametrize("amp,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_autocast_is_in_effect_inside_forward(plugin, closure, amp, dtype):
    if closure and amp == "fp16":
        with pytest.raises(ConfigError, match="gradient scaler"):
            make(plugin, closure, amp=amp)
        return
    trainer = make(plugin, closure, amp=amp)
    trainer.fit()
    seen = trainer.model.seen
    assert seen and all(d == dtype for d in seen), seen


@pytest.mark.parametrize("plugin", PLUGINS)
def test_fp16_gradient_scaler_scales_every_update(plugin):
    trainer = make(plugin, amp="fp16")
    scaled = []
    original = trainer.scaler.scale
    trainer.scaler.scale = lambda loss: (scaled.append(float(loss.detach())), original(loss))[1]
    stepped = []
    original_step = trainer.scaler.step
    trainer.scaler.step = lambda opt: (stepped.append(1), original_step(opt))[1]
    trainer.fit()
    assert len(scaled) == len(stepped) == PLUGINS[plugin][3]
    assert trainer.scaler.get_scale() > 1  # a real scale, not the identity


@pytest.mark.parametrize("plugin,closure", CELLS, ids=IDS)
def test_clipping_applies_before_every_step(plugin, closure):
    max_norm = 1e-4
    trainer = make(plugin, closure, clip_norm=max_norm)
    norms = []

    def record():
        grads = [p.grad for g in trainer.optimizer.param_groups for p in g["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))

    trainer.optimizer.register_step_pre_hook(_after_gradients(record))  # runs after the Trainer's clipping
    unclipped = make(plugin, closure)
    raw = []
    unclipped.optimizer.register_step_pre_hook(_after_gradients(
        lambda: raw.append(float(torch.linalg.vector_norm(torch.cat(
            [p.grad.flatten() for g in unclipped.optimizer.param_groups for p in g["params"] if p.grad is not None]))))))
    trainer.fit()
    unclipped.fit()
    assert len(norms) >= PLUGINS[plugin][3]
    assert max(raw) > 10 * max_norm  # clipping had something to do
    assert all(n <= max_norm * (1 + 1e-4) for n in norms), norms


@pytest.mark.parametrize("plugin,closure", CELLS, ids=IDS)
def test_nonfinite_gradients_skip_the_step(plugin, closure):
    trainer = make(plugin, closure, nonfinite="skip")
    trainer.model.poison = True
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.fit()
    after = list(trainer.model.parameters())
    assert trainer.skipped_steps >= PLUGINS[plugin][3]
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert all(not trainer.optimizer.state[p] or all(torch.isfinite(v).all() for v in trainer.optimizer.state[p].values()
                                                    if torch.is_tensor(v)) for p in after)


@pytest.mark.parametrize("plugin", PLUGINS)
def test_nonfinite_gradients_raise_when_asked(plugin):
    from descend.errors import Diverged

    trainer = make(plugin, nonfinite="raise")
    trainer.model.poison = True
    with pytest.raises(Diverged, match="Non-finite gradient"):
        trainer.fit()


def test_bad_step_options_are_refused():
    with pytest.raises(ConfigError, match="clip_norm"):
        make("plain", clip_norm=-1.0)
    with pytest.raises(ConfigError, match="nonfinite"):
        make("plain", nonfinite="ignore")


# ------------------------------------------------------------------ data parallelism
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


WORKER = r'''
import json, sys, torch
sys.path.insert(0, sys.argv[1])
import test_one_step as T
from descend.train import distributed
assert distributed.init_from_env(torch.device("cpu"))
out = {}
for plugin in T.PLUGINS:
    trainer = T.make(plugin)
    trainer.fit()
    out[plugin] = [p.detach().flatten().tolist() for p in trainer.model.parameters()]
    assert trainer.world_size == 2
json.dump(out, open(sys.argv[2], "w"))
del trainer  # its DDP wrapper holds the process group: let teardown destroy it with the group
distributed.teardown()
'''


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="this torch build has no torch.distributed gloo backend")
def test_gradients_are_averaged_across_two_processes(tmp_path):
    """Every plugin on 2 gloo processes, each holding half of the batch: the processes end
    with the same parameters, and (where the update is a deterministic function of the whole
    batch) with those of one process training on the whole batch."""
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE="2",
               LOCAL_WORLD_SIZE="2", OMP_NUM_THREADS="1")
    if Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    procs = [subprocess.Popen([sys.executable, str(script), str(Path(__file__).parent), str(tmp_path / f"rank{r}.json")],
                              env=dict(env, RANK=str(r), LOCAL_RANK=str(r)), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in range(2)]
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for plugin in PLUGINS:
        a, b = ranks[0][plugin], ranks[1][plugin]
        assert a == b, f"{plugin}: the two processes' parameters differ (gradients not averaged)"
        trainer = make(plugin)
        trainer.fit()
        alone = [p.detach().flatten().tolist() for p in trainer.model.parameters()]
        if plugin == "continuation-inputs":  # each process draws noise for its own half
            assert any(abs(u - v) > 1e-6 for x, y in zip(a, alone) for u, v in zip(x, y))
            continue
        for x, y in zip(a, alone):
            assert torch.allclose(torch.tensor(x), torch.tensor(y), atol=1e-6), plugin


# ------------------------------------------------------------------ the one place
ALLOWED = {
    "train/trainer.py",  # the one step
    "bench.py",  # hand-written plain-PyTorch baselines that descend is timed against
    "experiments/saddle_point.py",  # closed-form demonstrations on a 2-D function, no Trainer
    "experiments/sparse_coding.py",
    "experiments/init_depth.py",  # measures gradients, takes no step
    "optim/line_search.py",  # builds a closure for the caller's optimizer
}


def test_no_other_file_calls_backward_or_step():
    """``backward()`` and ``optimizer.step()`` are called only by the Trainer's one step
    (and by demonstrations and baselines that never train through the Trainer)."""
    offenders = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel in ALLOWED:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = ast.unparse(node.func.value)
                if node.func.attr == "backward" or (node.func.attr == "step" and "optim" in owner.lower()):
                    offenders.append(f"{rel}:{node.lineno}: {ast.unparse(node)}")
    assert not offenders, "\n".join(offenders)
