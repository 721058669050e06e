"""Training: the one loop (Trainer) and what plugs into it.

::

    Trainer                                  the training loop (Algorithm 8.1 and all around it)
    Callback, EarlyStopping, AveragedEvaluation, BestWeights   callbacks (sec. 7.8, 8.7.3)
    CSVLogger, TensorBoardLogger             per-epoch logs beside metrics.jsonl
    TruncatedBPTT, Continuation              batch steps (sec. 10.2.2, 8.7.6)
    DeterministicCurriculum, StochasticCurriculum, Emphasis, ClassBalanced, Bootstrap
                                             samplers: curricula (sec. 8.7.6), emphasis, bagging
    greedy_supervised_pretraining, transfer, fitnets, AuxiliaryHeads   pretraining (sec. 8.7.4)
    save_state / load_state, save_weights / load_weights   checkpoints (safetensors + JSON)
    ensemble (module)                        combining networks: averaged probabilities, votes
    distributed (module)                     data-parallel training under torchrun
"""

from descend.train.bagging import Bootstrap
from descend.train.callbacks import AveragedEvaluation, BestWeights, Callback, EarlyStopping
from descend.train.checkpoint import load_state, load_weights, save_state, save_weights
from descend.train.continuation import Continuation, ContinuationSchedule
from descend.train.curriculum import ClassBalanced, DeterministicCurriculum, Emphasis, StochasticCurriculum
from descend.train.pretraining import AuxiliaryHeads, fitnets, freeze, greedy_supervised_pretraining, transfer, unfreeze
from descend.train.loggers import CSVLogger, TensorBoardLogger
from descend.train.tbptt import TruncatedBPTT
from descend.train.trainer import Trainer, epoch_generator

__all__ = [
    "AuxiliaryHeads",
    "AveragedEvaluation",
    "BestWeights",
    "Bootstrap",
    "CSVLogger",
    "Callback",
    "ClassBalanced",
    "Continuation",
    "ContinuationSchedule",
    "DeterministicCurriculum",
    "EarlyStopping",
    "Emphasis",
    "StochasticCurriculum",
    "TensorBoardLogger",
    "Trainer",
    "TruncatedBPTT",
    "epoch_generator",
    "fitnets",
    "freeze",
    "greedy_supervised_pretraining",
    "load_state",
    "load_weights",
    "save_state",
    "save_weights",
    "transfer",
    "unfreeze",
]
