"""Learning-rate schedules (eq. 8.14 and torch wrappers) and the momentum schedule."""

import inspect
import math

import pytest
import torch

from descend.errors import ConfigError
from descend.optim import OPTIMIZERS, SCHEDULES, AdaGrad, Adam, LinearDecay, Momentum, MomentumSchedule, WarmupCosine
from descend.optim.schedules import Plateau
from reference import first_order as ref


def _optimizer(cls=Momentum, lrs=(0.1, 0.02), **kwargs):
    groups = [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": lr} for lr in lrs]
    return cls(groups, **kwargs)


def _lrs_over(scheduler, optimizer, steps):
    out = []
    for _ in range(steps):
        out.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        if hasattr(scheduler, "monitor"):  # plateau: stepped with the metric it watches, here one that stalls
            scheduler.step(1.0)
        else:
            scheduler.step()
    return out


def test_linear_decay_is_eq_8_14_then_constant():
    opt = _optimizer()
    sched = LinearDecay(opt, tau=10, final_fraction=0.01)
    for k, lrs in enumerate(_lrs_over(sched, opt, 16)):
        for lr, eps0 in zip(lrs, (0.1, 0.02)):
            assert lr == pytest.approx(ref.linear_decay(k, eps0, 0.01 * eps0, 10), rel=1e-12)


def test_linear_decay_with_warmup():
    opt = _optimizer(lrs=(0.1,))
    sched = LinearDecay(opt, tau=5, final_fraction=0.1, warmup_steps=4)
    lrs = [lr[0] for lr in _lrs_over(sched, opt, 12)]
    assert lrs[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    assert lrs[4:] == pytest.approx([ref.linear_decay(k, 0.1, 0.01, 5) for k in range(8)])


def test_linear_decay_resumes_from_state_dict():
    opt = _optimizer()
    sched = LinearDecay(opt, tau=10)
    _lrs_over(sched, opt, 4)
    opt_state, sched_state = opt.state_dict(), sched.state_dict()
    expected = _lrs_over(sched, opt, 4)
    opt2 = _optimizer()
    sched2 = LinearDecay(opt2, tau=10)
    opt2.load_state_dict(opt_state)
    sched2.load_state_dict(sched_state)
    assert _lrs_over(sched2, opt2, 4) == expected


def test_warmup_cosine():
    opt = _optimizer(lrs=(0.2,))
    sched = WarmupCosine(opt, warmup_steps=3, total_steps=13, min_lr=0.01)
    lrs = [lr[0] for lr in _lrs_over(sched, opt, 15)]
    expected = [0.2 * (k + 1) / 3 for k in range(3)]
    expected += [0.01 + 0.19 * (1 + math.cos(math.pi * min(1, (k - 3) / 10))) / 2 for k in range(3, 15)]
    assert lrs == pytest.approx(expected)


def test_invalid_schedule_options():
    with pytest.raises(ConfigError, match="tau must be an integer >= 1"):
        LinearDecay(_optimizer(), tau=0)
    with pytest.raises(ConfigError, match=r"final_fraction must be in \[0, 1\]"):
        LinearDecay(_optimizer(), tau=5, final_fraction=2.0)
    with pytest.raises(ConfigError, match="warmup_steps must be < total_steps"):
        WarmupCosine(_optimizer(), warmup_steps=10, total_steps=10)


def test_momentum_schedule_raises_alpha_from_half_to_nine_tenths():
    opt = _optimizer(Momentum, momentum=0.0)
    sched = MomentumSchedule(opt, start=0.5, end=0.9, steps=4)
    seen = []
    for _ in range(7):
        seen.append(opt.param_groups[0]["momentum"])
        sched.step()
    assert seen == pytest.approx([0.5, 0.6, 0.7, 0.8, 0.9, 0.9, 0.9])
    state = sched.state_dict()
    fresh = MomentumSchedule(opt, start=0.5, end=0.9, steps=4)
    assert opt.param_groups[1]["momentum"] == 0.5
    fresh.load_state_dict(state)
    assert opt.param_groups[1]["momentum"] == pytest.approx(0.9)


def test_momentum_schedule_drives_adam_rho1_and_rejects_optimizers_without_momentum():
    opt = _optimizer(Adam)
    MomentumSchedule(opt, start=0.5, end=0.9, steps=10)
    assert opt.param_groups[0]["betas"] == (0.5, 0.999)
    with pytest.raises(ConfigError, match="no momentum coefficient"):
        MomentumSchedule(_optimizer(AdaGrad))


def test_schedule_config_signatures():
    for name, make in SCHEDULES.items():
        sig = inspect.signature(make)
        params = sig.parameters
        assert list(params)[0] == "optimizer", name
        for key in ("total_steps", "steps_per_epoch"):
            assert params[key].kind is inspect.Parameter.KEYWORD_ONLY, (name, key)
        assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()), name
        assert make.__doc__, name


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam", "adagrad"])
def test_every_schedule_runs_with_every_kind_of_optimizer(schedule, optimizer):
    opt = _optimizer(OPTIMIZERS[optimizer], lrs=(0.1,))
    sched = SCHEDULES[schedule](opt, total_steps=20, steps_per_epoch=5)
    assert isinstance(sched, torch.optim.lr_scheduler.LRScheduler)
    lrs = [lr[0] for lr in _lrs_over(sched, opt, 20)]
    assert all(lr >= 0 and math.isfinite(lr) for lr in lrs)
    if schedule == "constant":
        assert lrs == [0.1] * 20
    else:
        assert min(lrs) < 0.1


def test_step_and_exponential_count_epochs():
    opt = _optimizer(lrs=(1.0,))
    lrs = [lr[0] for lr in _lrs_over(SCHEDULES["step"](opt, total_steps=30, steps_per_epoch=5, step_epochs=2, gamma=0.5), opt, 30)]
    assert lrs[9] == 1.0 and lrs[10] == pytest.approx(0.5) and lrs[20] == pytest.approx(0.25)
    opt = _optimizer(lrs=(1.0,))
    lrs = [lr[0] for lr in _lrs_over(SCHEDULES["exponential"](opt, total_steps=30, steps_per_epoch=5, gamma=0.5), opt, 11)]
    assert lrs[5] == pytest.approx(0.5) and lrs[10] == pytest.approx(0.25)


def test_linear_decay_config_defaults_to_the_whole_run():
    opt = _optimizer(lrs=(1.0,))
    lrs = [lr[0] for lr in _lrs_over(SCHEDULES["linear-decay"](opt, total_steps=10, steps_per_epoch=5), opt, 11)]
    assert lrs[10] == pytest.approx(0.01) and lrs[5] == pytest.approx(ref.linear_decay(5, 1.0, 0.01, 10))


# ----------------------------------------------------------------------------- plateau
METRIC = [1.0, 0.9, 0.95, 0.92, 0.91, 0.9, 0.85, 0.86, 0.87, 0.88, 0.89, 0.7, 0.71, 0.72, 0.73, 0.74, 0.75]


def test_plateau_by_hand():
    # patience 2, factor 0.5, mode min, threshold 0: the rate halves at the 3rd epoch in a
    # row without a new minimum (epochs 5, 10 and 15; 0.9 at epoch 6 only ties the best).
    opt = _optimizer(lrs=(1.0,))
    sched = SCHEDULES["plateau"](opt, total_steps=100, steps_per_epoch=10, factor=0.5, patience=2, threshold=0.0)
    assert (sched.interval, sched.monitor, sched.mode) == ("epoch", "val_loss", "min")
    lrs = []
    for m in METRIC:
        sched.step(m)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == [1.0] * 4 + [0.5] * 5 + [0.25] * 5 + [0.125] * 3


@pytest.mark.parametrize("options", [
    {},
    {"factor": 0.5, "patience": 1},
    {"factor": 0.3, "patience": 0, "cooldown": 2, "min_lr": 0.01},
    {"monitor": "val_accuracy", "patience": 1, "threshold": 0.05},
    {"mode": "max", "patience": 2, "threshold_mode": "abs", "threshold": 0.01},
])
def test_plateau_matches_torch_reduce_lr_on_plateau(options):
    mode = options.get("mode") or ("min" if "loss" in options.get("monitor", "val_loss") else "max")
    torch_options = {k: v for k, v in options.items() if k != "monitor"}
    torch_options["mode"] = mode
    ours_opt, torch_opt = _optimizer(), _optimizer()
    ours = Plateau(ours_opt, **options)
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(torch_opt, **torch_options)
    for m in METRIC * 2:
        ours.step(m)
        theirs.step(m)
        assert [g["lr"] for g in ours_opt.param_groups] == [g["lr"] for g in torch_opt.param_groups]


def test_plateau_resumes_from_a_checkpoint(tmp_path):
    from descend.train.checkpoint import load_state, save_state

    opt = _optimizer()
    sched = Plateau(opt, factor=0.5, patience=1)
    for m in METRIC[:7]:
        sched.step(m)
    save_state(tmp_path / "c.safetensors", {"scheduler": sched.state_dict(), "optimizer": opt.state_dict()})
    state = load_state(tmp_path / "c.safetensors")
    opt2 = _optimizer()
    opt2.load_state_dict(state["optimizer"])
    resumed = Plateau(opt2, factor=0.5, patience=1)
    resumed.load_state_dict(state["scheduler"])
    for m in METRIC[7:]:
        sched.step(m)
        resumed.step(m)
        assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]


def test_plateau_stepped_without_its_metric_says_how_to_step_it():
    with pytest.raises(ConfigError, match=r"scheduler.step\(metrics\['val_loss'\]\)"):
        Plateau(_optimizer()).step()


@pytest.mark.parametrize("bad", [{"factor": 1.0}, {"patience": -1}, {"mode": "up"}, {"threshold_mode": "x"},
                                 {"monitor": ""}, {"min_lr": -1.0}, {"threshold": -0.1}])
def test_plateau_rejects_bad_options(bad):
    with pytest.raises(ConfigError):
        Plateau(_optimizer(), **bad)
