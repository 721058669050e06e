"""Pictures of what a convolutional layer has learned (Deep Learning sec. 9.10).

"In an artificial neural network, we can just display an image of the convolution
kernel to see what the corresponding channel of a convolutional layer responds to."
(sec. 9.10); Nielsen ch. 6 shows the 20 learned 5x5 feature maps of his network.

    conv_layers(model)                  the named layers that have a kernel to show
    kernels(layer)                      a layer's kernels as (out, in, kh, kw)
    filters_figure(layer_or_weight)     a grid of kernels as a matplotlib Figure
    save_filters(layer_or_weight, path) ... written as PNG
    feature_maps(model, layer, x)       a layer's output for an input (a forward hook)
    save_feature_maps(model, layer, x, path)

Works for any conv-like layer: ``torch.nn.Conv2d``, ``descend.nn.Conv2d``,
``PartiallyConnectedConv2d``, ``TiledConv2d`` (one tile per kernel set),
``LocallyConnected2d`` (the kernels at the centre position), ``SeparableConv2d``,
``FFTConv2d``, ``MaxoutConv2d`` (its inner convolution). PNGs are drawn with matplotlib's Agg backend (no screen
needed) and written atomically (a temporary file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor, nn

from descend.errors import ConfigError, ShapeError
from descend.nn.capabilities import is_image_convolution
from descend.nn.capabilities import kernels as layer_kernels
from descend.plots import figure as _figure
from descend.plots import save as _save


def kernels(layer: nn.Module | Tensor) -> Tensor:
    """The kernels of a 2-D convolution layer (or a tensor) as (out, in, kh, kw), detached, on the CPU.

    Any layer that declares its kernels (:mod:`descend.nn.capabilities`) is drawn: descend's
    convolution variants as well as ``torch.nn.Conv2d``."""
    if isinstance(layer, Tensor):
        w = layer
    elif is_image_convolution(layer):
        w = layer_kernels(layer)
    else:
        raise ConfigError(f"{type(layer).__name__} has no 2-D convolution kernels to draw")
    w = w.detach().float().cpu()
    if w.dim() != 4:
        raise ShapeError(f"kernels must be (out, in, kh, kw), got shape {tuple(w.shape)}")
    return w


def conv_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Named sub-modules with 2D kernels (what ``save_filters`` can draw), in order."""
    found = {}
    for name, module in model.named_modules():
        if name and is_image_convolution(module) and not any(name.startswith(prev + ".") for prev in found):
            found[name] = module
    return found


def _resolve(model: nn.Module, layer: str | nn.Module) -> nn.Module:
    if isinstance(layer, nn.Module):
        return layer
    modules = dict(model.named_modules())
    if layer not in modules:
        raise ConfigError(f"model has no layer {layer!r}; conv layers: {', '.join(conv_layers(model)) or '(none)'}")
    return modules[layer]


def filters_figure(layer: nn.Module | Tensor, title: str = "filters", per_channel: bool = False,
                   max_tiles: int = 256):
    """A layer's kernels as a grid of tiles, one per output channel, numbered.

    Each tile is drawn with a diverging colour map centred on zero (red > 0, blue < 0,
    white = 0) on its own symmetric scale, +-max|w| of that kernel, so the sign pattern
    of a small kernel is as visible as a large one's; pixels are shown as blocks (nearest
    neighbour). With several input channels a tile is the mean over them, unless
    ``per_channel=True`` (one row per output channel, one column per input channel);
    with 3 input channels a tile is the RGB kernel, rescaled to [0, 1].
    """
    w = kernels(layer)
    out_ch, in_ch = w.shape[:2]
    if per_channel:
        tiles = [w[o, c] for o in range(out_ch) for c in range(in_ch)][:max_tiles]
        labels = [f"{o}:{c}" for o in range(out_ch) for c in range(in_ch)][:max_tiles]
        cols = in_ch if in_ch <= 16 else 16
    else:
        tiles = [w[o].permute(1, 2, 0) if in_ch == 3 else w[o].mean(dim=0) for o in range(out_ch)][:max_tiles]
        labels = [str(o) for o in range(len(tiles))]
        cols = min(10, len(tiles))
    rows = math.ceil(len(tiles) / cols)
    tile_in, header = 1.0, 0.7
    fig = _figure(cols * tile_in, rows * tile_in + header)
    fig.subplots_adjust(top=1 - header / (rows * tile_in + header), bottom=0.02, left=0.01, right=0.99,
                        hspace=0.35, wspace=0.1)
    for i, (tile, label) in enumerate(zip(tiles, labels)):
        ax = fig.add_subplot(rows, cols, i + 1)
        if tile.dim() == 3:  # RGB: no sign to show, stretch to [0, 1]
            lo, hi = tile.min(), tile.max()
            ax.imshow(((tile - lo) / (hi - lo + 1e-12)).numpy(), interpolation="nearest")
        else:
            m = float(tile.abs().max()) or 1.0
            ax.imshow(tile.numpy(), cmap="RdBu_r", vmin=-m, vmax=m, interpolation="nearest")
        ax.set_title(label, fontsize=7, pad=2)
        ax.set_xticks([])
        ax.set_yticks([])
    kh, kw = w.shape[2:]
    kind = type(layer).__name__
    if kind == "LocallyConnected2d":
        title += " (the kernels of the centre position)"
    elif kind == "TiledConv2d":
        title += " (one kernel per output channel and tile)"
    scale = "RGB, each rescaled" if in_ch == 3 and not per_channel else "red > 0 > blue, each on its own \u00b1max|w|"
    if per_channel:
        scale += "; tile o:c = output channel o, input channel c"
    fig.suptitle(f"{title}\n{out_ch} kernels of {kh}\u00d7{kw} ({scale})", fontsize=9)
    return fig


def save_filters(layer: nn.Module | Tensor, path: str | Path, title: str = "filters",
                 per_channel: bool = False, max_tiles: int = 256) -> Path:
    """:func:`filters_figure` of any conv-like layer (see :func:`kernels`) written as PNG."""
    return _save(filters_figure(layer, title, per_channel, max_tiles), path)


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
