from __future__ import annotations

import numpy as np
import pytest
import torch

from descend.data import load_dataset, load_npz
from descend.errors import ConfigError, DataError, DataNotFound


def test_digits_offline_split_and_scaling():
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits as oracle

    splits = load_dataset("digits")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (1197, 300, 300)
    assert splits.input_shape == (1, 8, 8) and splits.num_classes == 10
    all_x = torch.cat([splits.train.x, splits.val.x, splits.test.x]).flatten(1)
    ref = torch.from_numpy(oracle().data.astype(np.float32) / 16)
    # the same 1,797 images, reordered
    assert torch.equal(all_x.sum(0), ref.sum(0)) or torch.allclose(all_x.sum(0), ref.sum(0))
    assert sorted(map(tuple, all_x.tolist())) == sorted(map(tuple, ref.tolist()))


def test_limits_keep_the_first_examples():
    full = load_dataset("digits")
    small = load_dataset("digits", limit=100, eval_limit=20)
    assert len(small.train) == 100 and len(small.val) == 20 and len(small.test) == 20
    assert torch.equal(small.train.x, full.train.x[:100])


def test_npz_any_arrays(tmp_path):
    path = tmp_path / "set.npz"
    np.savez(path, x_train=np.random.randint(0, 255, (20, 5, 5), dtype=np.uint8), y_train=np.arange(20) % 3,
             x_test=np.random.rand(6, 5, 5).astype(np.float32), y_test=np.arange(6) % 3)
    splits = load_dataset("npz", path=path)
    assert splits.train.x.shape == (20, 1, 5, 5) and splits.test.x.shape == (6, 1, 5, 5)
    assert splits.val is None and splits.num_classes == 3
    assert float(splits.train.x.max()) <= 1.0


@pytest.mark.parametrize(
    "arrays, message",
    [
        (dict(x_train=np.zeros((2, 3, 3)), y_train=np.zeros(2, int)), "lacks x_test, y_test"),
        (dict(x_train=np.zeros((2, 3, 3)), y_train=np.zeros(2), x_test=np.zeros((1, 3, 3)), y_test=np.zeros(1, int)), "integer"),
        (dict(x_train=np.zeros((2, 3, 3), dtype="U1"), y_train=np.zeros(2, int), x_test=np.zeros((1, 3, 3)), y_test=np.zeros(1, int)), "dtype"),
        (dict(x_train=np.zeros((2, 3, 3)), y_train=np.zeros(3, int), x_test=np.zeros((1, 3, 3)), y_test=np.zeros(1, int)), "differ in length"),
        (dict(x_train=np.zeros((2, 3, 3)), y_train=np.zeros(2, int), x_test=np.zeros((1, 3, 3)), y_test=np.zeros(1, int), x_val=np.zeros((1, 3, 3))), "x_val, y_val"),
    ],
)
def test_bad_npz_files_raise_data_errors(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message):
        load_npz(path)


def test_npz_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, x_train=np.array([object()], dtype=object), y_train=np.zeros(1, int),
             x_test=np.zeros((1, 2, 2)), y_test=np.zeros(1, int))
    with pytest.raises(DataError, match="numeric"):
        load_npz(path)


def test_unknown_names_and_missing_files():
    with pytest.raises(ConfigError, match="available"):
        load_dataset("cifar-1000")
    with pytest.raises(ConfigError, match="data.path"):
        load_dataset("npz")
    with pytest.raises(DataNotFound):
        load_npz("/nonexistent/file.npz")


def _npz(path, **override):
    arrays = dict(x_train=np.zeros((4, 3, 3), np.float32), y_train=np.array([0, 1, 2, 1]),
                  x_test=np.zeros((2, 3, 3), np.float32), y_test=np.array([0, 2]))
    arrays.update(override)
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    "override, message",
    [
        (dict(y_test=np.array([0, -1])), "negative class indices"),
        (dict(x_train=np.array([np.zeros((3, 3)), np.full((3, 3), np.inf), np.zeros((3, 3)), np.zeros((3, 3))], np.float32)),
         "9 NaN or infinite"),
        (dict(x_test=np.zeros((2, 4, 4), np.float32)), "every split must hold inputs of one shape"),
        (dict(y_train=np.array([0.0, 1.0, 2.0, 1.0])), "integer"),
    ],
)
def test_npz_content_is_checked(tmp_path, override, message):
    with pytest.raises(DataError, match=message):
        load_npz(_npz(tmp_path / "set.npz", **override))


def test_npz_headers_announcing_more_than_the_file_holds_are_refused(tmp_path):
    import zipfile

    path = _npz(tmp_path / "set.npz")
    # Rewrite x_train's .npy header to announce 20,000,000 x 784 float32 (58 GiB).
    with zipfile.ZipFile(path) as z:
        entries = {name: z.read(name) for name in z.namelist()}
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1,), np.float32))
    header["shape"] = (20_000_000, 784)
    buf = __import__("io").BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    entries["x_train.npy"] = buf.getvalue() + b"\x00" * 64
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    with pytest.raises(DataError, match="announces shape"):
        load_npz(path)
    assert load_npz(_npz(tmp_path / "good.npz", x_train=np.ones((4, 3, 3), np.float32))).train.x.sum() == 36
