"""Devices and precision of the Trainer: autocast, gradient scaling, channels-last,
CUDA with pinned-memory transfers.

Mixed precision is exercised on the CPU (torch's CPU autocast runs the same code path:
bf16, and fp16 with a CPU ``GradScaler``); the CUDA tests run only where a GPU is present.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from descend.data import Splits, TensorPair
from descend.errors import ConfigError
from descend.train import Trainer

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")


def data(n: int = 96, dtype=torch.float32) -> Splits:
    g = torch.Generator().manual_seed(3)
    teacher = torch.randn(64, 4, generator=g)

    def pair(m: int) -> TensorPair:
        x = torch.randn(m, 1, 8, 8, generator=g)
        return TensorPair(x.to(dtype), (x.reshape(m, -1) @ teacher).argmax(1))

    return Splits(pair(n), pair(32), pair(32))


def cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 4))


def trainer(model=None, **kw) -> Trainer:
    model = model or cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return Trainer(model, opt, kw.pop("splits", None) or data(), epochs=kw.pop("epochs", 3), batch_size=16, seed=1,
                   quiet=True, **kw)


class DtypeProbe:
    """Records the dtype of the last Linear layer's output in training and in evaluation."""

    def __init__(self, model: nn.Module) -> None:
        self.train, self.eval = set(), set()
        model[-1].register_forward_hook(lambda m, i, o: (self.train if m.training else self.eval).add(o.dtype))


@pytest.mark.parametrize("amp, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_amp_runs_the_training_forward_in_low_precision_and_learns(amp, dtype):
    t = trainer(amp=amp)
    probe = DtypeProbe(t.model)
    history = t.fit()
    assert probe.train == {dtype}  # autocast: the matmul ran in low precision
    assert probe.eval == {torch.float32}  # evaluation stays in full precision
    assert all(p.dtype == torch.float32 for p in t.model.parameters())  # master weights
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert (t.scaler is not None) == (amp == "fp16")


def test_amp_fp16_gradients_are_unscaled_before_the_step():
    """One fp16 step with the grad scaler == the same step computed by hand without scaling."""
    t = trainer(amp="fp16", epochs=1)
    x, y = t.data.train.x[:16], t.data.train.y[:16]
    reference = cnn()
    with torch.autocast("cpu", dtype=torch.float16):
        loss = F.cross_entropy(reference(x), y)
    loss.backward()
    t.step(x, y)
    for p, q in zip(t.model.parameters(), reference.parameters()):
        assert torch.allclose(p, q.detach() - 0.1 * q.grad, atol=1e-3)
    assert t.scaler.get_scale() == 65536.0  # finite gradients: the scale is kept


def test_amp_fp16_scaler_state_is_checkpointed_and_resume_is_exact(tmp_path):
    straight = trainer(amp="fp16", run_dir=tmp_path / "a", epochs=2)
    straight.fit()
    first = trainer(amp="fp16", run_dir=tmp_path / "b", epochs=2)
    first.epochs = 1
    first.fit()
    second = trainer(amp="fp16", run_dir=tmp_path / "b", epochs=2)
    second.scaler = torch.amp.GradScaler("cpu", init_scale=1234.0)  # replaced by the checkpoint's scale
    second.resume()
    assert second.scaler.get_scale() == 65536.0
    second.fit()
    for a, b in zip(straight.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)


def test_amp_options_are_checked():
    with pytest.raises(ConfigError, match="amp must be"):
        trainer(amp="fp8")
    model = cnn()
    from descend.optim import LBFGS

    with pytest.raises(ConfigError, match="bf16"):
        Trainer(model, LBFGS(model.parameters()), data(), amp="fp16", quiet=True)


def test_channels_last_stores_weights_and_batches_channels_last_same_numbers():
    seen = []
    plain, last = trainer(), trainer(channels_last=True)
    last.model[0].register_forward_pre_hook(lambda m, i: seen.append(i[0].is_contiguous(memory_format=torch.channels_last)))
    assert last.model[0].weight.is_contiguous(memory_format=torch.channels_last)
    h_plain, h_last = plain.fit(), last.fit()
    assert seen and all(seen)
    assert [h["train_loss"] for h in h_last] == pytest.approx([h["train_loss"] for h in h_plain], rel=1e-5)


# ---------------------------------------------------------------- CUDA (skipped without a GPU)
@CUDA
@pytest.mark.parametrize("amp", ["none", "bf16", "fp16"])
def test_cuda_training_with_pinned_transfers_and_amp_matches_the_cpu(amp):
    """CPU-resident data reaches the GPU through pinned memory; the run learns what the CPU run learns."""
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    cpu = trainer(epochs=2).fit()
    gpu_trainer = trainer(device="cuda", amp=amp, channels_last=True, epochs=2)
    gpu = gpu_trainer.fit()
    assert next(gpu_trainer.model.parameters()).is_cuda
    tolerance = 1e-4 if amp == "none" else 5e-2
    assert gpu[-1]["train_loss"] == pytest.approx(cpu[-1]["train_loss"], rel=tolerance)
    assert gpu[-1]["train_loss"] < gpu[0]["train_loss"]


@CUDA
def test_cuda_checkpoint_resumes_on_the_cpu(tmp_path):
    gpu = trainer(device="cuda", amp="fp16", run_dir=tmp_path, epochs=1)
    gpu.fit()
    cpu = trainer(run_dir=tmp_path, epochs=2)
    cpu.resume()
    assert cpu.fit()[-1]["epoch"] == 2


@CUDA
def test_auto_device_picks_the_gpu():
    from descend.runs import resolve_device

    assert resolve_device("auto").type == "cuda"
