"""Curvature of the objective without forming more than it needs (Deep Learning sec. 8.2.1-8.2.3, 8.6).

Second-order methods (sec. 8.6) and the diagnostics of sec. 8.2 need the Hessian
H = grad^2 J(theta) of the objective of eq. 8.25. For a network with k parameters H has
k^2 entries, so everything here is built on the **Hessian-vector product**

    H v = grad_theta ( grad_theta J(theta) . v )              (double back-propagation)

which costs about two gradient evaluations and never forms H (Pearlmutter, 1994). On top:

* ``hessian_vector_product`` / ``HessianOperator``: H v for one v, or many v reusing the
  first back-propagation (Newton-CG's inner loop, Lanczos).
* ``hessian``: the full k x k matrix, row blocks of it as batched H v products
  (``is_grads_batched``), for small models only (Newton's method, Algorithm 8.8).
* ``hessian_eigenspectrum``: its eigenvalues (and vectors), to see saddle points
  (negative eigenvalues, sec. 8.2.3) and ill-conditioning (sec. 8.2.1) in small networks;
  ``lanczos`` estimates the extreme eigenvalues of a large one from H v products alone.
* ``GaussNewtonOperator``: the Gauss-Newton product G v = J^T H_L J v (J the Jacobian of
  the network outputs, H_L the Hessian of the loss in the outputs): positive semi-definite
  whenever the loss is convex in the outputs, the curvature Levenberg-Marquardt and
  stochastic diagonal Levenberg-Marquardt use (cs189 notes; LeCun et al., 1998).
* ``hutchinson_diagonal``: diag(H) (or diag(G)) estimated as E[z * H z] over Rademacher z
  (Hutchinson, 1990; Bekas et al., 2007), the running estimate of ``SDLM``.

Where PyTorch differs: ``torch.autograd.functional.hessian`` / ``torch.func.hessian``
need the objective as a pure function of one tensor and always form the full matrix;
here the input is an ordinary loss tensor computed from an ``nn.Module``'s parameters,
and only the products a method asks for are computed.

All vectors are flat (``torch.nn.utils.parameters_to_vector`` order: parameters in
order, each flattened row-major).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from descend.errors import ConfigError, ShapeError

__all__ = [
    "flat_grad",
    "hessian_vector_product",
    "HessianOperator",
    "hessian",
    "hessian_eigenspectrum",
    "lanczos",
    "GaussNewtonOperator",
    "gauss_newton_vector_product",
    "hutchinson_diagonal",
    "gauss_newton_diagonal",
]


def _check_scalar(loss: Tensor, what: str = "loss") -> None:
    if not isinstance(loss, Tensor):
        raise ShapeError(f"{what} must be a tensor, got {type(loss).__name__}")
    if loss.numel() != 1:
        raise ShapeError(
            f"{what} must be a scalar (one element), got shape {tuple(loss.shape)}; "
            "reduce it with .mean() or .sum() first"
        )
    if not loss.requires_grad:
        raise ShapeError(
            f"{what} does not require grad: compute it from the parameters with autograd enabled "
            "(not under torch.no_grad())"
        )


def _as_params(params: Sequence[Tensor] | Tensor) -> list[Tensor]:
    params = [params] if isinstance(params, Tensor) else list(params)
    if not params:
        raise ConfigError("params is empty; pass the tensors to differentiate with respect to")
    return params


def _flat(tensors: Sequence[Tensor | None], like: Sequence[Tensor]) -> Tensor:
    """Concatenate per-parameter tensors into one vector (None -> zeros: unused parameter)."""
    return torch.cat(
        [(torch.zeros_like(p) if t is None else t).reshape(-1) for t, p in zip(tensors, like)]
    )


def _split(v: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    """The views of a flat vector shaped like each parameter."""
    n = sum(p.numel() for p in like)
    if v.dim() != 1 or v.numel() != n:
        raise ShapeError(f"expected a flat vector of {n} elements (one per parameter), got shape {tuple(v.shape)}")
    return [c.view_as(p) for c, p in zip(v.split([p.numel() for p in like]), like)]


def flat_grad(loss: Tensor, params: Sequence[Tensor], create_graph: bool = False) -> Tensor:
    """grad_theta J as one flat vector; with ``create_graph`` it can be differentiated again."""
    _check_scalar(loss)
    params = _as_params(params)
    grads = torch.autograd.grad(loss, params, create_graph=create_graph, allow_unused=True)
    return _flat(grads, params)


class HessianOperator:
    r""":math:`v \mapsto Hv` for the Hessian of ``loss`` in ``params``, by double
    back-propagation.

    The first back-propagation (:math:`g = \nabla_\theta J` with ``create_graph=True``) is
    done once, here; each product is then one more backward pass through that graph:

    .. math::

        H v = \nabla_\theta \bigl(g^\top v\bigr).

    Build it from a loss, or ``from_grads`` from gradients that
    already carry a graph (an optimizer closure that called ``backward(create_graph=True)``).

    ``op(v)`` takes a flat vector of k elements; ``op.matmul(V)`` takes a (r, k) block of
    r vectors and returns the (r, k) block of products in one batched backward pass
    (``is_grads_batched``; falls back to r passes for operations vmap cannot batch).
    """

    def __init__(self, loss: Tensor, params: Sequence[Tensor]):
        _check_scalar(loss)
        self.params = _as_params(params)
        grads = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True)
        self._set_grads(grads)

    @classmethod
    def from_grads(cls, grads: Sequence[Tensor | None], params: Sequence[Tensor]) -> "HessianOperator":
        op = cls.__new__(cls)
        op.params = _as_params(params)
        op._set_grads(list(grads))
        return op

    def _set_grads(self, grads: Sequence[Tensor | None]) -> None:
        with torch.enable_grad():  # the concatenation must stay on the graph even inside no_grad code
            self.grad = _flat(grads, self.params)  # g(theta), still attached to the graph
        self.dim = self.grad.numel()
        if not self.grad.requires_grad:
            # g does not depend on theta at all (a loss linear in theta): H = 0.
            self.grad = self.grad.detach()

    def __call__(self, v: Tensor) -> Tensor:
        if v.dim() != 1 or v.numel() != self.dim:
            raise ShapeError(f"H v needs a flat vector of {self.dim} elements, got shape {tuple(v.shape)}")
        if not self.grad.requires_grad:
            return torch.zeros_like(v)
        hv = torch.autograd.grad(self.grad, self.params, grad_outputs=v, retain_graph=True, allow_unused=True)
        return _flat(hv, self.params)

    def matmul(self, V: Tensor) -> Tensor:
        if V.dim() != 2 or V.shape[1] != self.dim:
            raise ShapeError(f"H V needs a (r, {self.dim}) block of vectors, got shape {tuple(V.shape)}")
        if not self.grad.requires_grad:
            return torch.zeros_like(V)
        try:
            rows = torch.autograd.grad(
                self.grad, self.params, grad_outputs=V, retain_graph=True, allow_unused=True, is_grads_batched=True
            )
        except RuntimeError:
            # Some operations have no vmap batching rule for their double backward.
            return torch.stack([self(v) for v in V])
        return torch.cat(
            [
                (torch.zeros((V.shape[0], p.numel()), dtype=V.dtype, device=V.device) if r is None else r.reshape(V.shape[0], -1))
                for r, p in zip(rows, self.params)
            ],
            dim=1,
        )


    def dense(self, chunk_size: int = 256) -> Tensor:
        """The k x k matrix: rows H e_i, ``chunk_size`` per batched backward pass, symmetrized."""
        eye = torch.eye(self.dim, dtype=self.grad.dtype, device=self.grad.device)
        H = torch.cat([self.matmul(eye[i : i + chunk_size]) for i in range(0, self.dim, chunk_size)])
        return 0.5 * (H + H.T)


def hessian_vector_product(loss: Tensor, params: Sequence[Tensor], v: Tensor) -> Tensor:
    r""":math:`Hv` for the Hessian of a scalar ``loss`` in ``params``, never forming :math:`H`.

    Pearlmutter's exact product by double back-propagation:

    .. math::

        H v = \nabla_\theta \bigl( (\nabla_\theta J)^\top v \bigr).

    ``v`` and the result are flat vectors of :math:`k` = (number of parameter elements) entries.
    """
    return HessianOperator(loss, params)(v)


def hessian(loss: Tensor, params: Sequence[Tensor], chunk_size: int = 256) -> Tensor:
    r"""The full :math:`k \times k` Hessian of ``loss`` in ``params`` (small models only).

    The "Compute Hessian" line of Algorithm 8.8,

    .. math::

        H_{ij} = \frac{\partial^2 J}{\partial \theta_i \partial \theta_j}, \qquad
        H = \nabla_\theta^2 J(\theta),

    as rows :math:`H e_i`, ``chunk_size`` of them per batched backward pass. Memory
    :math:`O(k^2)`, time about :math:`k` / ``chunk_size`` backward passes; symmetrized,
    :math:`(H + H^\top) / 2`, to remove the round-off asymmetry.
    """
    if chunk_size < 1:
        raise ConfigError(f"Invalid chunk_size: {chunk_size}; chunk_size must be >= 1")
    return HessianOperator(loss, params).dense(chunk_size)


def hessian_eigenspectrum(
    loss: Tensor, params: Sequence[Tensor], eigenvectors: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Eigenvalues (ascending) of the Hessian, and optionally its eigenvectors (columns):
    :math:`H = Q \operatorname{diag}(\lambda) Q^\top`, :math:`\lambda_1 \le \dots \le \lambda_k`.

    Sec. 8.2.3: at a critical point, all-positive eigenvalues mean a minimum, mixed signs a
    saddle point (the fraction of negative ones is its index); sec. 8.2.1: the ratio of
    the largest to the smallest eigenvalue magnitude is the condition number,
    :math:`\kappa = \max_i |\lambda_i| / \min_i |\lambda_i|`.
    """
    H = hessian(loss, params)
    if eigenvectors:
        return torch.linalg.eigh(H)
    return torch.linalg.eigvalsh(H)


