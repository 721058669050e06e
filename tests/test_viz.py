"""Pictures of kernels and feature maps (Deep Learning sec. 9.10) and of learning curves."""

from __future__ import annotations

import matplotlib.image
import pytest
import torch

from descend import nn as dnn
from descend import viz
from descend.errors import ConfigError
from descend.models import LeNet5


def test_kernels_of_every_conv_like_layer():
    torch.manual_seed(0)
    tiled = dnn.TiledConv2d(2, 3, 3, tiles=(2, 2))
    k = viz.kernels(tiled)
    assert k.shape == (12, 2, 3, 3)
    torch.testing.assert_close(k[1], tiled.weight[0, :, :, :, 0, 1].detach())  # (out 0, tile (0, 1))
    sep = dnn.SeparableConv2d(2, 3, 5, rank=2)
    torch.testing.assert_close(viz.kernels(sep), sep.kernel().detach())
    lc = dnn.LocallyConnected2d(2, 3, 6, 3)
    torch.testing.assert_close(viz.kernels(lc), lc.weight[:, 2, 2].detach())
    maxout = dnn.MaxoutConv2d(2, 3, 3, pieces=2)
    assert viz.kernels(maxout).shape == (6, 2, 3, 3)
    assert viz.kernels(torch.nn.Conv2d(1, 4, 5)).shape == (4, 1, 5, 5)
    with pytest.raises(ConfigError):
        viz.kernels(torch.nn.ReLU())
    with pytest.raises(ConfigError):
        viz.kernels(dnn.TiledConv1d(1, 2, 3, 2))


def test_conv_layers_lists_named_layers_in_order():
    assert list(viz.conv_layers(LeNet5())) == ["features.0", "features.4", "features.8"]


def test_feature_maps_are_the_layer_output(tmp_path):
    torch.manual_seed(1)
    net = LeNet5()
    x = torch.rand(1, 28, 28)
    maps = viz.feature_maps(net, "features.0", x)
    conv = net.features[0]
    torch.testing.assert_close(maps, conv(x[None])[0].detach())
    assert net.training                                           # mode restored


def test_pngs_are_written_atomically_and_readable(tmp_path):
    torch.manual_seed(2)
    net = LeNet5()
    paths = [viz.save_filters(net.features[0], tmp_path / "c1.png"),
             viz.save_filters(net.features[4], tmp_path / "c3.png", per_channel=True),
             viz.save_filters(torch.randn(4, 3, 5, 5), tmp_path / "rgb.png"),
             viz.save_feature_maps(net, "features.4", torch.rand(1, 28, 28), tmp_path / "maps.png")]
    for p in paths:
        image = matplotlib.image.imread(p)
        assert image.ndim == 3 and image.shape[0] > 20 and image.shape[1] > 20
    assert sorted(f.name for f in tmp_path.iterdir()) == ["c1.png", "c3.png", "maps.png", "rgb.png"]
    with pytest.raises(ConfigError, match="no layer"):
        viz.save_feature_maps(net, "features.99", torch.rand(1, 28, 28), tmp_path / "x.png")


def test_each_filter_has_its_own_symmetric_diverging_scale():
    w = torch.zeros(3, 1, 2, 2)
    w[0, 0] = torch.tensor([[1.0, -0.5], [0.25, 0.0]])
    w[1, 0] = torch.tensor([[-0.01, 0.002], [0.0, 0.0]])  # small kernels are as visible as large ones
    fig = viz.filters_figure(w, title="first layer")
    images = [ax.images[0] for ax in fig.axes]
    clims = [c for im in images for c in im.get_clim()]
    assert clims == pytest.approx([-1.0, 1.0, -0.01, 0.01, -1.0, 1.0])  # an all-zero kernel: +-1
    assert all(im.get_cmap().name == "RdBu_r" and im.get_interpolation() == "nearest" for im in images)
    assert [ax.get_title() for ax in fig.axes] == ["0", "1", "2"]
    assert fig.texts[0].get_text().startswith("first layer\n3 kernels of 2\u00d72")


def test_filters_of_descend_conv_layers_are_drawn(tmp_path):
    torch.manual_seed(3)
    for layer in (dnn.Conv2d(1, 4, 3), dnn.LocallyConnected2d(1, 4, 6, 3), dnn.TiledConv2d(1, 2, 3, tiles=(2, 2))):
        fig = viz.filters_figure(layer)
        assert len(fig.axes) == len(viz.kernels(layer))
    assert "centre position" in viz.filters_figure(dnn.LocallyConnected2d(1, 4, 6, 3)).texts[0].get_text()


def test_learning_curves_have_whole_epoch_ticks_and_legends(tmp_path):
    from descend import plots

    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e, "val_accuracy": 0.5 + e / 10} for e in (1, 2, 3)]
    fig = plots.learning_curves_figure(history)
    ax_loss, ax_acc = fig.axes
    for ax in (ax_loss, ax_acc):
        ax.set_xlim(0.8, 3.2)
        ticks = [t for t in ax.get_xticks() if 0.8 <= t <= 3.2]
        assert ticks == [1, 2, 3]
    assert [t.get_text() for t in ax_loss.get_legend().get_texts()] == ["training", "validation"]
    assert [t.get_text() for t in ax_acc.get_legend().get_texts()] == ["validation"]
    path = plots.learning_curves(history, tmp_path / "lc.png")
    assert matplotlib.image.imread(path).ndim == 3
