r"""Coordinate descent and block coordinate descent (Deep Learning sec. 8.7.2).

"If we minimize f(x) with respect to a single variable x_i, then minimize it with
respect to another variable x_j and so on, repeatedly cycling through all variables, we
are guaranteed to arrive at a (local) minimum." Block coordinate descent minimizes over
a subset of the variables at a time. Each update is an exact minimization, so the
objective never increases.

* ``coordinate_descent``: (block) coordinate descent on a quadratic
  :math:`J(x) = \frac{1}{2} x^\top A x - b^\top x`, each block solved exactly (Gauss-Seidel
  for single coordinates). The book's warning case
  :math:`f(x) = (x_1 - x_2)^2 + \alpha (x_1^2 + x_2^2)` is ``coupled_quadratic(alpha)``: for
  small :math:`\alpha` each sweep shrinks :math:`x` by only :math:`1 / (1 + \alpha)^2`, while
  Newton's method solves it in one step.
* ``block_coordinate_descent``: the generic loop: a list of block minimizers, cycled.
* Sparse coding, eq. 8.38,

  .. math::

      J(H, W) = \sum_{i,j} |H_{i,j}| + \sum_{i,j} \bigl(X - W^\top H\bigr)_{i,j}^2,

  is not convex, but convex in H for fixed W and in W for fixed H. ``sparse_coding``
  alternates the two: ``sparse_codes`` minimizes over H (a lasso, solved by exact
  coordinate descent over the rows of H: soft-thresholding, all examples at once) and
  ``dictionary_least_squares`` over W (least squares). Shapes: X is d x m (one example
  per column), H is k x m (one code per column), W is k x d (one atom per row).
  Optional extras from the text ("most applications ... also involve weight decay"): a
  weight ``sparsity`` on the L1 term and ``weight_decay`` :math:`\cdot \lVert W \rVert^2`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor

from descend.errors import ConfigError, ShapeError

__all__ = [
    "coordinate_descent",
    "coupled_quadratic",
    "block_coordinate_descent",
    "sparse_coding_objective",
    "sparse_codes",
    "dictionary_least_squares",
    "sparse_coding",
    "SparseCodingResult",
]


def coupled_quadratic(alpha: float, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    r""":math:`(A, b)` with :math:`\frac{1}{2} x^\top A x - b^\top x = (x_1 - x_2)^2 + \alpha (x_1^2 + x_2^2)`
    (sec. 8.7.2)."""
    A = torch.tensor([[2 + 2 * alpha, -2.0], [-2.0, 2 + 2 * alpha]], dtype=dtype)
    return A, torch.zeros(2, dtype=dtype)


def coordinate_descent(
    A: Tensor,
    b: Tensor,
    x0: Tensor | None = None,
    sweeps: int = 100,
    blocks: Sequence[Sequence[int]] | None = None,
    tol: float = 0.0,
) -> tuple[Tensor, list[float]]:
    r"""(Block) coordinate descent (sec. 8.7.2) on a quadratic, :math:`A` symmetric positive
    definite:

    .. math::

        J(x) = \frac{1}{2} x^\top A x - b^\top x.

    One sweep minimizes :math:`J` exactly over each block :math:`B` in turn, the others
    (:math:`R`, the rest) fixed:

    .. math::

        x_B \leftarrow A_{BB}^{-1} (b_B - A_{BR}\, x_R).

    ``blocks`` defaults to single coordinates
    (Gauss-Seidel). The sweep is sequential by definition (each block sees the updates
    before it); each block update is vectorized. Returns x and J after each sweep
    (J before the first sweep at index 0); stops early when a sweep lowers J by <= ``tol``.
    """
    if A.dim() != 2 or A.shape[0] != A.shape[1] or b.shape != (A.shape[0],):
        raise ShapeError(f"A must be n x n and b of length n, got {tuple(A.shape)} and {tuple(b.shape)}")
    if sweeps < 0:
        raise ConfigError(f"Invalid sweeps: {sweeps}; sweeps must be >= 0")
    n = A.shape[0]
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    index = [torch.as_tensor(list(B), dtype=torch.long) for B in (blocks or [[i] for i in range(n)])]
    covered = torch.cat(index).unique()
    if covered.numel() != n:
        raise ConfigError("blocks must cover every coordinate 0..n-1")

    def J(x: Tensor) -> float:
        return float(0.5 * x @ A @ x - b @ x)

    history = [J(x)]
    for _ in range(sweeps):
        for B in index:
            # the part of A x that does not involve x_B
            rest = A[B] @ x - A[B][:, B] @ x[B]
            x[B] = torch.linalg.solve(A[B][:, B], b[B] - rest)
        history.append(J(x))
        if history[-2] - history[-1] <= tol:
            break
    return x, history


def block_coordinate_descent(
    objective: Callable[[], float],
    block_minimizers: Sequence[Callable[[], None]],
    sweeps: int,
    tol: float = 0.0,
) -> list[float]:
    r"""Cycle through ``block_minimizers`` (each minimizes the objective over its block in place).

    Block coordinate descent (sec. 8.7.2): for blocks :math:`x_{B_1}, \dots, x_{B_n}` of the
    variables, one sweep is

    .. math::

        x_{B_j} \leftarrow \operatorname*{arg\,min}_{x_{B_j}} J(x), \qquad j = 1, \dots, n.

    Returns the objective before the first sweep and after every block update; stops
    when a whole sweep lowers it by <= ``tol`` (relative to :math:`\max(1, |J|)`).
    """
    if sweeps < 0:
        raise ConfigError(f"Invalid sweeps: {sweeps}; sweeps must be >= 0")
    history = [objective()]
    for _ in range(sweeps):
        start = history[-1]
        for minimize_block in block_minimizers:
            minimize_block()
            history.append(objective())
        if start - history[-1] <= tol * max(1.0, abs(start)):
            break
    return history


# ----------------------------------------------------------------------------- sparse coding


def _check_shapes(X: Tensor, W: Tensor | None = None, H: Tensor | None = None) -> None:
    if X.dim() != 2:
        raise ShapeError(f"X must be d x m (one example per column), got shape {tuple(X.shape)}")
    d, m = X.shape
    if W is not None and (W.dim() != 2 or W.shape[1] != d):
        raise ShapeError(f"W must be k x d = k x {d} (one atom per row), got shape {tuple(W.shape)}")
    if H is not None and (H.dim() != 2 or H.shape[1] != m or (W is not None and H.shape[0] != W.shape[0])):
        k = W.shape[0] if W is not None else "k"
        raise ShapeError(f"H must be k x m = {k} x {m} (one code per column), got shape {tuple(H.shape)}")


def sparse_coding_objective(X: Tensor, W: Tensor, H: Tensor, sparsity: float = 1.0, weight_decay: float = 0.0) -> float:
    r"""Eq. 8.38 with weights :math:`\lambda` = ``sparsity`` and :math:`\mu` = ``weight_decay``:
    :math:`\lambda \sum_{i,j} |H_{i,j}| + \sum_{i,j} (X - W^\top H)_{i,j}^2 + \mu \sum_{i,j} W_{i,j}^2`."""
    _check_shapes(X, W, H)
    J = sparsity * H.abs().sum() + (X - W.T @ H).square().sum()
    if weight_decay:
        J = J + weight_decay * W.square().sum()
    return float(J)


def sparse_codes(
    X: Tensor, W: Tensor, H: Tensor | None = None, sparsity: float = 1.0, sweeps: int = 50, tol: float = 1e-10
) -> Tensor:
    r""":math:`\operatorname*{arg\,min}_H \lambda \sum |H| + \lVert X - W^\top H \rVert^2` for
    fixed :math:`W` (:math:`\lambda` = ``sparsity``), by exact coordinate descent.

    Row :math:`r` of :math:`H` (atom :math:`r`'s coefficient in every example) has the
    closed-form minimizer

    .. math::

        h_r = \frac{\operatorname{soft}(w_r^\top R_r, \lambda / 2)}{\lVert w_r \rVert^2},
        \qquad R_r = X - W^\top H + w_r h_r^\top,
        \qquad \operatorname{soft}(a, t) = \operatorname{sign}(a) \max(|a| - t, 0),

    :math:`R_r` being the residual without atom :math:`r`; :math:`w_r^\top R_r` is computed
    from the Gram matrices :math:`W W^\top` and :math:`W X` (:math:`O(km)` per row). Examples are
    independent given W, so each row update covers all m examples in one vectorized
    operation; sweeps over the k rows repeat until no entry moves by more than ``tol``.
    Each update is an exact minimization, so the objective never increases.
    """
    _check_shapes(X, W, H)
    H = torch.zeros((W.shape[0], X.shape[1]), dtype=X.dtype, device=X.device) if H is None else H.clone()
    # w_r^T R_r = (W X)_r - (W W^T)_r H + ||w_r||^2 h_r: the Gram form needs no residual matrix
    G = W @ W.T
    C = W @ X
    threshold = 0.5 * sparsity
    for _ in range(sweeps):
        moved = 0.0
        for r in range(W.shape[0]):  # coordinate blocks: one atom at a time (k is small)
            norm = G[r, r]
            if norm == 0:
                continue  # a dead atom contributes nothing; its row minimizes |h| at 0
            old = H[r].clone()
            a = C[r] - G[r] @ H + norm * old
            new = torch.sign(a) * (a.abs() - threshold).clamp_min(0) / norm
            H[r] = new
            moved = max(moved, float((new - old).abs().max()))
        if moved <= tol:
            break
    return H


def dictionary_least_squares(X: Tensor, H: Tensor, weight_decay: float = 0.0) -> Tensor:
    r""":math:`\operatorname*{arg\,min}_W \lVert X - W^\top H \rVert^2 + \mu \lVert W \rVert^2`
    for fixed :math:`H` (:math:`\mu` = ``weight_decay``): least squares,

    .. math::

        W = (H H^\top + \mu I)^{-1} H X^\top;

    with :math:`\mu = 0` via ``torch.linalg.lstsq`` on :math:`H^\top W = X^\top`, which also handles rank-deficient H (unused atoms) by the
    minimum-norm solution.
    """
    if X.dim() != 2 or H.dim() != 2 or H.shape[1] != X.shape[1]:
        raise ShapeError(f"X (d x m) and H (k x m) must share m, got {tuple(X.shape)} and {tuple(H.shape)}")
    if weight_decay < 0:
        raise ConfigError(f"Invalid weight_decay: {weight_decay}; it must be >= 0")
    if weight_decay > 0:
        A = H @ H.T + weight_decay * torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
        return torch.linalg.solve(A, H @ X.T)
    return torch.linalg.lstsq(H.T, X.T, driver="gelsd" if X.device.type == "cpu" else None).solution


@dataclass
class SparseCodingResult:
    W: Tensor
    H: Tensor
    objective: list[float] = field(default_factory=list)  # J at the start and after each half-step
    steps: list[str] = field(default_factory=list)  # "init", then "H" / "W" for each entry


def sparse_coding(X: Tensor, n_atoms: int, iterations: int = 20, *, sparsity: float = 1.0, weight_decay: float = 0.0,
                  code_sweeps: int = 50, tol: float = 0.0, W0: Tensor | None = None,
                  generator: torch.Generator | None = None) -> SparseCodingResult:
    r"""Sparse coding (eq. 8.38) by block coordinate descent: alternately H, then W.

    Minimizes (with :math:`\lambda` = ``sparsity``, :math:`\mu` = ``weight_decay``; the book's
    eq. 8.38 is :math:`\lambda = 1, \mu = 0`)

    .. math::

        J(H, W) = \lambda \sum_{i,j} |H_{i,j}| + \sum_{i,j} \bigl(X - W^\top H\bigr)_{i,j}^2
            + \mu \sum_{i,j} W_{i,j}^2.

    H starts at 0, W at ``W0`` or at randomly chosen examples scaled to unit norm (plus a
    little noise, so that no two atoms coincide). Each iteration minimizes
    over H (``sparse_codes``, warm-started) then over W (``dictionary_least_squares``), by
    ``block_coordinate_descent``; both are exact block minimizations, so the recorded
    objective is non-increasing (up to the round-off of the least-squares solve). Stops
    after ``iterations`` or when an iteration lowers :math:`J` by
    :math:`\le \texttt{tol} \cdot \max(1, |J|)`.
    """
    _check_shapes(X)
    if n_atoms < 1:
        raise ConfigError(f"Invalid n_atoms: {n_atoms}; the dictionary needs n_atoms >= 1")
    if sparsity <= 0:
        raise ConfigError(f"Invalid sparsity: {sparsity}; the L1 weight must be > 0")
    d, m = X.shape
    if W0 is None:  # atoms start as randomly chosen examples, scaled to unit norm
        idx = torch.randint(0, m, (n_atoms,), generator=generator).to(X.device)
        W = X[:, idx].T + 1e-3 * torch.randn((n_atoms, d), dtype=X.dtype, generator=generator).to(X.device)
        W = W / W.norm(dim=1, keepdim=True)
    else:
        _check_shapes(X, W0)
        W = W0.clone()
    H = torch.zeros((n_atoms, m), dtype=X.dtype, device=X.device)
    result = SparseCodingResult(W, H)

    def objective() -> float:
        return sparse_coding_objective(X, result.W, result.H, sparsity, weight_decay)

    def h_step() -> None:
        result.H = sparse_codes(X, result.W, result.H, sparsity, sweeps=code_sweeps)

    def w_step() -> None:
        result.W = dictionary_least_squares(X, result.H, weight_decay)

    result.objective = block_coordinate_descent(objective, [h_step, w_step], iterations, tol)
    result.steps = ["init"] + ["H", "W"] * ((len(result.objective) - 1) // 2)
    return result
