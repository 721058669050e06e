"""Diagnostics of the difficulties of sec. 8.2: ill-conditioning, gradient norms, spectra.

Sec. 8.2.1 (Deep Learning book, eq. 8.10): by the second-order Taylor expansion, a
gradient step of -epsilon g changes the cost by

    1/2 epsilon^2 g^T H g - epsilon g^T g                                   (eq. 8.10)

"Ill-conditioning of the gradient becomes a problem when 1/2 epsilon^2 g^T H g exceeds
epsilon g^T g"; to see whether it hurts training, monitor the squared gradient norm
g^T g and the term g^T H g. In the book's fig. 8.1 the gradient norm *grows* during
training while the loss still falls, because g^T H g grows faster: the learning rate
has to shrink to compensate. (eq. 8.10 and fig. 8.1 are in the book's sec. 8.2.1; its
eq. 8.12 is the SGD step-size condition of sec. 8.3.1.)

* ``gradient_curvature``: g^T g, g^T H g (one Hessian-vector product), eq. 8.10 for a
  given epsilon, and the step epsilon* = g^T g / g^T H g that minimizes the Taylor model
  along -g (book eq. 4.10).
* ``gradient_norms``: the gradient norm of each parameter tensor and in total, to see
  vanishing or exploding gradients through depth (sec. 8.2.5).
* ``CurvatureMonitor``: a Trainer callback that records all of it during training,
  every ``every`` batches, plus optionally the extreme Hessian eigenvalues by Lanczos,
  and adds per-epoch summaries to the Trainer's metrics; ``plot_curvature`` draws the
  curves of fig. 8.1.

Saddle points and spectra of small networks: ``descend.optim.curvature.hessian_eigenspectrum``
and the ``saddle-point`` experiment.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from descend.errors import ConfigError
from descend.optim.curvature import HessianOperator, lanczos

__all__ = ["GradientCurvature", "gradient_curvature", "gradient_norms", "CurvatureMonitor", "plot_curvature"]


@dataclass
class GradientCurvature:
    """The quantities of sec. 8.2.1 at one point theta, for one minibatch."""

    loss: float
    grad_norm: float  # ||g||
    gTg: float  # g^T g
    gTHg: float  # g^T H g
    lr: float | None = None  # the epsilon that ``taylor_change`` refers to

    @property
    def curvature(self) -> float:
        """g^T H g / g^T g: the second derivative of J along the gradient direction."""
        return self.gTHg / self.gTg if self.gTg > 0 else math.nan

    def taylor_change(self, lr: float | None = None) -> float:
        """Eq. 8.10: 1/2 epsilon^2 g^T H g - epsilon g^T g, the predicted change of J."""
        eps = self.lr if lr is None else lr
        if eps is None:
            raise ConfigError("taylor_change needs the step size epsilon (pass lr=...)")
        return 0.5 * eps * eps * self.gTHg - eps * self.gTg

    @property
    def optimal_lr(self) -> float:
        """epsilon* = g^T g / g^T H g (book eq. 4.10); inf where the curvature along g is <= 0."""
        return self.gTg / self.gTHg if self.gTHg > 0 else math.inf

    def as_dict(self) -> dict[str, float | None]:
        d = asdict(self)
        d.update(curvature=self.curvature, optimal_lr=self.optimal_lr)
        if self.lr is not None:
            d["taylor_change"] = self.taylor_change()
        return d


def gradient_curvature(loss: Tensor, params: Sequence[Tensor], lr: float | None = None) -> GradientCurvature:
    r""":math:`g^\top g` and :math:`g^\top H g` for a scalar ``loss`` of ``params``: one gradient
    and one :math:`Hg` product.

    With them (and ``lr`` :math:`= \epsilon`) the result gives the change of the cost that
    the second-order Taylor expansion predicts for the step :math:`-\epsilon g` (eq. 8.10),
    and the step that minimizes it along :math:`-g` (eq. 4.10):

    .. math::

        J(\theta - \epsilon g) - J(\theta) \approx \frac{1}{2} \epsilon^2 g^\top H g
            - \epsilon g^\top g, \qquad \epsilon^* = \frac{g^\top g}{g^\top H g}.
    """
    op = HessianOperator(loss, params)
    g = op.grad.detach()
    gHg = float(g.dot(op(g)))
    gg = float(g.dot(g))
    return GradientCurvature(float(loss.detach()), math.sqrt(gg), gg, gHg, lr)


def gradient_norms(named_parameters) -> dict[str, float]:
    r""":math:`\lVert \nabla_{\theta_j} J \rVert` of each parameter :math:`\theta_j` (from
    ``p.grad``; None -> skipped) and their ``total``, :math:`\sqrt{\sum_j \lVert \nabla_{\theta_j} J \rVert^2}`.
    """
    norms = {name: p.grad.detach().norm() for name, p in named_parameters if p.grad is not None}
    if not norms:
        return {"total": 0.0}
    total = torch.stack(list(norms.values())).square().sum().sqrt()
    out = {name: float(v) for name, v in norms.items()}
    out["total"] = float(total)
    return out


class CurvatureMonitor:
    r"""Trainer callback: gradient norms every batch, :math:`g^\top g` vs :math:`g^\top H g`
    every ``every`` batches.

    On ``on_batch_end`` it reads the gradient norm the batch left in ``p.grad``; every
    ``every`` batches it also re-evaluates the loss on the current batch
    (``trainer.batch``), computes :math:`g^\top g` and :math:`g^\top H g` (one :math:`Hg`
    product; with ``lanczos_steps`` > 0 also the extreme Hessian eigenvalues from that many
    products) and eq. 8.10 for the optimizer's current learning rate :math:`\epsilon`,

    .. math::

        \frac{1}{2} \epsilon^2 g^\top H g - \epsilon g^\top g,

    the change of the cost the second-order Taylor expansion predicts; ill-conditioning
    hurts when the first term exceeds :math:`\epsilon g^\top g` (sec. 8.2.1). The measurement does not
    disturb training: it uses ``torch.autograd.grad`` (``p.grad`` untouched), runs under a
    forked RNG (same dropout stream afterwards) and restores the module buffers (batch
    norm running statistics). ``on_epoch_end`` adds ``grad_norm`` (mean over the epoch's
    batches), ``gTg``, ``gTHg`` and ``optimal_lr`` (means over its measurements) to the
    metrics. ``records`` (per measurement) and ``grad_norm_curve`` (per batch) keep
    everything; ``state_dict`` makes them part of checkpoints. ``per_parameter=True``
    also records each parameter's gradient norm (vanishing/exploding through depth).
    """

    def __init__(self, every: int = 10, lanczos_steps: int = 0, per_parameter: bool = False) -> None:
        if not isinstance(every, int) or every < 1:
            raise ConfigError(f"Invalid every: {every!r}; measure every k >= 1 batches")
        if not isinstance(lanczos_steps, int) or lanczos_steps < 0:
            raise ConfigError(f"Invalid lanczos_steps: {lanczos_steps!r}; it must be an integer >= 0")
        self.every = every
        self.lanczos_steps = lanczos_steps
        self.per_parameter = per_parameter
        self.batches = 0
        self.records: list[dict[str, Any]] = []
        self.grad_norm_curve: list[float] = []
        self._epoch_start = (0, 0)  # (len(grad_norm_curve), len(records)) at the epoch's start

    # -- hooks ---------------------------------------------------------------------
    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        self._epoch_start = (len(self.grad_norm_curve), len(self.records))

    def on_batch_end(self, trainer: Any, batch_index: int, loss: Tensor) -> None:
        norms = gradient_norms(trainer.model.named_parameters())
        self.grad_norm_curve.append(norms["total"])
        if self.batches % self.every == 0 and getattr(trainer, "batch", None) is not None:
            record = self.measure(trainer)
            record.update(batch=self.batches, epoch=getattr(trainer, "epoch", 0) + 1)
            if self.per_parameter:
                record["grad_norms"] = norms
            self.records.append(record)
        self.batches += 1

    def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, Any]) -> None:
        n0, r0 = self._epoch_start
        curve = self.grad_norm_curve[n0:]
        recs = self.records[r0:]
        if curve:
            metrics["grad_norm"] = sum(curve) / len(curve)
        if recs:
            for key in ("gTg", "gTHg"):
                metrics[key] = sum(r[key] for r in recs) / len(recs)
            finite = [r["optimal_lr"] for r in recs if math.isfinite(r["optimal_lr"])]
            if finite:
                metrics["optimal_lr"] = sum(finite) / len(finite)

    # -- the measurement ---------------------------------------------------------------
    def measure(self, trainer: Any) -> dict[str, Any]:
        model = trainer.model
        x, y = trainer.batch
        params = [p for p in model.parameters() if p.requires_grad]
        buffers = [b.detach().clone() for b in model.buffers()]
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.enable_grad():
            compute = getattr(trainer, "compute_loss", None)
            loss = compute(x, y) if compute is not None else trainer.loss_fn(model(x), y)
            op = HessianOperator(loss, params)
            g = op.grad.detach()
            gHg = float(g.dot(op(g)))
            gg = float(g.dot(g))
            lr = _current_lr(trainer)
            result = GradientCurvature(float(loss.detach()), math.sqrt(gg), gg, gHg, lr).as_dict()
            if self.lanczos_steps:
                gen = torch.Generator(device=g.device).manual_seed(self.batches)
                ritz = lanczos(op, op.dim, self.lanczos_steps, dtype=g.dtype, device=g.device, generator=gen)
                result.update(hessian_min=float(ritz[0]), hessian_max=float(ritz[-1]))
        with torch.no_grad():
            for b, saved in zip(model.buffers(), buffers):
                b.copy_(saved)
        return result

    # -- checkpoints -----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"batches": self.batches, "records": self.records, "grad_norm_curve": self.grad_norm_curve}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batches = int(state["batches"])
        self.records = list(state["records"])
        self.grad_norm_curve = list(state["grad_norm_curve"])

    def plot(self, path: str | Path) -> Path:
        return plot_curvature(self.records, self.grad_norm_curve, path)


def _current_lr(trainer: Any) -> float | None:
    opt = getattr(trainer, "optimizer", None)
    try:
        return float(opt.param_groups[0]["lr"])
    except (AttributeError, IndexError, KeyError, TypeError):
        return None


def plot_curvature(records: Sequence[dict[str, Any]], grad_norm_curve: Sequence[float], path: str | Path) -> Path:
    """The curves of fig. 8.1: gradient norm per batch; epsilon g^T g vs 1/2 epsilon^2 g^T H g."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    axes[0].plot(range(len(grad_norm_curve)), grad_norm_curve, lw=0.8)
    axes[0].set(xlabel="batch", ylabel="||g||", title="gradient norm")
    if records:
        steps = [r["batch"] for r in records]
        lrs = [r.get("lr") or 1.0 for r in records]
        axes[1].plot(steps, [e * r["gTg"] for e, r in zip(lrs, records)], label="eps g^T g")
        axes[1].plot(steps, [0.5 * e * e * r["gTHg"] for e, r in zip(lrs, records)], label="1/2 eps^2 g^T H g")
        axes[1].set(xlabel="batch", title="eq. 8.10: first- vs second-order term")
        axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
