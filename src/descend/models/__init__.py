"""Architectures: Nielsen's chapter-6 networks, network3, LeNet-5, the book's CNNs, RNNs.

``MODELS`` maps the names used in configs (``model.name = "nielsen"``) to classes;
each constructor takes keyword options and, when it accepts them, ``in_channels``,
``image_size`` and ``num_classes``, which ``descend train`` fills in from the data.
"""

from descend.models.book_cnns import AdaptiveCNN, FlattenCNN, GapCNN, LocalCNN
from descend.models.lenet import LeNet5
from descend.models.nielsen import NielsenNet
from descend.models.rnn_models import LSTMClassifier, RNNClassifier

MODELS = {
    "nielsen": NielsenNet,
    "rnn": RNNClassifier,
    "lstm": LSTMClassifier,
    "lenet5": LeNet5,
    "cnn-flatten": FlattenCNN,
    "cnn-adaptive": AdaptiveCNN,
    "cnn-local": LocalCNN,
    "cnn-gap": GapCNN,
}

__all__ = ["MODELS", "NielsenNet", "RNNClassifier", "LSTMClassifier", "LeNet5", "FlattenCNN",
           "AdaptiveCNN", "LocalCNN", "GapCNN"]
