"""Nielsen's ``network3.py`` (NNDL chapter 6) on PyTorch, through descend's Trainer.

The chapter's programs run unchanged::

    from descend.network3 import Network, ConvPoolLayer, FullyConnectedLayer, SoftmaxLayer, ReLU
    from descend.network3 import load_data_shared
    training_data, validation_data, test_data = load_data_shared()
    mini_batch_size = 10
    net = Network([
        ConvPoolLayer(image_shape=(mini_batch_size, 1, 28, 28), filter_shape=(20, 1, 5, 5),
                      poolsize=(2, 2), activation_fn=ReLU),
        FullyConnectedLayer(n_in=20*12*12, n_out=100, activation_fn=ReLU),
        SoftmaxLayer(n_in=100, n_out=10)], mini_batch_size)
    net.SGD(training_data, 60, mini_batch_size, 0.03, validation_data, test_data, lmbda=0.1)

with network3's semantics, not PyTorch's defaults:

* ``ConvPoolLayer``: "valid" convolution (computed as the cross-correlation the text
  describes; Theano's conv2d flips the kernel, so a network3 kernel is this one flipped
  in both axes, which changes nothing for a trained network), max-pooling that ignores a partial border,
  then ``activation_fn(pooled + b)``; weights ~ N(0, 1/n_out) with
  n_out = maps * kernel area / pool area, biases ~ N(0, 1). No dropout.
* ``FullyConnectedLayer``: weights ~ N(0, 1/n_out), biases ~ N(0, 1). Dropout acts on the
  layer's *input*: in training each input is kept with probability 1 - p and *not*
  rescaled; at test time the layer uses ``(1 - p) * x @ w`` instead (network3's
  "scaled weights" form, not PyTorch's inverted dropout).
* ``SoftmaxLayer``: zero-initialised weights and biases, same dropout rule.
* ``Network.SGD``: plain minibatch SGD (``param -= eta * grad``) over the training data
  *in order* (no shuffling), a final partial minibatch dropped, on the cost
  ``mean log-likelihood + 0.5 * lmbda * sum(w**2) / num_training_batches`` (weights
  only, not biases); after each epoch the validation accuracy is printed, and the
  test accuracy each time the validation accuracy reaches a new best; at the end the
  best validation accuracy, its iteration and the corresponding test accuracy.
  Back-propagation is written out by hand, as Nielsen's ``network.py`` writes it (eqs.
  BP1-BP4), and every parameter takes its step inside it, right after its gradient is
  computed (``descend.optim.in_backward``; a fully connected layer's weights in one BLAS
  call): the same updates as autograd and SGD to float rounding, with no gradient stored
  and one pass over the weights instead of six (gradient, decay, step). Layers of your own
  or activation functions other than network3's four are back-propagated by autograd.

Data: ``load_data_shared`` returns ``[(x, y), (x, y), (x, y)]`` of torch tensors
(x: float (n, 784), y: int64 (n,)) read from ``mnist.pkl.gz`` by the NumPy-only
unpickler; there are no Theano shared variables, and no GPU flag (use ``device=``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from descend.data.augment import expand_mnist as _expand
from descend.data.mnist import load_mnist_pkl
from descend.data.tensors import Splits, TensorPair
from descend.errors import ConfigError, ShapeError
from descend.optim import in_backward
from descend.train.callbacks import Callback
from descend.train.trainer import Trainer

# Activation functions, as network3 names them.
def linear(z: torch.Tensor) -> torch.Tensor:
    return z


def ReLU(z: torch.Tensor) -> torch.Tensor:  # noqa: N802 - network3's name
    return torch.clamp_min(z, 0.0)


sigmoid = torch.sigmoid
tanh = torch.tanh


def _keep_inputs(x: torch.Tensor, p_dropout: float, training: bool) -> torch.Tensor:
    """network3's dropout on a layer's input: Bernoulli mask in training, (1-p) scaling at test."""
    if p_dropout == 0.0:
        return x
    return x * _keep_mask(x, p_dropout) if training else x * (1.0 - p_dropout)


def _keep_mask(x: torch.Tensor, p_dropout: float) -> torch.Tensor:
    """Which inputs dropout keeps: a uniform draw below 1 - p, the very draws of
    torch.bernoulli(full_like(x, 1 - p)) (one uniform per element from the same generator),
    in a third of its time."""
    return torch.rand_like(x) < 1.0 - p_dropout


def _is_vmapped(x: torch.Tensor) -> bool:
    """Whether ``x`` is one slice of a ``torch.func.vmap`` batch (descend.models.lockstep), whose
    memory layout cannot be chosen."""
    return torch._C._functorch.is_batchedtensor(x)


class ConvPoolLayer(nn.Module):
    """A convolutional layer followed by max-pooling (network3.ConvPoolLayer).

    ``filter_shape = (maps, input maps, rows, cols)``,
    ``image_shape = (mini batch size, input maps, rows, cols)``.
    """

    def __init__(self, filter_shape: Sequence[int], image_shape: Sequence[int], poolsize: Sequence[int] = (2, 2),
                 activation_fn: Callable[[torch.Tensor], torch.Tensor] = sigmoid) -> None:
        super().__init__()
        if len(filter_shape) != 4 or len(image_shape) != 4 or len(poolsize) != 2:
            raise ConfigError("ConvPoolLayer needs filter_shape and image_shape of 4 numbers and poolsize of 2")
        if image_shape[1] != filter_shape[1]:
            raise ConfigError(f"image_shape has {image_shape[1]} input maps but filter_shape expects {filter_shape[1]}")
        self.filter_shape, self.image_shape = tuple(filter_shape), tuple(image_shape)
        self.poolsize, self.activation_fn = tuple(poolsize), activation_fn
        n_out = filter_shape[0] * math.prod(filter_shape[2:]) / math.prod(poolsize)
        self.w = nn.Parameter(torch.randn(*filter_shape) * math.sqrt(1.0 / n_out))
        self.b = nn.Parameter(torch.randn(filter_shape[0]))

    def convolve(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the input as maps, the convolution's output): the layer before its pooling."""
        x = x.reshape(-1, *self.image_shape[1:])
        if not _is_vmapped(x):
            # Channels-last (each pixel's maps adjacent): the layout in which the CPU's max-pooling
            # and oneDNN's convolutions are vectorized over the maps; the values are the same.
            x = x.contiguous(memory_format=torch.channels_last)
        z = F.conv2d(x, self.w)
        # From one input map the convolution's output comes back NCHW. z is checked on its own:
        # lockstep members share their inputs, so z can be a vmap batch when x is not.
        if not _is_vmapped(z):
            z = z.contiguous(memory_format=torch.channels_last)
        return x, z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.max_pool2d(self.convolve(x)[1], self.poolsize)  # floor: border ignored
        return self.activation_fn(pooled + self.b.view(1, -1, 1, 1))

    def extra_repr(self) -> str:
        return f"filter_shape={self.filter_shape}, image_shape={self.image_shape}, poolsize={self.poolsize}"


