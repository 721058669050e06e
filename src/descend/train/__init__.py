"""Training: the one loop (Trainer), its callbacks, checkpoints and ensembles."""

from descend.train.callbacks import AveragedEvaluation, Callback, EarlyStopping
from descend.train.checkpoint import load_state, load_weights, save_state, save_weights
from descend.train.trainer import Trainer, epoch_generator

__all__ = [
    "AveragedEvaluation",
    "Callback",
    "EarlyStopping",
    "Trainer",
    "epoch_generator",
    "load_state",
    "load_weights",
    "save_state",
    "save_weights",
]
