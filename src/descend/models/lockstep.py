"""Ensemble members trained in lockstep: K networks of one architecture in one step.

An ensemble (Deep Learning sec. 7.11, model averaging; NNDL ch. 6 ends with five
networks voting) is usually trained one member after another. At a small mini-batch
(network3's 10 images) each step of one network is too small to keep the CPU busy; K
members that see the same mini-batch can instead be computed together: their
parameters are stacked along a new leading dimension and ``torch.func.vmap`` maps the
architecture's ``forward`` over it, so that the first convolution of all members is one
convolution with K times the feature maps, the next ones grouped convolutions, the
fully connected layers batched matrix products.

The training loss is the *sum* of the members' losses,

    L(theta_1, ..., theta_K) = sum_k L_k(theta_k),   dL/dtheta_k = dL_k/dtheta_k,

so the gradient of each member's stacked slice is its own gradient, and any optimizer
whose update is elementwise (SGD, momentum, Nesterov, RMSProp, Adam, weight decay)
moves each member exactly as it would move it alone (to float rounding).
:func:`lockstep_cross_entropy` is that loss for class targets. Members see the same
examples in the same order; each gets its own dropout masks (``randomness="different"``),
which are not those it would draw alone, so only networks without dropout repeat their
solo training to float rounding.

In training mode the forward pass returns the members' logits, shape (K, batch, classes);
in evaluation mode it returns the log of the members' averaged softmax outputs, shape
(batch, classes), which is the averaging ensemble's prediction (and loss under
cross-entropy), so the Trainer's evaluation scores the ensemble. :meth:`Lockstep.member_logits`
gives each member's logits for voting.
"""

from __future__ import annotations

import copy
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from descend.errors import ConfigError, ShapeError


class Lockstep(nn.Module):
    """K networks of one architecture as one module whose parameters are stacked (K, ...).

    Args:
        members: the networks, all of the same architecture (same parameter and buffer
            names and shapes); their current weights become the stacked slices.

    Each parameter and buffer of the members is held stacked along dimension 0 under
    its member name with dots written as ``__`` (``layers.0.w`` -> ``layers__0__w``;
    :meth:`member_name` maps it back), so rules that select parameters by name, such as
    network3's weight decay on weights only, still apply.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        members = list(members)
        if not members:
            raise ConfigError("Lockstep needs at least one member network")
        shapes = [[(n, tuple(t.shape)) for n, t in m.state_dict().items()] for m in members]
        if any(s != shapes[0] for s in shapes[1:]):
            raise ConfigError("Lockstep members must share one architecture (same parameter names and shapes)")
        self.members = len(members)
        params, buffers = stack_module_state(members)
        # The architecture, without storage: vmap calls its forward with each member's slices.
        # (In a list, so that it is not a submodule: its Conv2d layers hold 4-D weights, ours are 5-D.)
        self._architecture = [copy.deepcopy(members[0]).to("meta")]
        for name, value in params.items():
            self.register_parameter(name.replace(".", "__"), nn.Parameter(value.detach().clone()))
        for name, value in buffers.items():
            self.register_buffer(name.replace(".", "__"), value.detach().clone())

    @staticmethod
    def member_name(name: str) -> str:
        """The member's name of a stacked parameter or buffer (``layers__0__w`` -> ``layers.0.w``)."""
        return name.replace("__", ".")

    def _member_forward(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self._architecture[0], (params, buffers), (x,))

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's output for the same inputs ``x``: shape (K, batch, ...)."""
        architecture = self._architecture[0]
        architecture.train(self.training)
        params = {self.member_name(n): p for n, p in self.named_parameters()}
        buffers = {self.member_name(n): b for n, b in self.named_buffers()}
        return vmap(self._member_forward, in_dims=(0, 0, None), randomness="different")(params, buffers, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.member_logits(x)
        if self.training:
            return logits
        # The averaging ensemble: log of the mean of the members' softmax outputs.
        return torch.logsumexp(F.log_softmax(logits, dim=-1), dim=0) - math.log(self.members)

    def member(self, k: int, like: nn.Module) -> nn.Module:
        """Member ``k`` (0-based) as a network of its own: ``like`` (same architecture) loaded with its slices."""
        if not 0 <= k < self.members:
            raise ConfigError(f"member {k} does not exist; this Lockstep holds members 0 to {self.members - 1}")
        like.load_state_dict({self.member_name(name): t[k] for name, t in self.state_dict().items()})
        return like

    def extra_repr(self) -> str:
        return f"members={self.members}"


def lockstep_cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The sum over members of each member's mean cross-entropy, for outputs (K, batch, classes);
    plain mean cross-entropy for outputs (batch, classes) (an evaluation-mode Lockstep: the ensemble)."""
    if outputs.ndim == 2:
        return F.cross_entropy(outputs, targets)
    if outputs.ndim != 3 or outputs.shape[1] != len(targets):
        raise ShapeError(f"lockstep_cross_entropy expects outputs (members, batch, classes) for {len(targets)} targets, "
                         f"got {tuple(outputs.shape)}")
    members, batch = outputs.shape[:2]
    return F.cross_entropy(outputs.flatten(0, 1), targets.repeat(members), reduction="sum") / batch
