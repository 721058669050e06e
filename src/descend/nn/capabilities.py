"""What a layer can do, asked of the layer itself: descend's layers are first-class.

Code that needs "the image convolutions of this model" (channels-last memory format,
pictures of first-layer filters) asks each module, not a list of torch classes, so a
network built from ``descend.nn`` layers (LeNet-5's ``Conv2d`` and
``PartiallyConnectedConv2d``, ``TiledConv2d``, ``FFTConv2d``, ...) is treated exactly
like one built from ``torch.nn.Conv2d``.

The protocol: a 2-D convolution layer (sec. 9.1-9.5 and its variants of sec. 9.6-9.8)
has a method ``kernels()`` returning the kernels it applies as a dense
``(out channels, in channels per group, kh, kw)`` tensor (a tiled layer stacks every
tile's kernels, an unshared layer gives those of its centre location). ``torch.nn.Conv2d``
is the one layer that is recognized by its class.
"""

from __future__ import annotations

from torch import Tensor, nn


def is_image_convolution(module: nn.Module) -> bool:
    """Whether ``module`` is a 2-D convolution over images (it has ``kernels()``)."""
    return isinstance(module, nn.Conv2d) or callable(getattr(module, "kernels", None))


def kernels(module: nn.Module) -> Tensor:
    """The dense ``(out, in / groups, kh, kw)`` kernels of a 2-D convolution layer."""
    if isinstance(module, nn.Conv2d):
        return module.weight
    return module.kernels()


def image_convolutions(model: nn.Module) -> list[nn.Module]:
    """The 2-D convolution layers of ``model``, in the order of ``model.modules()``."""
    return [m for m in model.modules() if is_image_convolution(m)]
