"""``from descend.network3 import ...``: Nielsen's network3 API (see descend.models.network3)."""

from descend.models.network3 import (
    ConvPoolLayer,
    FullyConnectedLayer,
    Network,
    ReLU,
    SoftmaxLayer,
    expand_mnist,
    linear,
    load_data_shared,
    sigmoid,
    tanh,
)

__all__ = [
    "ConvPoolLayer",
    "FullyConnectedLayer",
    "Network",
    "ReLU",
    "SoftmaxLayer",
    "expand_mnist",
    "linear",
    "load_data_shared",
    "sigmoid",
    "tanh",
]
