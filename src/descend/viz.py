"""Pictures of what a convolutional layer has learned (SPEC C11; Deep Learning sec. 9.10).

"In an artificial neural network, we can just display an image of the convolution
kernel to see what the corresponding channel of a convolutional layer responds to."
(sec. 9.10); Nielsen ch. 6 shows the 20 learned 5x5 feature maps of his network.

    conv_layers(model)                  the named layers that have a kernel to show
    kernels(layer)                      a layer's kernels as (out, in, kh, kw)
    save_filters(layer_or_weight, path) a grid of kernels as PNG
    feature_maps(model, layer, x)       a layer's output for an input (a forward hook)
    save_feature_maps(model, layer, x, path)

Works for any conv-like layer: ``torch.nn.Conv2d``, ``descend.nn.Conv2d``,
``PartiallyConnectedConv2d``, ``TiledConv2d`` (one tile per kernel set),
``LocallyConnected2d`` (the kernels at the centre position), ``SeparableConv2d``,
``FFTConv2d``, ``MaxoutConv2d``. PNGs are drawn with matplotlib's Agg backend (no screen
needed) and written atomically (a temporary file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor, nn

from descend.errors import ConfigError, ShapeError
from descend.plots import figure as _figure
from descend.plots import save as _save


def kernels(layer: nn.Module | Tensor) -> Tensor:
    """The kernels of a conv-like layer as an (out, in, kh, kw) tensor (detached, CPU)."""
    if isinstance(layer, Tensor):
        w = layer
    else:
        from descend.nn.efficient import SeparableConv2d
        from descend.nn.local import (
            LocallyConnected1d,
            LocallyConnected2d,
            PartiallyConnectedConv2d,
            TiledConv1d,
            TiledConv2d,
        )
        from descend.nn.pooling import MaxoutConv2d

        if isinstance(layer, (LocallyConnected1d, TiledConv1d)):
            raise ConfigError(f"{type(layer).__name__} has 1D kernels; only 2D kernels are drawn")
        if isinstance(layer, MaxoutConv2d):
            w = layer.conv.weight
        elif isinstance(layer, SeparableConv2d):
            w = layer.kernel()
        elif isinstance(layer, PartiallyConnectedConv2d):
            w = layer.dense_weight()
        elif isinstance(layer, TiledConv2d):
            # (O, C, kh, kw, th, tw) -> one kernel stack per tile: (O * th * tw, C, kh, kw)
            w = layer.weight.permute(0, 4, 5, 1, 2, 3).flatten(0, 2)
        elif isinstance(layer, LocallyConnected2d):
            oh, ow = layer.output_size
            w = layer.weight[:, oh // 2, ow // 2]
        elif isinstance(getattr(layer, "weight", None), Tensor):
            w = layer.weight
        else:
            raise ConfigError(f"{type(layer).__name__} has no convolution kernel to draw")
    w = w.detach().float().cpu()
    if w.dim() != 4:
        raise ShapeError(f"kernels must be (out, in, kh, kw), got shape {tuple(w.shape)}")
    return w


def conv_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Named sub-modules with 2D kernels (what ``save_filters`` can draw), in order."""
    found = {}
    for name, module in model.named_modules():
        if name and not any(name.startswith(prev + ".") for prev in found):
            try:
                kernels(module)
            except (ConfigError, ShapeError):
                continue
            found[name] = module
    return found


def _resolve(model: nn.Module, layer: str | nn.Module) -> nn.Module:
    if isinstance(layer, nn.Module):
        return layer
    modules = dict(model.named_modules())
    if layer not in modules:
        raise ConfigError(f"model has no layer {layer!r}; conv layers: {', '.join(conv_layers(model)) or '(none)'}")
    return modules[layer]


