from __future__ import annotations

import pytest

from descend import config as cfg
from descend.errors import ConfigError


def test_default_is_the_deeper_chapter_6_network_and_nielsen_config_the_books():
    c = cfg.load()
    assert c.model["name"] == "nielsen" and c.model["conv"] == [16, 32, 64] and c.model["hidden"] == [512]
    assert (c.model["kernel_size"], c.model["padding"], c.model["convs_per_pool"]) == (3, 1, 2)
    assert c.model["dropout"] == 0.25 and c.model["activation"] == "relu"
    assert c.data.dataset == "mnist" and c.data.split == "nndl"
    c = cfg.load("nielsen")  # Nielsen's final network, as the book has it (+ batch norm)
    assert c.model["conv"] == [20, 40] and c.model["hidden"] == [1000, 1000] and c.model["dropout"] == 0.5
    assert (c.model["kernel_size"], c.model["padding"], c.model["convs_per_pool"]) == (5, 0, 1)


def test_a_saved_run_config_is_not_merged_into_the_current_default(tmp_path):
    """A run saved when the default was Nielsen's network (no kernel_size/padding/convs_per_pool
    in its [model]) rebuilds that network on resume and evaluate, not today's default."""
    import torch

    from descend import build

    path = tmp_path / "config.toml"
    path.write_text('seed = 3\nrun_dir = ""\ndevice = "cpu"\n[data]\nlimit = 100\n'
                    '[model]\nname = "nielsen"\nconv = [20, 40]\nhidden = [1000, 1000]\n'
                    'dropout = 0.5\n[optimizer]\nname = "sgd"\nlr = 0.1\n[schedule]\nname = "constant"\n'
                    '[train]\nepochs = 12\n')
    c = cfg.load_saved(path, ["train.epochs=13"])
    assert c.model == {"name": "nielsen", "conv": [20, 40], "hidden": [1000, 1000], "dropout": 0.5}
    assert c.seed == 3 and c.train.epochs == 13
    model = build.build_model(c, (1, 28, 28), 10)
    shapes = [tuple(m.weight.shape) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert shapes == [(20, 1, 5, 5), (40, 20, 5, 5)]
    merged = cfg.load(path)  # what a config of one's own means: what differs from the default
    assert merged.model["kernel_size"] == 3 and merged.model["conv"] == [20, 40]
    c = cfg.load(overrides=["train.epochs=2"])
    path.write_text(cfg.to_toml(c))
    assert cfg.load_saved(path) == c


def test_toml_round_trip(tmp_path):
    c = cfg.load(overrides=["train.epochs=3", "optimizer.lr=0.05", "model.hidden=[100]", "data.augment=none"])
    path = tmp_path / "run.toml"
    path.write_text(cfg.to_toml(c))
    assert cfg.load(path) == c


def test_overrides_parse_toml_values_and_bare_words():
    c = cfg.load(overrides=["seed=7", "model.batch_norm=false", "model.activation=tanh", "train.ema_decay=0.99"])
    assert c.seed == 7 and c.model["batch_norm"] is False and c.model["activation"] == "tanh"
    assert c.train.ema_decay == 0.99
    c = cfg.load(overrides=["optimizer=adam", "optimizer.lr=0.001"])
    assert c.optimizer == {"name": "adam", "lr": 0.001}


def test_short_form_names(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('optimizer = "adam"\nschedule = "cosine"\n[model]\nname = "nielsen"\nhidden = [10]\n')
    c = cfg.load(path)
    assert c.optimizer == {"name": "adam"} and c.schedule == {"name": "cosine"}


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.epochz=3", "did you mean 'epochs'"),
        ("trian.epochs=3", "did you mean 'train'"),
        ("train.epochs=three", "must be an integer"),
        ("train.epochs=2.5", "must be an integer"),
        ("train.batch_size=0", "out of range"),
        ("train.ema_decay=1.5", "out of range"),
        ("data.split=random", "choose one of nndl, standard"),
        ("data.augment=true", "must be a string"),
        ("model.activaton=relu", "did you mean 'activation'"),
        ("model.dropout=high", "must be a number"),
        ("model.hidden=100", "must be a list"),
        ("optimizer=adamw2", "unknown optimizer 'adamw2'"),
        ("optimizer.betas2=1", "has no option 'betas2'"),
        ("schedule=zigzag", "unknown schedule"),
        ("model=resnet1000", "unknown model"),
        ("seed", "key=value"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(override, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        cfg.load(overrides=[override])


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        cfg.load(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_text("[train\nepochs = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        cfg.load(tmp_path / "bad.toml")
    (tmp_path / "bad2.toml").write_text("train = 3")
    with pytest.raises(ConfigError, match=r"\[train\] must be a table"):
        cfg.load(tmp_path / "bad2.toml")


def test_device_precision_and_data_parallel_keys():
    c = cfg.load()
    assert c.device == "auto"  # CUDA when present, else the CPU
    assert c.train.amp == "none" and c.train.channels_last == "auto" and c.train.sync_batchnorm is False
    c = cfg.load(overrides=["device=cuda:1", "train.amp=bf16", "train.sync_batchnorm=true",
                            "train.channels_last=off", "train.dist_timeout=60"])
    assert (c.device, c.train.amp, c.train.sync_batchnorm, c.train.channels_last) == ("cuda:1", "bf16", True, "off")
    assert c.train.dist_timeout == 60.0


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("device=gpu", "use auto, cpu, cuda or cuda:N"),
        ("device=cuda:x", "use auto, cpu, cuda or cuda:N"),
        ("device=cpu:0", "use auto, cpu, cuda or cuda:N"),
        ("train.amp=fp8", "choose one of none, bf16, fp16"),
        ("train.channels_last=yes", "choose one of auto, on, off"),
        ("train.sync_batchnorm=1", "must be true or false"),
        ("train.dist_timeout=0", "out of range"),
    ],
)
def test_bad_device_and_precision_values(override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        cfg.load(overrides=[override])


def test_augmentation_options_reach_the_transforms():
    from descend import build
    from descend.data.transforms import AffineElastic, ElasticDistortion, RandomAffine

    c = cfg.load(overrides=["data.augment=affine", "data.affine_rotation=15", "data.affine_scale=0.2",
                            "data.affine_shear=5", "data.max_shift=3"])
    aug = build.build_augment(c, None)
    assert isinstance(aug, RandomAffine)
    assert (aug.degrees, aug.scale, aug.shear, aug.translate) == (15.0, 0.2, 5.0, 3.0)
    c = cfg.load(overrides=["data.augment=elastic", "data.elastic_alpha=20", "data.elastic_sigma=3"])
    aug = build.build_augment(c, None)
    assert isinstance(aug, ElasticDistortion) and (aug.alpha, aug.sigma) == (20.0, 3.0)
    c = cfg.load(overrides=["data.augment=affine+elastic", "data.affine_rotation=15", "data.elastic_sigma=6"])
    aug = build.build_augment(c, None)
    assert isinstance(aug, AffineElastic) and (aug.affine.degrees, aug.elastic.sigma) == (15.0, 6.0)
    with pytest.raises(ConfigError, match="affine_scale"):
        cfg.load(overrides=["data.affine_scale=1.5"])


def test_one_default_the_bundled_file_equals_the_schema_defaults():
    assert cfg.from_dict({}) == cfg.load()


def test_a_file_states_what_differs_from_the_default(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[train]\nepochs = 3\n[data]\nsplit = "standard"\n')
    c = cfg.load(path)
    default = cfg.load()
    assert c.train.epochs == 3 and c.train.batch_size == default.train.batch_size
    assert c.data.split == "standard" and c.data.augment == default.data.augment
    assert c.optimizer == default.optimizer and c.model == default.model
    path.write_text('[optimizer]\nname = "adam"\nlr = 0.001\n')
    assert cfg.load(path).optimizer == {"name": "adam", "lr": 0.001}  # replaced whole, no stray momentum
    path.write_text('[model]\ndropout = 0.25\n[optimizer]\nname = "nesterov-reformulated"\nlr = 0.05\n')
    c = cfg.load(path)  # the default's own class: its options are merged
    assert c.model == {**default.model, "dropout": 0.25}
    assert c.optimizer == {**default.optimizer, "lr": 0.05}


def test_bundled_configs_load_by_name():
    names = cfg.bundled()
    assert {"default", "mnist-fast", "mnist-ensemble"} <= set(names)
    for name in names:
        assert cfg.load(name) == cfg.load(f"{name}.toml")
    with pytest.raises(ConfigError, match="bundled configs: .*mnist-fast"):
        cfg.load("mnist-slow")


def test_bundled_configs_build_their_networks():
    """Every bundled recipe's model options are accepted and give a working MNIST network."""
    import torch

    from descend import build

    for name in cfg.bundled():
        model = build.build_model(cfg.load(name), (1, 28, 28), 10).eval()
        assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10), name


@pytest.mark.parametrize("content, fragment", [
    (b"", "is empty"),
    (b"\n  \n# nothing but a comment\n", "is empty"),
    (b"seed = 1\n\xff\xfe\x00\x01binary", "not UTF-8"),
    ("seed = 1 # caf\u00e9\n".encode("latin-1"), "not UTF-8"),
    ("seed = 1\n".encode("utf-16"), "not UTF-8"),
    (b"\x00\x01\x02\x03" * 8, "not valid TOML"),
    (b"a = " + b"[" * 5000, "not valid TOML"),
])
@pytest.mark.parametrize("saved", [False, True])
def test_empty_binary_and_non_utf8_files_are_refused_naming_the_file(tmp_path, content, fragment, saved):
    path = tmp_path / "config.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=fragment) as info:
        cfg.load_saved(path) if saved else cfg.load(path)
    assert str(path) in str(info.value)


def test_unreadable_files_and_folders_are_refused(tmp_path, monkeypatch):
    path = tmp_path / "config.toml"
    path.write_text("seed = 1\n")

    def denied(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(type(path), "read_bytes", denied)
    with pytest.raises(ConfigError, match="cannot read config file .*Permission denied"):
        cfg.load_saved(path)
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="is a folder"):
        cfg.load(tmp_path)


def test_a_saved_config_missing_a_table_is_refused(tmp_path):
    full = cfg.to_toml(cfg.load(overrides=["data.limit=1000"]))
    path = tmp_path / "config.toml"
    path.write_text(full[:full.index("[data]")])  # the file cut off before its tables
    with pytest.raises(ConfigError, match="lacks data, model, optimizer, schedule, train"):
        cfg.load_saved(path)
    path.write_text(full)
    assert cfg.load_saved(path).data.limit == 1000


@pytest.mark.parametrize("override, fragment", [
    ("seed=99999999999999999999", "seed = 99999999999999999999 does not fit in a 64-bit integer"),
    ("seed=-99999999999999999999", "seed = -99999999999999999999 does not fit"),
    (f"seed={cfg.SEED_MAX + 1}", "seed = 134217728 is out of range"),
    ("seed=-1", "seed = -1 is out of range"),
    ("train.epochs=1000000000000", "train.epochs = 1000000000000 is out of range"),
    ("train.batch_size=0", "train.batch_size = 0 is out of range"),
    ("data.limit=9223372036854775808", "data.limit = 9223372036854775808 does not fit"),
    ("model.hidden=[100, 1000000000000000000000]", r"model.hidden\[1\] = 1000000000000000000000 does not fit"),
    ("optimizer.lr=nan", "optimizer.lr = nan is not a number"),
    ("train.ema_decay=nan", "train.ema_decay = nan is not a number"),
    ("optimizer.lr=inf", "optimizer.lr = inf must be a finite number"),
    ("model.dropout=-inf", "model.dropout = -inf must be a finite number"),
    ("train.ema_decay=inf", "out of range"),
    ("seed=nan", "seed = nan is not a number"),
    ("seed=inf", "seed must be an integer"),
])
def test_out_of_range_numbers_name_the_key(override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        cfg.load(overrides=[override])


def test_numbers_in_files_are_checked_like_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("seed = 9223372036854775807\n")  # TOML's largest integer: a valid integer, not a valid seed
    with pytest.raises(ConfigError, match="seed = 9223372036854775807 is out of range"):
        cfg.load(path)
    path.write_text("[optimizer]\nlr = nan\n")
    with pytest.raises(ConfigError, match="optimizer.lr = nan"):
        cfg.load(path)


def test_the_largest_seed_seeds_every_generator_a_run_makes():
    """Every ensemble member (seed + 999), epoch (up to 100,000) and data-parallel rank."""
    import torch

    from descend.train import distributed
    from descend.train.trainer import epoch_generator

    c = cfg.load(overrides=[f"seed={cfg.SEED_MAX}"])
    seed = c.seed + cfg.RANGES["train.ensemble"][1] - 1
    epoch = cfg.RANGES["train.epochs"][1]
    for stream in range(3):
        epoch_generator(seed, epoch, stream)
    torch.manual_seed(distributed.rank_seed(seed, epoch, 1 << 16))
    torch.manual_seed(seed)
    torch.manual_seed(0)
