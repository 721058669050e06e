"""Layers of the texts: convolution variants, local & tiled, pooling, normalization, recurrent.

Functional forms live in ``descend.nn.functional`` (``descend.nn.functional.tiled_conv2d``
beside ``descend.nn.TiledConv2d``).
"""

from descend.nn import functional
from descend.nn.conv import (
    Conv1d,
    Conv2d,
    Conv3d,
    ConvTranspose1d,
    ConvTranspose2d,
    ConvTranspose3d,
)
from descend.nn.efficient import FFTConv2d, SeparableConv2d
from descend.nn.local import (
    LocallyConnected1d,
    LocallyConnected2d,
    PartiallyConnectedConv2d,
    TiledConv1d,
    TiledConv2d,
)
from descend.nn.normalization import BatchNorm1d, BatchNorm2d
from descend.nn.pooling import AdaptivePool, ChannelPool, GlobalPool, MaxoutConv2d, Pool
from descend.nn.recurrent import (
    LSTM,
    RNN,
    LSTMCell,
    OutputRecurrentRNN,
    SequenceToOne,
    SequenceToSequence,
    inverse_sigmoid_decay,
    sequence_nll,
)
from descend.nn.structured import RecurrentConvNet
from descend.nn.unsupervised import ConvFeatures

__all__ = [
    "functional",
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
    "FFTConv2d",
    "SeparableConv2d",
    "LocallyConnected1d",
    "LocallyConnected2d",
    "PartiallyConnectedConv2d",
    "TiledConv1d",
    "TiledConv2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "AdaptivePool",
    "ChannelPool",
    "GlobalPool",
    "MaxoutConv2d",
    "Pool",
    "RNN",
    "LSTM",
    "LSTMCell",
    "OutputRecurrentRNN",
    "SequenceToOne",
    "SequenceToSequence",
    "inverse_sigmoid_decay",
    "sequence_nll",
    "RecurrentConvNet",
    "ConvFeatures",
]