class FullyConnectedLayer(nn.Module):
    """A fully connected layer with network3's dropout on its input."""

    def __init__(self, n_in: int, n_out: int, activation_fn: Callable[[torch.Tensor], torch.Tensor] = sigmoid,
                 p_dropout: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p_dropout < 1.0:
            raise ConfigError(f"p_dropout must be in [0, 1), got {p_dropout}")
        self.n_in, self.n_out, self.activation_fn, self.p_dropout = n_in, n_out, activation_fn, p_dropout
        self.w = nn.Parameter(torch.randn(n_in, n_out) * math.sqrt(1.0 / n_out))
        self.b = nn.Parameter(torch.randn(n_out))

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(-1, self.n_in)
        # In training through Network.SGD, w's SGD step is taken in back-propagation (descend.optim.in_backward).
        return in_backward.matmul(_keep_inputs(x, self.p_dropout, self.training), self.w) + self.b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation_fn(self.pre_activation(x))

    def extra_repr(self) -> str:
        return f"n_in={self.n_in}, n_out={self.n_out}, p_dropout={self.p_dropout}"


class SoftmaxLayer(FullyConnectedLayer):
    """The softmax output layer; ``forward`` returns the logits (the softmax is in the cost)."""

    def __init__(self, n_in: int, n_out: int, p_dropout: float = 0.0) -> None:
        super().__init__(n_in, n_out, linear, p_dropout)
        with torch.no_grad():
            self.w.zero_()
            self.b.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pre_activation(x)


# The derivative of each of network3's activation functions, from its input z and output a
# (the sigma'(z) of NNDL eqs. BP1 and BP2), as torch's autograd takes it; None: the identity.
_DERIVATIVES: dict[Callable, Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None] = {
    ReLU: lambda z, a: z >= 0,  # torch.clamp_min's subgradient at 0
    sigmoid: lambda z, a: a * (1.0 - a),
    tanh: lambda z, a: 1.0 - a * a,
    linear: None,
}


def _back_through(activation_fn: Callable, delta: torch.Tensor, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    derivative = _DERIVATIVES[activation_fn]
    return delta.reshape(a.shape) if derivative is None else delta.reshape(a.shape) * derivative(z, a)


class _BackpropSGDStep(torch.autograd.Function):
    """A network3 Network's training step written out by hand, as Nielsen's ``network.py``
    writes back-propagation (NNDL ch. 2): the forward pass keeps what back-propagation needs,
    and the backward pass runs eqs. BP1-BP4 from the last layer to the first (max-pooling
    and the convolution through their ATen backward kernels, Goodfellow et al. eq. 9.11),
    taking each parameter's SGD step (``descend.optim.in_backward``) as soon as its gradient
    is known and, for a weight, after it has carried the error to the layer below.

    The same updates as autograd followed by ``torch.optim.SGD``, to float rounding; at a
    minibatch of 10, autograd's bookkeeping and the optimizer's pass over stored gradients
    cost a good share of a step, and here there are none."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, net: "Network", groups: list[dict], *params: torch.Tensor) -> torch.Tensor:
        # params (every layer's w and b) are inputs only so that autograd calls backward.
        ctx.net, ctx.groups = net, groups
        kept: list[torch.Tensor | None] = []
        a = x
        for layer in net.layers:
            if isinstance(layer, ConvPoolLayer):
                x_in, conv = layer.convolve(a)
                pooled, where = F.max_pool2d(conv, layer.poolsize, return_indices=True)
                z = pooled + layer.b.view(1, -1, 1, 1)
                a = layer.activation_fn(z)
                kept += [x_in, conv, where, z, a]
            else:
                x_in = a.reshape(-1, layer.n_in)
                mask = None
                if layer.p_dropout:  # network3's dropout, as in _keep_inputs
                    mask = _keep_mask(x_in, layer.p_dropout)
                    x_in = x_in * mask
                z = torch.addmm(layer.b, x_in, layer.w)
                a = layer.activation_fn(z)
                kept += [x_in, mask, z, a]
        ctx.save_for_backward(*kept)
        return a

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, delta: torch.Tensor) -> tuple[None, ...]:
        kept, groups, layers = list(ctx.saved_tensors), ctx.groups, ctx.net.layers
        for i in reversed(range(len(layers))):
            layer, (w_group, b_group) = layers[i], groups[2 * i:2 * i + 2]
            if isinstance(layer, ConvPoolLayer):
                x_in, conv, where, z, a = kept[-5:]
                del kept[-5:]
                delta = _back_through(layer.activation_fn, delta, z, a)
                in_backward.sgd_step(layer.b, delta.sum((0, 2, 3)), b_group)
                delta = torch.ops.aten.max_pool2d_with_indices_backward(
                    delta, conv, layer.poolsize, layer.poolsize, [0, 0], [1, 1], False, where)
                delta, grad_w, _ = torch.ops.aten.convolution_backward(
                    delta, x_in, layer.w, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [i > 0, True, False])
                in_backward.sgd_step(layer.w, grad_w, w_group)
            else:
                x_in, mask, z, a = kept[-4:]
                del kept[-4:]
                delta = _back_through(layer.activation_fn, delta, z, a)
                in_backward.sgd_step(layer.b, delta.sum(0), b_group)
                below = delta @ layer.w.t() if i > 0 else None  # before w changes
                in_backward.matmul_sgd_step(layer.w, x_in, delta, w_group)
                delta = below if mask is None or below is None else below * mask
        return (None,) * (3 + len(ctx.groups))


class _Report(Callback):
    """network3's printed progress and best-validation bookkeeping."""

    def __init__(self, num_training_batches: int, has_test: bool, quiet: bool) -> None:
        self.num_training_batches, self.has_test, self.quiet = num_training_batches, has_test, quiet
        self.best_validation_accuracy, self.best_iteration, self.test_accuracy = 0.0, 0, None

    def on_batch_end(self, trainer: Trainer, batch_index: int, loss: torch.Tensor) -> None:
        iteration = self.num_training_batches * (trainer.epoch) + batch_index
        if iteration % 1000 == 0 and not self.quiet:
            print(f"Training mini-batch number {iteration}")

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict) -> None:
        validation_accuracy = metrics["val_accuracy"]
        if not self.quiet:
            print(f"Epoch {epoch - 1}: validation accuracy {validation_accuracy:.2%}")
        if validation_accuracy >= self.best_validation_accuracy:
            self.best_validation_accuracy = validation_accuracy
            self.best_iteration = self.num_training_batches * epoch - 1
            if not self.quiet:
                print("This is the best validation accuracy to date.")
            if self.has_test:
                self.test_accuracy = metrics["test_accuracy"]
                if not self.quiet:
                    print(f"The corresponding test accuracy is {self.test_accuracy:.2%}")


def _pair(data: Any, name: str) -> TensorPair:
    if isinstance(data, TensorPair):
        return data
    try:
        x, y = data
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a pair (x, y) as returned by load_data_shared") from None
    x, y = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.int64)
    if x.ndim < 2 or y.ndim != 1 or len(x) != len(y):
        raise ShapeError(f"{name}: expected x of shape (n, 784) and y of shape (n,), got {tuple(x.shape)} and {tuple(y.shape)}")
    return TensorPair(x, y)


