"""Optimization algorithms of Deep Learning ch. 8 as ``torch.optim.Optimizer`` subclasses,
with schedules, gradient clipping, Polyak averaging and per-layer param groups.

First-order and adaptive methods (sec. 8.3, 8.5):
    SGD (Alg. 8.1), Momentum (Alg. 8.2), NesterovMomentum (Alg. 8.3, book form, needs a
    closure), NesterovMomentumReformulated (torch's form), AdaGrad (Alg. 8.4), RMSProp
    (Alg. 8.5), RMSPropNesterov (Alg. 8.6), Adam (Alg. 8.7), AMSGrad, DeltaBarDelta.
    Each is a ``first_order.FirstOrderOptimizer``: the base owns param groups, state,
    the single-tensor/foreach switch and weight decay; each file holds its algorithm box
    and update rule. All are data-parallel safe (element-wise updates of the gradient DDP
    has averaged; see ``descend.optim.first_order``).

Second-order and line-search methods (sec. 8.2, 8.6, 8.7.2; full-batch, closure-based):
    Newton (Alg. 8.8 + eq. 8.28), SaddleFreeNewton (sec. 8.2.3), NewtonCG, NonlinearCG
    (Alg. 8.9), BFGS, LBFGS (sec. 8.6.3), SDLM (minibatch); strong_wolfe line search;
    curvature tools (Hessian-vector products, Hessian spectra, Gauss-Newton products),
    sec. 8.2.1 diagnostics (CurvatureMonitor), coordinate descent and sparse coding.

``OPTIMIZERS`` maps config names to classes; ``SCHEDULES`` maps config names to
``make(optimizer, *, total_steps, steps_per_epoch, **hparams)`` returning a torch LR
scheduler stepped once per batch.
"""

from __future__ import annotations

from descend.optim.adagrad import AdaGrad
from descend.optim.adam import AMSGrad, Adam
from descend.optim.averaging import PolyakAverage
from descend.optim.clipping import (
    clip_grad_norm_,
    clip_grad_value_,
    register_grad_clipping,
    register_nonfinite_guard,
)
from descend.optim.bfgs import BFGS, LBFGS
from descend.optim.conjugate_gradient import NonlinearCG
from descend.optim.coordinate_descent import block_coordinate_descent, coordinate_descent, sparse_coding
from descend.optim.curvature import (
    GaussNewtonOperator,
    HessianOperator,
    hessian,
    hessian_eigenspectrum,
    hessian_vector_product,
    hutchinson_diagonal,
    lanczos,
)
from descend.optim.delta_bar_delta import DeltaBarDelta
from descend.optim.diagnostics import CurvatureMonitor, gradient_curvature, gradient_norms
from descend.optim.line_search import model_closure, strong_wolfe
from descend.optim.newton import Newton, NewtonCG, SaddleFreeNewton
from descend.optim.sdlm import SDLM
from descend.optim.momentum import Momentum
from descend.optim.nesterov import NesterovMomentum, NesterovMomentumReformulated
from descend.optim.param_groups import param_groups
from descend.optim.rmsprop import RMSProp, RMSPropNesterov
from descend.optim.schedules import SCHEDULES, LinearDecay, MomentumSchedule, WarmupCosine
from descend.optim.sgd import SGD

OPTIMIZERS: dict[str, type] = {
    "sgd": SGD,
    "momentum": Momentum,
    "nesterov": NesterovMomentum,
    "nesterov-reformulated": NesterovMomentumReformulated,
    "adagrad": AdaGrad,
    "rmsprop": RMSProp,
    "rmsprop-nesterov": RMSPropNesterov,
    "adam": Adam,
    "amsgrad": AMSGrad,
    "delta-bar-delta": DeltaBarDelta,
    "newton": Newton,
    "newton-cg": NewtonCG,
    "saddle-free-newton": SaddleFreeNewton,
    "cg": NonlinearCG,
    "bfgs": BFGS,
    "lbfgs": LBFGS,
    "sdlm": SDLM,
}

__all__ = [
    "SGD",
    "Momentum",
    "NesterovMomentum",
    "NesterovMomentumReformulated",
    "AdaGrad",
    "RMSProp",
    "RMSPropNesterov",
    "Adam",
    "AMSGrad",
    "DeltaBarDelta",
    "LinearDecay",
    "WarmupCosine",
    "MomentumSchedule",
    "clip_grad_norm_",
    "clip_grad_value_",
    "register_grad_clipping",
    "register_nonfinite_guard",
    "PolyakAverage",
    "param_groups",
    "OPTIMIZERS",
    "SCHEDULES",
    "Newton",
    "NewtonCG",
    "SaddleFreeNewton",
    "NonlinearCG",
    "BFGS",
    "LBFGS",
    "SDLM",
    "strong_wolfe",
    "model_closure",
    "HessianOperator",
    "GaussNewtonOperator",
    "hessian_vector_product",
    "hessian",
    "hessian_eigenspectrum",
    "hutchinson_diagonal",
    "lanczos",
    "gradient_curvature",
    "gradient_norms",
    "CurvatureMonitor",
    "coordinate_descent",
    "block_coordinate_descent",
    "sparse_coding",
]
