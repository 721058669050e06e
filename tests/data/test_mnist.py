from __future__ import annotations

import gzip
import hashlib

import numpy as np
import pytest
import torch

from descend.data import load_dataset, load_mnist_pkl, write_idx
from descend.data import download
from descend.data.download import BUNDLED, RemoteFile, fetch, locate
from descend.data.mnist import IDX_DATASETS, _read_pair
from descend.errors import DataError, DataNotFound

NAMES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


def make_fake_set(folder, n_train=12, n_test=4, value=0):
    """A tiny MNIST-format set whose pixels all equal ``value`` (to tell copies apart)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / NAMES[0], np.full((n_train, 28, 28), value, np.uint8))
    write_idx(folder / NAMES[1], np.arange(n_train, dtype=np.uint8) % 10)
    write_idx(folder / NAMES[2], np.full((n_test, 28, 28), value, np.uint8))
    write_idx(folder / NAMES[3], np.arange(n_test, dtype=np.uint8) % 10)


@pytest.fixture(autouse=True)
def _fresh_parse_cache():
    _read_pair.cache_clear()
    yield
    _read_pair.cache_clear()


def test_search_order_data_dir_then_env_then_cache(tmp_path, monkeypatch):
    make_fake_set(tmp_path / "given" / "mnist", value=1)
    make_fake_set(tmp_path / "env" / "mnist", value=2)
    make_fake_set(tmp_path / "cache" / "mnist", value=3)
    monkeypatch.setenv("DESCEND_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("DESCEND_CACHE", str(tmp_path / "cache"))

    def pixel(**kw):  # fake files: verify=False accepts content that is not MNIST's
        return int(load_dataset("mnist", split="standard", verify=False, **kw).train.x.flatten()[0] * 255)

    assert pixel(data_dir=tmp_path / "given") == 1
    assert pixel() == 2
    monkeypatch.delenv("DESCEND_DATA")
    assert pixel() == 3


def test_files_directly_in_data_dir_are_found(tmp_path):
    make_fake_set(tmp_path, value=9)
    splits = load_dataset("mnist", split="standard", data_dir=tmp_path, verify=False)
    assert len(splits.train) == 12 and splits.val is None and len(splits.test) == 4


def test_missing_data_says_where_it_looked_and_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.delenv("DESCEND_DATA", raising=False)
    with pytest.raises(DataNotFound) as info:
        load_dataset("fashion-mnist", data_dir=tmp_path / "nowhere")
    message = str(info.value)
    assert str(tmp_path / "nowhere" / "fashion-mnist") in message
    assert "DESCEND_DATA" in message and "--data-dir" in message and "disabled" in message


def test_download_verifies_the_checksum_and_writes_atomically(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    payload = gzip.compress(b"\x00\x00\x08\x01" + np.asarray([3], ">u4").tobytes() + b"abc")
    (mirror / "labels.gz").write_bytes(payload)
    good = RemoteFile("labels.gz", hashlib.md5(payload).hexdigest(), (mirror.as_uri(),))
    path = fetch(good, tmp_path / "cache")
    assert path.read_bytes() == payload

    bad = RemoteFile("other.gz", "0" * 32, (mirror.as_uri(),))
    (mirror / "other.gz").write_bytes(payload)
    with pytest.raises(DataNotFound, match="checksum mismatch"):
        fetch(bad, tmp_path / "cache2")
    assert not any((tmp_path / "cache2").iterdir())  # nothing half-written is left


def test_locate_downloads_missing_sets_into_the_cache(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    make_fake_set(mirror, value=4)
    files = [RemoteFile(n, download.md5sum(mirror / n), (mirror.as_uri(),)) for n in NAMES]
    monkeypatch.setenv("DESCEND_OFFLINE", "0")
    monkeypatch.setenv("DESCEND_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DESCEND_DATA", raising=False)
    paths = locate("toy", files, data_dir=None, download=True)
    assert all(p.parent == tmp_path / "cache" / "toy" for p in paths.values())


def test_nndl_split_is_first_50000_then_last_10000(mnist_dir):
    nndl = load_dataset("mnist", split="nndl", data_dir=mnist_dir)
    standard = load_dataset("mnist", split="standard", data_dir=mnist_dir)
    assert (len(nndl.train), len(nndl.val), len(nndl.test)) == (50_000, 10_000, 10_000)
    assert (len(standard.train), standard.val, len(standard.test)) == (60_000, None, 10_000)
    assert torch.equal(nndl.train.x, standard.train.x[:50_000])
    assert torch.equal(nndl.val.y, standard.train.y[50_000:])
    assert nndl.train.x.dtype == torch.float32 and nndl.train.x.shape[1:] == (1, 28, 28)
    assert float(nndl.train.x.min()) == 0.0 and float(nndl.train.x.max()) == 1.0


def test_nielsens_pickle_holds_the_same_digits_as_the_idx_files(mnist_dir):
    pkl = load_mnist_pkl(mnist_dir / "mnist" / "mnist.pkl.gz")
    idx = load_dataset("mnist", split="nndl", data_dir=mnist_dir)
    for a, b in ((pkl.train, idx.train), (pkl.val, idx.val), (pkl.test, idx.test)):
        assert torch.equal(a.y, b.y)
        # pickle: pixel / 256; IDX loader: pixel / 255
        assert torch.equal((a.x * 256).round().to(torch.uint8), (b.x * 255).round().to(torch.uint8))


def test_fashion_and_kmnist_read_by_the_same_reader(tmp_path):
    for name in ("fashion-mnist", "kmnist"):
        make_fake_set(tmp_path / IDX_DATASETS[name].folder, value=7)
        splits = load_dataset(name, split="standard", data_dir=tmp_path)
        assert len(splits.classes) == 10 and splits.train.x.shape == (12, 1, 28, 28)


def test_mismatched_image_and_label_files_are_reported(tmp_path):
    make_fake_set(tmp_path)
    write_idx(tmp_path / NAMES[1], np.zeros(5, np.uint8))
    with pytest.raises(DataError, match="do not belong together"):
        load_dataset("mnist", data_dir=tmp_path, split="standard", verify=False)


def _copy_bundled(folder, change_pixel=False):
    """The bundled MNIST files in ``folder``; optionally with one test pixel changed."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        data = (BUNDLED / "mnist" / name).read_bytes()
        if change_pixel and name == "t10k-images-idx3-ubyte.gz":
            raw = bytearray(gzip.decompress(data))
            raw[16 + 100] ^= 0xFF
            data = gzip.compress(bytes(raw), mtime=0)
        (folder / name).write_bytes(data)