def lanczos(
    matvec, dim: int, steps: int = 30, *, dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None, generator: torch.Generator | None = None,
) -> Tensor:
    """Ritz values (ascending) of a symmetric operator from ``steps`` Lanczos iterations.

    For networks too large for ``hessian``: with ``matvec = HessianOperator(loss, params)``
    the extreme Ritz values converge to the largest and smallest Hessian eigenvalues after
    a few dozen H v products. Full re-orthogonalization against the stored basis (one
    matrix-vector product per step) keeps the basis orthogonal in floating point.
    """
    steps = min(int(steps), dim)
    if steps < 1:
        raise ConfigError(f"Invalid steps: {steps}; Lanczos needs steps >= 1 and dim >= 1")
    v = torch.randn(dim, dtype=dtype, device=device, generator=generator)
    Q = torch.zeros((steps, dim), dtype=dtype, device=device)
    alpha = torch.zeros(steps, dtype=dtype, device=device)
    beta = torch.zeros(steps, dtype=dtype, device=device)
    Q[0] = v / v.norm()
    m = steps
    for j in range(steps):
        w = matvec(Q[j]).to(dtype)
        alpha[j] = Q[j] @ w
        w = w - Q[: j + 1].T @ (Q[: j + 1] @ w)  # full re-orthogonalization (twice is enough)
        w = w - Q[: j + 1].T @ (Q[: j + 1] @ w)
        if j + 1 < steps:
            b = w.norm()
            if b <= 1e-10 * max(1.0, alpha[: j + 1].abs().max().item()):
                m = j + 1  # invariant subspace found: the Ritz values are exact
                break
            beta[j] = b
            Q[j + 1] = w / b
    T = torch.diag(alpha[:m]) + torch.diag(beta[: m - 1], 1) + torch.diag(beta[: m - 1], -1)
    return torch.linalg.eigvalsh(T)


