"""Config keys of the heuristics (init, preprocessing, augmentation, samplers, loss, TTA) and their wiring."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from descend import config as cfg
from descend import build, runs
from descend.data import RandomShift, load_dataset
from descend.data.preprocessing import Preprocess
from descend.data.transforms import Compose, ElasticDistortion, RandomAffine, RandomFlip
from descend.errors import ConfigError, DataError
from descend.losses import quadratic
from descend.train.bagging import Bootstrap
from descend.train.curriculum import ClassBalanced, DeterministicCurriculum, Emphasis, StochasticCurriculum
from descend.train import Trainer, load_weights
from descend.train.trainer import WEIGHTS

SMALL = ["data.dataset=digits", "data.augment=none", "model.conv=[4]", "model.convs_per_pool=1", "model.hidden=[16]",
         "model.batch_norm=false", "model.dropout=0.0", "train.epochs=1", "train.batch_size=32", "quiet=true", "device=cpu"]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("data.preprocess=whiten", "choose one of none, center, standardize, pca, zca"),
        ("data.whiten_eps=-1", "out of range"),
        ("data.augment=rotate", "choose one of none, shift, affine, elastic"),
        ("data.flip=yes", "must be true or false"),
        ("data.color_jitter=-0.1", "out of range"),
        ("data.tta=twenty-crop", "choose one of none, flip, five-crop, ten-crop"),
        ("train.loss=hinge", "choose one of cross-entropy, sigmoid-cross-entropy, quadratic"),
        ("train.decay_biases=0", "must be true or false"),
        ("train.curriculum=random", "choose one of none, deterministic, stochastic"),
        ("train.curriculum_ramp=-1", "out of range"),
        ("train.emphasis=outliers", "choose one of none, loss, misclassified, rare-class"),
        ("train.emphasis_floor=0", "out of range"),
        ("train.bagging=1", "must be true or false"),
        ("init=xavier", "init.scheme = 'xavier' is not allowed"),
        ("init.gain=-1", "out of range"),
        ("init.sparse_k=0", "out of range"),
        ("init.nonlinearity=swish", "is not allowed"),
        ("init.output_bias=prior", "choose one of zero, marginals"),
        ("init.lsuv_batch=1", "out of range"),
        ("init.sheme=he", "did you mean 'scheme'"),
    ],
)
def test_new_keys_are_validated(override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        cfg.load(overrides=[override])


def test_init_short_form_and_toml_round_trip(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('init = "orthogonal"\n[data]\npreprocess = "zca"\n[train]\nloss = "quadratic"\n')
    c = cfg.load(path)
    assert c.init.scheme == "orthogonal" and c.data.preprocess == "zca" and c.train.loss == "quadratic"
    c = cfg.load(overrides=["init=sparse", "init.sparse_k=5", "train.emphasis=loss", "data.tta=ten-crop"])
    assert c.init.scheme == "sparse" and c.init.sparse_k == 5
    path.write_text(cfg.to_toml(c))
    assert cfg.load(path) == c


def test_defaults_change_nothing(digits):
    c = cfg.load(overrides=SMALL)
    assert build.build_augment(c, digits) is None
    assert build.build_sampler(c, digits, 0) == (None, [])
    model = build.build_model(c, digits.input_shape, digits.num_classes)
    assert not isinstance(model, torch.nn.Sequential) or not isinstance(model[0], Preprocess)
    torch.manual_seed(0)
    a = build.build_model(c, digits.input_shape, digits.num_classes)
    torch.manual_seed(0)
    b = build.build_model(c, digits.input_shape, digits.num_classes)
    build.prepare_model(c, b, digits)  # init "default": the layers' own initialization, untouched
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_preprocessing_is_fitted_on_training_data_and_saved_with_the_model(digits, tmp_path):
    c = cfg.load(overrides=SMALL + ["data.preprocess=standardize", f"run_dir={tmp_path / 'run'}"])
    trainer = build.build_trainer(c, digits, None, 0)
    pre = trainer.model[0]
    assert isinstance(pre, Preprocess)
    np.testing.assert_allclose(pre.mean.numpy(), digits.train.x.reshape(len(digits.train), -1).mean(0).numpy(),
                               rtol=1e-5, atol=1e-6)
    # What runs.train writes, without its pictures (matplotlib is slow to start).
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / runs.CONFIG).write_text(cfg.to_toml(c))
    (run_dir / runs.META).write_text(json.dumps({"input_shape": list(digits.input_shape), "num_classes": 10,
                                                 "classes": list(digits.classes)}))
    runs.train_one(c, digits, run_dir, 0, pictures=False)
    model, _ = runs.load_model(run_dir)
    trained = runs.load_trained(c, digits, run_dir).model
    assert torch.equal(model[0].scale, trained[0].scale) and bool(model[0].fitted)
    with torch.no_grad():
        torch.testing.assert_close(model(digits.test.x[:5]), trained.eval()(digits.test.x[:5]))


def test_init_from_config(digits):
    c = cfg.load(overrides=SMALL + ["init=orthogonal", "init.hidden_bias=0.1", "init.output_bias=marginals"])
    trainer = build.build_trainer(c, digits, None, 0)
    layers = [m for m in trainer.model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    hidden = layers[1].weight.detach().double()
    gain2 = 2.0  # relu, NielsenNet's default activation
    rows, cols = hidden.shape
    gram = hidden @ hidden.T if rows <= cols else hidden.T @ hidden
    torch.testing.assert_close(gram, gain2 * torch.eye(min(rows, cols), dtype=torch.float64), atol=1e-5, rtol=0)
    assert torch.all(layers[0].bias == 0.1)
    counts = torch.bincount(digits.train.y, minlength=10).double() + 1
    torch.testing.assert_close(layers[-1].bias.detach().double().softmax(0), counts / counts.sum())
    c = cfg.load(overrides=SMALL + ["init=lsuv"])
    trainer = build.build_trainer(c, digits, None, 0)
    out = trainer.model.features[0](digits.train.x[:256])
    assert float(out.detach().var()) == pytest.approx(1.0, abs=0.1)  # LSUV's tolerance, on another batch


def test_l2_without_biases_via_param_groups(digits):
    c = cfg.load(overrides=SMALL + ["optimizer=momentum", "optimizer.weight_decay=0.01", "train.decay_biases=false"])
    optimizer = build.build_trainer(c, digits, None, 0).optimizer
    for group in optimizer.param_groups:
        names = group["param_names"]
        expected = 0.0 if all(n.endswith("bias") for n in names) else 0.01
        assert group["weight_decay"] == expected
    assert {g["weight_decay"] for g in optimizer.param_groups} == {0.0, 0.01}


def test_augmentation_sampler_and_loss_from_config(digits, tmp_path):
    make = lambda *o: cfg.load(overrides=SMALL + list(o))  # noqa: E731
    assert isinstance(build.build_augment(make("data.augment=shift"), digits), RandomShift)
    assert isinstance(build.build_augment(make("data.augment=affine"), digits), RandomAffine)
    both = build.build_augment(make("data.augment=elastic", "data.flip=true"), digits)
    assert isinstance(both, Compose) and isinstance(both.augmentations[0], ElasticDistortion)
    assert isinstance(both.augmentations[1], RandomFlip)
    with pytest.raises(ConfigError, match="RGB"):
        build.build_augment(make("data.color_jitter=0.1"), digits)
    assert isinstance(build.build_sampler(make("train.bagging=true"), digits, 3)[0], Bootstrap)
    assert isinstance(build.build_sampler(make("train.emphasis=rare-class"), digits, 0)[0], ClassBalanced)
    sampler, callbacks = build.build_sampler(make("train.emphasis=misclassified"), digits, 0)
    assert isinstance(sampler, Emphasis) and callbacks == [sampler]
    scores = np.arange(len(digits.train), dtype=np.float64)
    np.save(tmp_path / "scores.npy", scores)
    cur = build.build_sampler(make("train.curriculum=deterministic", f"train.curriculum_scores={tmp_path / 'scores.npy'}"),
                                   digits, 0)[0]
    assert isinstance(cur, DeterministicCurriculum) and torch.equal(cur.scores, torch.from_numpy(scores))
    assert isinstance(build.build_sampler(make("train.curriculum=stochastic"), digits, 0)[0], StochasticCurriculum)
    np.save(tmp_path / "short.npy", scores[:10])
    with pytest.raises(DataError, match="one number per training example"):
        build.build_sampler(make("train.curriculum=deterministic", f"train.curriculum_scores={tmp_path / 'short.npy'}"),
                                 digits, 0)
    with pytest.raises(ConfigError, match="use only one"):
        build.build_sampler(make("train.bagging=true", "train.emphasis=loss"), digits, 0)
    assert build.build_loss(make("train.loss=quadratic")) is quadratic
    trainer = build.build_trainer(make("train.loss=quadratic", "train.bagging=true"), digits, None, 0)
    assert trainer.loss_fn is quadratic and isinstance(trainer.sampler, Bootstrap)
    assert build.build_trainer(make("train.eval_every=0"), digits, None, 0).eval_every == 0
    with pytest.raises(ConfigError, match="set train.eval_every = 1"):
        build.build_trainer(make("train.early_stopping=3", "train.eval_every=2"), digits, None, 0)


def test_bagged_members_get_different_resamples(digits):
    c = cfg.load(overrides=SMALL + ["train.bagging=true"])
    a = build.build_trainer(c, digits, None, 0)
    b = build.build_trainer(c, digits, None, 1)
    ia, ib = a.sampler(a, 1, torch.Generator()), b.sampler(b, 1, torch.Generator())
    assert not torch.equal(ia.sort().values, ib.sort().values)


def test_tta_results(digits):
    c = cfg.load(overrides=SMALL + ["data.tta=five-crop"])
    trainer = build.build_trainer(c, digits, None, 0)
    results = build.tta_results(c, trainer.model, digits)
    assert set(results) == {"val_accuracy_tta", "test_accuracy_tta"}
    assert all(0.0 <= v <= 1.0 for v in results.values())


def test_amp_auto_is_bf16_exactly_where_the_device_has_it_in_hardware(digits, monkeypatch):
    c = cfg.load(overrides=SMALL + ["train.amp=auto"])
    for native, expected in ((True, "bf16"), (False, "none")):
        monkeypatch.setattr(build, "native_bf16", lambda device, native=native: native)
        assert build.build_trainer(c, digits, None, 0).amp == expected
    monkeypatch.undo()
    # Explicit choices pass through whatever the hardware.
    assert build.resolve_amp("bf16", torch.device("cpu")) == "bf16"
    assert build.resolve_amp("none", torch.device("cpu")) == "none"
    assert build.native_bf16(torch.device("meta")) is False
    # On this CPU: oneDNN's own bf16 query decides.
    expected = torch.ops.mkldnn._is_mkldnn_bf16_supported() if torch.backends.mkldnn.is_available() else False
    assert build.native_bf16(torch.device("cpu")) == bool(expected)


@pytest.fixture(scope="module")
def small_mnist():
    config = cfg.load(overrides=["data.limit=256", "data.eval_limit=64", "data.augment=none"])
    return build.load_data(config)


@pytest.mark.parametrize("amp", ["none", "bf16", "fp16"])
@pytest.mark.parametrize("name", sorted(__import__("descend.models", fromlist=["MODELS"]).MODELS))
def test_every_model_takes_a_training_step_in_every_precision(small_mnist, name, amp):
    """Every model of descend.models.MODELS, built from a config as ``descend train --set
    model=NAME --amp AMP`` builds it, takes its first step on MNIST, with a finite loss."""
    config = cfg.load(overrides=[f"model={name}", f"train.amp={amp}", "data.augment=none", "train.batch_size=16",
                                 "quiet=true"])
    trainer = build.build_trainer(config, small_mnist, None, 0, data_parallel=False)
    loss = trainer.try_first_batch()
    assert math.isfinite(loss) and loss > 0


@pytest.mark.parametrize("extra, reevaluates", [
    ([], False),  # the last epoch evaluated the final weights: its numbers are reported
    (["train.average=ema"], False),  # ... the averaged weights, which the model keeps
    # with the weights frozen, epoch 2 does not improve on epoch 1, whose weights early stopping restores
    (["train.epochs=4", "train.early_stopping=1", "optimizer.lr=0.0"], True),
])
def test_train_one_reports_the_final_weights_without_evaluating_twice(digits, tmp_path, monkeypatch, extra, reevaluates):
    """The results' validation and test numbers are those of the weights the run ends with
    (checked by evaluating the saved weights afresh), computed once when the last epoch
    already scored those weights."""
    c = cfg.load(overrides=SMALL + ["train.epochs=2", "train.evaluate_test=true"] + extra)
    calls = []
    original = Trainer.evaluate

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "evaluate", counting)
    results = runs.train_one(c, digits, tmp_path / "run", 0, pictures=False)
    during_fit = 2 * results["epochs"]  # val and test after each epoch
    restored = results["last_epoch"].get("best_epoch", results["epochs"]) != results["epochs"]
    assert restored == reevaluates
    assert len(calls) == during_fit + (2 if restored else 0)
    fresh = build.build_trainer(c, digits, None, 0)
    load_weights(tmp_path / "run" / WEIGHTS, fresh.model)
    monkeypatch.setattr(Trainer, "evaluate", original)
    for name in ("val", "test"):
        r = fresh.evaluate(getattr(digits, name))
        assert results[f"{name}_accuracy"] == pytest.approx(r["accuracy"], abs=1e-12)
        assert results[f"{name}_loss"] == pytest.approx(r["loss"], rel=1e-5)
