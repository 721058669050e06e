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