class GaussNewtonOperator:
    r""":math:`v \mapsto Gv`, the Gauss-Newton product :math:`G v = J^\top H_L J v`, never
    forming :math:`J` or :math:`G`.

    ``outputs`` are the network outputs :math:`z(\theta)` (any shape, computed with autograd
    from ``params``) and ``loss`` :math:`= L(z)` the scalar loss computed from them. Then

    .. math::

        J = \frac{\partial z}{\partial \theta}, \qquad
        H_L = \frac{\partial^2 L}{\partial z^2}, \qquad
        H = \underbrace{J^\top H_L J}_{G}
            + \sum_o \frac{\partial L}{\partial z_o} \frac{\partial^2 z_o}{\partial \theta^2},

    so :math:`G` is the part of the Hessian that ignores the curvature of the network
    itself; :math:`G` is positive semi-definite when :math:`L` is convex in :math:`z`
    (squared error, softmax cross-entropy), which is why Levenberg-Marquardt and SDLM use it.

    Each product is three backward passes: :math:`Jv` by the double-vjp trick
    (:math:`J v = \frac{\partial}{\partial u} \bigl[ (J^\top u)^\top v \bigr]`, linear in a
    dummy :math:`u`), :math:`H_L (J v)` by double back-propagation through the loss alone,
    and :math:`J^\top (H_L J v)`.
    """

    def __init__(self, outputs: Tensor, loss: Tensor, params: Sequence[Tensor]):
        _check_scalar(loss)
        if not isinstance(outputs, Tensor) or not outputs.requires_grad:
            raise ShapeError("outputs must be the network outputs, a tensor computed from the parameters with autograd")
        self.params = _as_params(params)
        self.outputs = outputs
        self.dim = sum(p.numel() for p in self.params)
        # dL/dz with a graph, for H_L products.
        (self._dloss,) = torch.autograd.grad(loss, outputs, create_graph=True)
        # J^T u with a graph in the dummy u, for J v products.
        self._u = torch.zeros_like(outputs, requires_grad=True)
        jtu = torch.autograd.grad(outputs, self.params, grad_outputs=self._u, create_graph=True, allow_unused=True)
        self._jtu = _flat(jtu, self.params)

    def jvp(self, v: Tensor) -> Tensor:
        """J v (shaped like the outputs)."""
        (jv,) = torch.autograd.grad(self._jtu, self._u, grad_outputs=v, retain_graph=True)
        return jv

    def vjp(self, w: Tensor) -> Tensor:
        """J^T w (flat), for w shaped like the outputs."""
        g = torch.autograd.grad(self.outputs, self.params, grad_outputs=w, retain_graph=True, allow_unused=True)
        return _flat(g, self.params)

    def __call__(self, v: Tensor) -> Tensor:
        if v.dim() != 1 or v.numel() != self.dim:
            raise ShapeError(f"G v needs a flat vector of {self.dim} elements, got shape {tuple(v.shape)}")
        jv = self.jvp(v)
        if self._dloss.requires_grad:
            (hjv,) = torch.autograd.grad(self._dloss, self.outputs, grad_outputs=jv, retain_graph=True, allow_unused=True)
            if hjv is None:
                hjv = torch.zeros_like(jv)
        else:  # the loss is linear in the outputs: H_L = 0
            hjv = torch.zeros_like(jv)
        return self.vjp(hjv)


