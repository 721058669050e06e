"""Mixed precision for layers that do their own arithmetic.

``torch.autocast`` decides an op's precision per op: matrix products and convolutions
run in the lower-precision dtype (bfloat16 or float16), reductions and transcendental
functions in float32. It cannot see inside a ``torch.autograd.Function``, whose forward
calls ops with ``out=`` or in place (which autocast leaves alone) and whose backward
runs outside the autocast region; nor does it cover ops that have no kernel in the
lower precision (``torch.fft`` has neither bfloat16 nor float16 on CPU). Such layers
decide for themselves, at their boundary:

* ``lower_precision(device)``: the dtype an enclosing autocast region asks matrix
  products to run in on that device, or None outside one.
* ``cast(dtype, *tensors)``: floating tensors converted to ``dtype`` (autograd records
  the conversion, so gradients come back in each parameter's own dtype).

A layer that casts its inputs to one dtype runs its op with autocast disabled
(``torch.autocast(device_type, enabled=False)``), so nothing inside re-casts.
"""

from __future__ import annotations

import torch
from torch import Tensor

HALF = (torch.bfloat16, torch.float16)


def lower_precision(device: torch.device) -> torch.dtype | None:
    """The dtype of the enclosing ``torch.autocast`` region on ``device``, or None outside one."""
    kind = device.type
    if torch.amp.is_autocast_available(kind) and torch.is_autocast_enabled(kind):
        return torch.get_autocast_dtype(kind)
    return None


def cast(dtype: torch.dtype, *tensors: Tensor | None) -> tuple[Tensor | None, ...]:
    """Each floating tensor as ``dtype`` (None and integer tensors pass through)."""
    return tuple(t.to(dtype) if t is not None and t.is_floating_point() else t for t in tensors)