def save_filters(layer: nn.Module | Tensor, path: str | Path, title: str = "filters",
                 per_channel: bool = False, max_tiles: int = 256) -> Path:
    """Draw a layer's kernels as a grid of tiles and write a PNG.

    One tile per output channel: RGB when the layer has 3 input channels, else the mean
    over input channels; ``per_channel=True`` draws one row per output channel and one
    column per input channel instead. Each tile is scaled to its own range (gray = 0 is
    not kept), so the pattern, not the size, is visible.
    """
    w = kernels(layer)
    out_ch, in_ch = w.shape[:2]
    if per_channel:
        tiles = [w[o, c] for o in range(out_ch) for c in range(in_ch)][:max_tiles]
        cols = in_ch if in_ch <= 16 else 16
    elif in_ch == 3:
        tiles = [w[o].permute(1, 2, 0) for o in range(out_ch)][:max_tiles]
        cols = min(10, len(tiles))
    else:
        tiles = [w[o].mean(dim=0) for o in range(out_ch)][:max_tiles]
        cols = min(10, len(tiles))
    rows = math.ceil(len(tiles) / cols)
    fig = _figure(cols * 0.9, rows * 0.9 + 0.4)
    fig.subplots_adjust(top=1 - 0.4 / (rows * 0.9 + 0.4), bottom=0.0, left=0.0, right=1.0)
    for i, tile in enumerate(tiles):
        ax = fig.add_subplot(rows, cols, i + 1)
        lo, hi = tile.min(), tile.max()
        ax.imshow(((tile - lo) / (hi - lo + 1e-12)).numpy(), cmap=None if tile.dim() == 3 else "gray",
                  interpolation="nearest")
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


@torch.no_grad()
def feature_maps(model: nn.Module, layer: str | nn.Module, x: Tensor) -> Tensor:
    """The output of ``layer`` (a module or its name in ``model``) when ``model`` sees ``x``.

    x: one image (C, H, W) or a batch; returns (channels, H', W') for the first example.
    The model is run in eval mode (and restored).
    """
    module = _resolve(model, layer)
    captured: list[Tensor] = []
    handle = module.register_forward_hook(lambda m, i, out: captured.append(out))
    was_training = model.training
    model.eval()
    try:
        model(x if x.dim() == 4 else x.unsqueeze(0))
    finally:
        handle.remove()
        model.train(was_training)
    if not captured:
        raise ConfigError(f"layer {layer!r} was not used in the model's forward pass")
    out = captured[0]
    if isinstance(out, (list, tuple)):
        out = out[-1]
    if out.dim() != 4:
        raise ShapeError(f"layer {layer!r} outputs shape {tuple(out.shape)}, not feature maps (N, C, H, W)")
    return out[0].detach().float().cpu()


def save_feature_maps(model: nn.Module, layer: str | nn.Module, x: Tensor, path: str | Path,
                      title: str | None = None, max_maps: int = 64) -> Path:
    """Draw the feature maps a layer produces for one input (and the input itself)."""
    maps = feature_maps(model, layer, x)[:max_maps]
    image = (x if x.dim() == 3 else x[0]).detach().float().cpu()
    cols = min(8, len(maps) + 1)
    rows = math.ceil((len(maps) + 1) / cols)
    fig = _figure(cols * 1.2, rows * 1.2 + 0.4)
    fig.subplots_adjust(top=1 - 0.5 / (rows * 1.2 + 0.4))
    ax = fig.add_subplot(rows, cols, 1)
    ax.imshow(image.mean(dim=0).numpy() if image.shape[0] != 3 else image.permute(1, 2, 0).numpy(),
              cmap="gray" if image.shape[0] != 3 else None)
    ax.set_title("input", fontsize=7)
    ax.axis("off")
    for i, fmap in enumerate(maps):
        ax = fig.add_subplot(rows, cols, i + 2)
        ax.imshow(fmap.numpy(), cmap="viridis", interpolation="nearest")
        ax.set_title(str(i), fontsize=7)
        ax.axis("off")
    name = layer if isinstance(layer, str) else type(layer).__name__
    fig.suptitle(title or f"feature maps of {name}", fontsize=10)
    return _save(fig, path)