def test_a_modified_mnist_file_is_refused_unless_allowed(tmp_path, monkeypatch):
    _copy_bundled(tmp_path / "mnist", change_pixel=True)
    monkeypatch.delenv("DESCEND_ALLOW_MODIFIED_DATA", raising=False)
    with pytest.raises(DataError) as info:
        load_dataset("mnist", data_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz") in message
    assert "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7" in message
    assert "verify=False" in message and "DESCEND_ALLOW_MODIFIED_DATA=1" in message

    original = load_dataset("mnist", split="standard")  # the bundled copy
    for allowed in (dict(verify=False), dict()):
        if not allowed:
            monkeypatch.setenv("DESCEND_ALLOW_MODIFIED_DATA", "1")
        changed = load_dataset("mnist", split="standard", data_dir=tmp_path, **allowed)
        difference = (changed.test.x != original.test.x).flatten().nonzero().flatten().tolist()
        assert difference == [100]
        _read_pair.cache_clear()


def test_the_cache_comes_before_the_bundled_copy(tmp_path, monkeypatch):
    monkeypatch.delenv("DESCEND_DATA", raising=False)
    monkeypatch.setenv("DESCEND_CACHE", str(tmp_path / "cache"))
    assert download.search_dirs("mnist") == [tmp_path / "cache" / "mnist", BUNDLED / "mnist"]
    make_fake_set(tmp_path / "cache" / "mnist", value=5)
    assert int(load_dataset("mnist", split="standard", verify=False).train.x.flatten()[0] * 255) == 5
    with pytest.raises(DataError, match="not the original file"):
        load_dataset("mnist", split="standard")  # a cached copy is verified like any other


@pytest.mark.parametrize(
    "labels, images, message",
    [
        (np.array([0, 1, 2, 10] * 3, np.uint8), None, "labels 0..10"),
        (np.arange(12, dtype=np.float32), None, "integer labels"),
        (None, np.zeros((12, 28, 28), np.float32), "uint8 images"),
    ],
)
def test_bad_labels_and_images_are_reported(tmp_path, labels, images, message):
    make_fake_set(tmp_path)
    if labels is not None:
        write_idx(tmp_path / NAMES[1], labels)
    if images is not None:
        write_idx(tmp_path / NAMES[0], images)
    with pytest.raises(DataError, match=message):
        load_dataset("mnist", data_dir=tmp_path, split="standard", verify=False)


def test_train_and_test_images_of_different_sizes_are_reported(tmp_path):
    make_fake_set(tmp_path)
    write_idx(tmp_path / NAMES[2], np.zeros((4, 20, 20), np.uint8))
    with pytest.raises(DataError, match="do not belong together"):
        load_dataset("fashion-mnist", data_dir=tmp_path, split="standard")
