"""The classification architectures of Deep Learning fig. 9.11."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from descend import nn as dnn
from descend.errors import ConfigError
from descend.models import MODELS
from descend.models.book_cnns import AdaptiveCNN, FlattenCNN, GapCNN, LocalCNN

NAMES = ["cnn-flatten", "cnn-adaptive", "cnn-local", "cnn-gap", "lenet5"]


@pytest.mark.parametrize("name", NAMES)
def test_registered_and_built_from_data_shape(name):
    model = MODELS[name](in_channels=3, image_size=32, num_classes=7)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 7)


def test_flatten_cnn_reshapes_feature_maps_to_a_vector():
    m = FlattenCNN(channels=(8, 16))
    assert m.classifier[1].in_features == 16 * 7 * 7


def test_adaptive_cnn_has_576_units_for_any_input_size():
    m = AdaptiveCNN(channels=(32, 64))
    assert m.classifier[1].in_features == 576                   # fig. 9.11 centre: 3x3x64
    for side in (20, 28, 45):
        assert m(torch.rand(1, 1, side, side + 3)).shape == (1, 10)


@settings(max_examples=8, deadline=None)
@given(h=st.integers(12, 40), w=st.integers(12, 40))
def test_gap_cnn_averages_one_map_per_class(h, w):
    torch.manual_seed(0)
    m = GapCNN(channels=(4, 4))
    x = torch.rand(2, 1, h, w)
    maps = m.features[:-1](x)
    assert maps.shape[1] == 10                                   # one feature map per class
    torch.testing.assert_close(m(x), maps.mean(dim=(2, 3)))


def test_local_cnn_uses_an_unshared_layer():
    m = LocalCNN()
    assert any(isinstance(layer, dnn.LocallyConnected2d) for layer in m.modules())
    with pytest.raises(ConfigError):
        LocalCNN(image_size=8)
    with pytest.raises(ConfigError):
        FlattenCNN(channels=(4,))