def gauss_newton_vector_product(outputs: Tensor, loss: Tensor, params: Sequence[Tensor], v: Tensor) -> Tensor:
    """G v = J^T H_L J v for network ``outputs``, ``loss`` computed from them, flat ``v``."""
    return GaussNewtonOperator(outputs, loss, params)(v)


def hutchinson_diagonal(
    matvec, dim: int, samples: int = 1, *, dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None, generator: torch.Generator | None = None,
) -> Tensor:
    r"""Hutchinson's estimate of the diagonal of a symmetric operator :math:`A`, from
    :math:`S` = ``samples`` Rademacher vectors :math:`z^{(s)}` (independent :math:`\pm 1`
    entries):

    .. math::

        \operatorname{diag}(A) \approx \frac{1}{S} \sum_{s=1}^{S} z^{(s)} \odot \bigl(A z^{(s)}\bigr).

    Unbiased because :math:`\mathbb{E}[z_i z_j] = [i = j]`; exact in one sample when
    :math:`A` is diagonal. ``matvec`` is a ``HessianOperator`` (:math:`\operatorname{diag} H`)
    or a ``GaussNewtonOperator`` (:math:`\operatorname{diag} G`, non-negative in expectation).
    """
    if samples < 1:
        raise ConfigError(f"Invalid samples: {samples}; samples must be >= 1")
    total = torch.zeros(dim, dtype=dtype, device=device)
    batched = hasattr(matvec, "matmul")  # a HessianOperator: up to 64 products per backward pass
    done = 0
    while done < samples:
        r = min(64, samples - done) if batched else 1
        Z = torch.randint(0, 2, (r, dim), generator=generator, device=device).to(dtype).mul_(2).sub_(1)
        AZ = matvec.matmul(Z) if batched else matvec(Z[0]).unsqueeze(0)
        total += (Z * AZ).sum(0)
        done += r
    return total / samples


def gauss_newton_diagonal(
    outputs: Tensor, loss: Tensor, params: Sequence[Tensor], samples: int = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The Gauss-Newton diagonal diag(J^T H_L J) by Hutchinson's estimator (see SDLM)."""
    op = GaussNewtonOperator(outputs, loss, params)
    return hutchinson_diagonal(op, op.dim, samples, dtype=outputs.dtype, device=outputs.device, generator=generator)
