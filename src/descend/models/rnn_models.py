"""Recurrent classifiers of images for ``descend train``: ``model = "rnn"`` and ``"lstm"``.

Row-sequential MNIST (Deep Learning sec. 10.2, fig. 10.5): an image is read one row per
time step (28 steps of 28 pixels), or one pixel per step with ``order = "pixels"``
(784 steps, a long-term dependency problem, sec. 8.2.5), and the class is predicted
from the final hidden state. The models take the same image batches ``(N, C, H, W)``
as the convolutional networks and view them as sequences inside, so the data pipeline,
the Trainer, checkpoints and ``descend evaluate`` work unchanged. Gradient clipping
(sec. 10.11.1) is the config's ``train.clip_norm``.

For truncated BPTT (``descend.train.TruncatedBPTT``) the models expose
``to_sequence(images)`` and ``forward_chunk(sequence, state) -> (logits, state)``.
"""

from __future__ import annotations

from torch import Tensor, nn

from descend.data.sequences import sequential_mnist
from descend.errors import ConfigError, ShapeError
from descend.nn.recurrent import LSTM, RNN, SequenceToOne


class _SequentialImageClassifier(nn.Module):
    """Images -> sequences -> recurrent layer -> class logits from the final state."""

    def __init__(self, in_channels: int, image_size: int, num_classes: int, hidden_size: int, order: str, layer) -> None:
        super().__init__()
        if order not in ("rows", "pixels"):
            raise ConfigError(f"Invalid order: {order!r}; use 'rows' (one row per step) or 'pixels' (one pixel per step)")
        if hidden_size < 1 or in_channels < 1 or image_size < 1 or num_classes < 1:
            raise ConfigError(
                f"hidden_size, in_channels, image_size and num_classes must be >= 1; "
                f"got {hidden_size}, {in_channels}, {image_size}, {num_classes}"
            )
        self.in_channels, self.image_size, self.order = in_channels, image_size, order
        features = in_channels * image_size if order == "rows" else in_channels
        self.net = SequenceToOne(layer(features, hidden_size), num_classes)

    def to_sequence(self, x: Tensor) -> Tensor:
        """``(N, C, H, W)`` images as ``(N, T, F)`` sequences (rows or pixels as time steps)."""
        if x.dim() != 4 or x.shape[1] != self.in_channels or x.shape[3] != self.image_size:
            raise ShapeError(
                f"expected images (N, {self.in_channels}, H, {self.image_size}); got {tuple(x.shape)}. "
                "Build the model with in_channels and image_size of the data"
            )
        return sequential_mnist(x, self.order)

    def forward_chunk(self, x: Tensor, state=None):
        """Part of a sequence from ``state``: ``(logits from the chunk's last step, state)``."""
        return self.net(x, state)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self.to_sequence(x))[0]


class RNNClassifier(_SequentialImageClassifier):
    """Tanh RNN of eqs. 10.8-10.9 over image rows, softmax class from ``h(tau)`` (fig. 10.5)."""

    def __init__(
        self, in_channels: int = 1, image_size: int = 28, num_classes: int = 10, hidden_size: int = 128, order: str = "rows"
    ) -> None:
        super().__init__(in_channels, image_size, num_classes, hidden_size, order, RNN)


class LSTMClassifier(_SequentialImageClassifier):
    """LSTM (sec. 10.10, forget-gate bias 1) over image rows, class from the final output."""

    def __init__(
        self, in_channels: int = 1, image_size: int = 28, num_classes: int = 10, hidden_size: int = 128, order: str = "rows"
    ) -> None:
        super().__init__(in_channels, image_size, num_classes, hidden_size, order, LSTM)