class Network(nn.Module):
    """A stack of network3 layers trained by :meth:`SGD` (network3.Network)."""

    def __init__(self, layers: Sequence[nn.Module], mini_batch_size: int) -> None:
        super().__init__()
        if not layers:
            raise ConfigError("Network needs at least one layer")
        self.layers = nn.ModuleList(layers)
        self.mini_batch_size = mini_batch_size
        self.history: list[dict[str, Any]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        by_hand = self._steps_by_hand(x)
        if by_hand is not None:
            params, groups = by_hand
            return _BackpropSGDStep.apply(x, self, groups, *params)
        for layer in self.layers:
            x = layer(x)
        return x

    def _steps_by_hand(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[dict]] | None:
        """(w, b of every layer in order, their param groups) when this training step's
        back-propagation is to be taken by hand with the SGD steps in it (Network.SGD, or a
        Trainer with ``sgd_in_backward``): network3's own layers and activation functions, no
        gradient wanted for the input; None otherwise (autograd then back-propagates, layer by
        layer)."""
        if (not self.training or x.requires_grad or _is_vmapped(x)
                or any(type(layer) not in (ConvPoolLayer, FullyConnectedLayer, SoftmaxLayer)
                       or layer.activation_fn not in _DERIVATIVES for layer in self.layers)):
            return None
        params = [p for layer in self.layers for p in (layer.w, layer.b)]  # the order backward reads groups in
        groups = in_backward.claim(params, x)
        return None if groups is None else (params, groups)

    def SGD(self, training_data, epochs: int, mini_batch_size: int, eta: float,  # noqa: N802 - network3's name
            validation_data, test_data=None, lmbda: float = 0.0, *, quiet: bool = False,
            seed: int = 0, device: str = "cpu") -> dict[str, Any]:
        """Train with minibatch SGD, exactly as network3 does (see the module docstring).

        Returns (network3 returns nothing) the best validation accuracy, its iteration,
        the corresponding test accuracy and the per-epoch history.
        """
        if eta <= 0 or epochs < 0 or mini_batch_size < 1 or lmbda < 0:
            raise ConfigError("SGD needs eta > 0, epochs >= 0, mini_batch_size >= 1 and lmbda >= 0")
        train = _pair(training_data, "training_data")
        val = _pair(validation_data, "validation_data")
        test = _pair(test_data, "test_data") if test_data is not None else None
        num_training_batches = len(train) // mini_batch_size
        if num_training_batches == 0:
            raise ConfigError(f"training_data holds {len(train)} examples, fewer than one mini-batch of {mini_batch_size}")
        weights = [p for name, p in self.named_parameters() if name.endswith(".w")]
        biases = [p for name, p in self.named_parameters() if not name.endswith(".w")]
        # d/dw of 0.5 * lmbda * ||w||^2 / num_training_batches = (lmbda / num_training_batches) w
        optimizer = torch.optim.SGD(
            [{"params": weights, "weight_decay": lmbda / num_training_batches},
             {"params": biases, "weight_decay": 0.0}],
            lr=eta,
        )
        report = _Report(num_training_batches, test is not None, quiet)
        trainer = Trainer(self, optimizer, Splits(train, val, test), epochs=epochs, batch_size=mini_batch_size,
                          eval_batch_size=1000, callbacks=[report], seed=seed, shuffle=False, drop_last=True,
                          quiet=True, device=device, sgd_in_backward=True)
        self.history = trainer.fit()
        if not quiet:
            print("Finished training network.")
            print(f"Best validation accuracy of {report.best_validation_accuracy:.2%} "
                  f"obtained at iteration {report.best_iteration}")
            if report.test_accuracy is not None:
                print(f"Corresponding test accuracy of {report.test_accuracy:.2%}")
        return {"best_validation_accuracy": report.best_validation_accuracy, "best_iteration": report.best_iteration,
                "test_accuracy": report.test_accuracy, "history": self.history}


def load_data_shared(filename: str | os.PathLike = "mnist.pkl.gz") -> list[tuple[torch.Tensor, torch.Tensor]]:
    """network3.load_data_shared: [(x, y) training, validation, test] from ``mnist.pkl.gz``.

    ``filename`` is used if it exists (Nielsen's default is ``../data/mnist.pkl.gz``);
    otherwise ``mnist.pkl.gz`` is looked for where descend looks for MNIST
    (``$DESCEND_DATA/mnist``, the user cache).
    """
    path = Path(filename)
    splits = load_mnist_pkl(path if path.is_file() else None)
    return [(p.x.reshape(len(p), -1), p.y) for p in (splits.train, splits.val, splits.test)]


def expand_mnist(training_data, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Nielsen's ``expand_mnist.py``: each training image plus its 4 one-pixel shifts, shuffled."""
    train = _pair(training_data, "training_data")
    side = int(round(math.sqrt(train.x[0].numel())))
    images = TensorPair(train.x.reshape(len(train), 1, side, side), train.y)
    big = _expand(images, shuffle=True, seed=seed)
    return big.x.reshape(len(big), *train.x.shape[1:]), big.y
