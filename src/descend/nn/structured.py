"""Recurrent convolutional network for pixel-wise labelling, Deep Learning sec. 9.6, fig. 9.17.

"Rather than outputting Y-hat in a single shot, the recurrent network iteratively refines
its estimate Y-hat by using a previous estimate of Y-hat as input for creating a new
estimate. The same parameters are used for each updated estimate":

    H(t)     = relu(U * X + W * Y-hat(t-1) + b)      (the W term is zero at t = 1)
    Y-hat(t) = softmax(V * H(t) + c)                 (a distribution per pixel)

U, V and W are convolution kernel stacks with "same" padding, so every map keeps the
image's height and width (structured output the size of the input, sec. 9.6). Each
iteration widens the context a pixel's label depends on by the widths of V and W:
neighbouring labels interact, as in the refinement of Pinheiro & Collobert (2014).

``U * X`` does not change between iterations, so it is computed once. ``image_layers``
> 1 replaces the single kernel stack U by a small stack of same-size conv + ReLU
layers (the figure's single U is ``image_layers=1``), which helps when the label of a
pixel depends on a wide neighbourhood (which digit does this stroke belong to?).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from descend.errors import ConfigError, ShapeError
from descend.nn.conv import Conv2d


class RecurrentConvNet(nn.Module):
    r"""Fig. 9.17: shared-parameter refinement of per-pixel label distributions.

    For :math:`t = 1, \dots, T` (``iterations``), with convolution kernel stacks
    :math:`U, V, W` ("same" padding) shared by every iteration:

    .. math::

        \begin{aligned}
        H^{(t)} &= \operatorname{relu}\bigl(U * X + W * \hat{Y}^{(t-1)} + b\bigr)
            && \text{(the } W \text{ term is zero at } t = 1 \text{)} \\
        \hat{Y}^{(t)} &= \operatorname{softmax}\bigl(V * H^{(t)} + c\bigr)
            && \text{(a distribution per pixel)}
        \end{aligned}

    ``forward(x)`` returns the list of logits (N, classes, H, W) of every iteration,
    1..``iterations``; train with a loss on each (or on the last) and read the label map
    as ``logits[-1].argmax(1)``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        hidden_channels: int = 32,
        kernel_size: int = 5,
        iterations: int = 3,
        image_layers: int = 1,
    ) -> None:
        super().__init__()
        for name, v in (("in_channels", in_channels), ("num_classes", num_classes),
                        ("hidden_channels", hidden_channels), ("kernel_size", kernel_size),
                        ("iterations", iterations), ("image_layers", image_layers)):
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"Invalid {name}: {v!r}; must be an int >= 1")
        self.num_classes, self.iterations = num_classes, iterations
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(image_layers - 1):
            layers += [Conv2d(channels, hidden_channels, kernel_size, padding="same"), nn.ReLU()]
            channels = hidden_channels
        # U: image (features) -> hidden, carrying the hidden bias b.
        layers.append(Conv2d(channels, hidden_channels, kernel_size, padding="same"))
        self.U = nn.Sequential(*layers)
        # W: previous label estimate -> hidden; V: hidden -> label scores (bias c).
        self.W = Conv2d(num_classes, hidden_channels, kernel_size, padding="same", bias=False)
        self.V = Conv2d(hidden_channels, num_classes, kernel_size, padding="same")

    def forward(self, x: Tensor, iterations: int | None = None) -> list[Tensor]:
        if x.dim() != 4:
            raise ShapeError(f"RecurrentConvNet expects images (N, C, H, W), got {tuple(x.shape)}")
        steps = self.iterations if iterations is None else iterations
        if steps < 1:
            raise ConfigError(f"Invalid iterations {steps}; must be >= 1")
        ux = self.U(x)
        logits: list[Tensor] = []
        y_hat = None
        for _ in range(steps):                       # refinement steps, not positions
            pre = ux if y_hat is None else ux + self.W(y_hat)
            scores = self.V(torch.relu(pre))
            logits.append(scores)
            y_hat = torch.softmax(scores, dim=1)
        return logits

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, iterations={self.iterations}"
