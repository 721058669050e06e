"""Output units and their costs (Deep Learning sec. 6.2.2; NNDL ch. 3): which loss to put on a classifier's outputs.

Every loss here takes the network's pre-activations z (logits, shape (n, classes)) and
integer class labels y, and averages over the batch, so any of them is a drop-in
``loss=`` for the Trainer (whose accuracy is argmax z, unchanged by the output unit):

    softmax_log_likelihood   C = -log softmax(z)_y                    softmax + log-likelihood
    sigmoid_cross_entropy    C = -sum_j [t_j log a_j + (1 - t_j) log(1 - a_j)],  a = sigmoid(z)
    quadratic                C = 1/2 sum_j (a_j - t_j)^2,  a = sigmoid(z)  (or softmax(z))

with t the one-hot target. The first is cross-entropy in torch's sense; the second is
the cross-entropy of Nielsen's "Neural Networks and Deep Learning" ch. 3 for sigmoid
output neurons, the third its quadratic cost. Why the choice matters is the derivative
with respect to z (NNDL ch. 3; the vanishing-gradient discussion of CS189):

    quadratic:              dC/dz_j = (a_j - t_j) sigma'(z_j)     -> ~0 when the unit saturates
    sigmoid cross-entropy:  dC/dz_j = a_j - t_j                   the sigma' cancels
    softmax log-likelihood: dC/dz_j = softmax(z)_j - t_j

so a saturated, *wrong* sigmoid output learns very slowly under the quadratic cost
("learning slowdown"), and at full speed under cross-entropy (``descend experiment
quadratic-cost``). Deep Learning sec. 6.2.2 makes the same point for maximum likelihood.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from descend.errors import ConfigError, ShapeError


def _one_hot(z: Tensor, y: Tensor) -> Tensor:
    if z.dim() != 2 or y.dim() != 1 or len(z) != len(y):
        raise ShapeError(f"expected logits (n, classes) and labels (n,), got {tuple(z.shape)} and {tuple(y.shape)}")
    if y.dtype.is_floating_point:
        raise ShapeError(f"labels must be integer class indices, got {y.dtype}")
    return F.one_hot(y.long(), z.shape[1]).to(z.dtype)


def softmax_log_likelihood(z: Tensor, y: Tensor) -> Tensor:
    r"""The log-likelihood cost of a softmax output layer (``torch.nn.functional.cross_entropy``),
    averaged over the :math:`n` examples:

    .. math::

        C = -\frac{1}{n} \sum_x \log \operatorname{softmax}(z_x)_{y_x}, \qquad
        \frac{\partial C_x}{\partial z_j} = \operatorname{softmax}(z)_j - t_j,

    with :math:`t` the one-hot target."""
    _one_hot(z, y)
    return F.cross_entropy(z, y)


def sigmoid_cross_entropy(z: Tensor, y: Tensor) -> Tensor:
    r"""Independent sigmoid outputs with the cross-entropy cost (NNDL ch. 3, eq. 63), averaged
    over the :math:`n` examples :math:`x`, with :math:`t` the one-hot target:

    .. math::

        C = -\frac{1}{n} \sum_x \sum_j \bigl[ t_j \log a_j + (1 - t_j) \log(1 - a_j) \bigr],
        \qquad a = \sigma(z), \qquad \frac{\partial C_x}{\partial z_j} = a_j - t_j.

    Computed from :math:`z` with ``binary_cross_entropy_with_logits`` (stable for large
    :math:`|z|`); torch's
    function averages over n * classes by default, here the classes are summed as in the text.
    """
    t = _one_hot(z, y)
    return F.binary_cross_entropy_with_logits(z, t, reduction="sum") / len(z)


def quadratic(z: Tensor, y: Tensor, output: str = "sigmoid") -> Tensor:
    r"""The quadratic cost (NNDL ch. 1-3), averaged over the :math:`n` examples :math:`x`, with
    :math:`a = \sigma(z)` (or the softmax with ``output="softmax"``) and :math:`t` the one-hot
    target:

    .. math::

        C = \frac{1}{2n} \sum_x \lVert a - t \rVert^2, \qquad
        \frac{\partial C_x}{\partial z_j} = (a_j - t_j)\, \sigma'(z_j) \ \text{(sigmoid)},

    a gradient that vanishes on saturated output units."""
    t = _one_hot(z, y)
    if output == "sigmoid":
        a = torch.sigmoid(z)
    elif output == "softmax":
        a = torch.softmax(z, dim=1)
    else:
        raise ConfigError(f"unknown output unit {output!r}; use 'sigmoid' or 'softmax'")
    return 0.5 * (a - t).pow(2).sum() / len(z)


LOSSES = {
    "cross-entropy": softmax_log_likelihood,
    "sigmoid-cross-entropy": sigmoid_cross_entropy,
    "quadratic": quadratic,
}


def get_loss(name: str):
    """The loss called ``name`` in configs (``train.loss``)."""
    if name not in LOSSES:
        raise ConfigError(f"unknown loss {name!r}; use one of {', '.join(LOSSES)}")
    return LOSSES[name]
