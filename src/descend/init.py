r"""Parameter initialization strategies, Deep Learning sec. 8.4.

Weights (each function fills a tensor in place and returns it; :math:`m` is the fan-in,
:math:`n` the fan-out; for a convolution kernel (O, C, k1, k2) they are C k1 k2 and O k1 k2):

* ``uniform_``: :math:`U(-g/\sqrt{m},\ g/\sqrt{m})`, the first heuristic of sec. 8.4
* ``normalized_``: :math:`U\bigl(-g\sqrt{6/(m+n)},\ g\sqrt{6/(m+n)}\bigr)`, eq. 8.23
  (Glorot & Bengio 2010)
* ``lecun_normal_``: :math:`N(0,\ g^2/m)`; ``lecun_uniform_``: :math:`U(-g\sqrt{3/m},\ g\sqrt{3/m})`
* ``he_normal_``: :math:`N(0,\ 2g^2/m)`; ``he_uniform_``: :math:`U(-g\sqrt{6/m},\ g\sqrt{6/m})`
* ``orthogonal_``: :math:`gQ`, :math:`Q` a Haar-random orthogonal matrix (Saxe et al. 2013)
* ``delta_orthogonal_``: a kernel that is :math:`gQ` at its centre, 0 elsewhere (orthogonal
  convolution)
* ``sparse_``: exactly :math:`k` non-zero :math:`N(0, g^2)` incoming weights per unit
  (Martens 2010)
* ``lsuv_``: orthogonal, then each layer rescaled to unit output variance on a batch of
  data, layer by layer in forward order (Mishkin & Matas 2015)

``calculate_gain`` gives the gain g for a nonlinearity. Biases (sec. 8.4, "initialization
of other parameters"): zero by default; ``output_bias_from_marginals_`` solves
softmax(b) = c (or sigmoid(b) = c); ``constant_bias_`` sets e.g. 0.1 for ReLU units;
``forget_gate_bias_`` sets the LSTM forget gate's bias to 1 (Jozefowicz et al. 2015).
``apply_init(model, scheme)`` applies a scheme to every linear and convolutional layer.

Differences from ``torch.nn.init``: torch's ``sparse_`` zeroes a *fraction of each
column* (the same number of zero *outgoing* weights per input); Martens's scheme, here,
gives each unit exactly ``k`` non-zero *incoming* weights. torch's ``orthogonal_``
flattens conv kernels as ours does; ``delta_orthogonal_`` has no torch equivalent.
The gains are those of ``torch.nn.init.calculate_gain``.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch
from torch import Tensor, nn

from descend.errors import ConfigError, DataError, ShapeError

SCHEMES = ("default", "uniform", "normalized", "lecun", "lecun-uniform", "he", "he-uniform",
           "orthogonal", "delta-orthogonal", "sparse", "lsuv")
NONLINEARITIES = ("linear", "conv", "sigmoid", "tanh", "relu", "leaky_relu", "selu")


# ----------------------------------------------------------------------------- helpers
def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    r"""The gain g that keeps the forward signal's scale through ``nonlinearity`` (sec. 8.4).

    .. math::

        g = \begin{cases}
        1 & \text{linear, conv, sigmoid} \\
        5/3 & \tanh \\
        \sqrt{2} & \text{ReLU (half the units are off, so twice the variance is needed; He et al. 2015)} \\
        \sqrt{2 / (1 + a^2)} & \text{leaky ReLU of negative slope } a \ (\texttt{param}) \\
        3/4 & \text{SELU}
        \end{cases}

    the values of ``torch.nn.init.calculate_gain``. Sec. 8.4 says to treat the scale as a
    hyperparameter "roughly near but not exactly equal to the theoretical predictions".
    """
    if nonlinearity in ("linear", "conv", "sigmoid"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3.0
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1.0 + slope**2))
    if nonlinearity == "selu":
        return 0.75
    raise ConfigError(f"unknown nonlinearity {nonlinearity!r}; use one of {', '.join(NONLINEARITIES)}")


def fans(w: Tensor) -> tuple[int, int]:
    r"""(fan-in :math:`m`, fan-out :math:`n`) of a weight of shape ``(out, in, *kernel)``:
    :math:`m = \text{in} \cdot \prod \text{kernel}`, :math:`n = \text{out} \cdot \prod \text{kernel}`."""
    if w.dim() < 2:
        raise ShapeError(
            f"weight initialization needs a matrix or a kernel stack (>= 2 dims), got shape {tuple(w.shape)}; "
            "biases are set with the *_bias_ functions"
        )
    receptive = math.prod(w.shape[2:])
    return w.shape[1] * receptive, w.shape[0] * receptive


def _check_gain(gain: float) -> float:
    gain = float(gain)
    if not math.isfinite(gain) or gain <= 0:
        raise ConfigError(f"Invalid gain: {gain}; the gain must be a positive number")
    return gain


@torch.no_grad()
def _uniform(w: Tensor, bound: float, generator: torch.Generator | None) -> Tensor:
    return w.uniform_(-bound, bound, generator=generator)


@torch.no_grad()
def _normal(w: Tensor, std: float, generator: torch.Generator | None) -> Tensor:
    return w.normal_(0.0, std, generator=generator)


# ----------------------------------------------------------------------------- dense schemes
def uniform_(w: Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    r"""The first heuristic of sec. 8.4, with :math:`m` the fan-in and :math:`g` the gain:

    .. math::

        W_{i,j} \sim U\Bigl(-\frac{g}{\sqrt{m}}, \frac{g}{\sqrt{m}}\Bigr).

    Variance :math:`g^2 / (3m)`. (torch's default for Linear/Conv is this with g = 1, written as
    ``kaiming_uniform_(a=sqrt(5))``.)
    """
    m, _ = fans(w)
    return _uniform(w, _check_gain(gain) / math.sqrt(m), generator)


def normalized_(w: Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    r"""Normalized initialization, eq. 8.23 (with gain :math:`g`; the text has :math:`g = 1`):

    .. math::

        W_{i,j} \sim U\Bigl(-g\sqrt{\frac{6}{m+n}},\ g\sqrt{\frac{6}{m+n}}\Bigr).

    Glorot & Bengio (2010): variance :math:`2 g^2/(m+n)`, a compromise between equal activation
    variance (:math:`1/m`) and equal gradient variance (:math:`1/n`) in every layer of a
    linear chain.
    Same as ``torch.nn.init.xavier_uniform_``.
    """
    m, n = fans(w)
    return _uniform(w, _check_gain(gain) * math.sqrt(6.0 / (m + n)), generator)


def lecun_normal_(w: Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    r"""LeCun et al. (1998, "Efficient BackProp"):

    .. math::

        W_{i,j} \sim N\Bigl(0, \frac{g^2}{m}\Bigr),

    unit output variance for unit-variance inputs of a linear unit
    (``kaiming_normal_(nonlinearity="linear")``)."""
    m, _ = fans(w)
    return _normal(w, _check_gain(gain) / math.sqrt(m), generator)


def lecun_uniform_(w: Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    r"""LeCun's variance :math:`g^2/m` with a uniform distribution:

    .. math::

        W_{i,j} \sim U\Bigl(-g\sqrt{\frac{3}{m}},\ g\sqrt{\frac{3}{m}}\Bigr).
    """
    m, _ = fans(w)
    return _uniform(w, _check_gain(gain) * math.sqrt(3.0 / m), generator)


def he_normal_(w: Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    r"""He et al. (2015): LeCun's variance doubled for ReLU units (which zero half of their
    inputs),

    .. math::

        W_{i,j} \sim N\Bigl(0, \frac{2 g^2}{m}\Bigr);

    ``kaiming_normal_(nonlinearity="relu")`` for :math:`g = 1`."""
    m, _ = fans(w)
    return _normal(w, _check_gain(gain) * math.sqrt(2.0 / m), generator)


def he_uniform_(w: Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    r"""He's variance :math:`2 g^2/m` with a uniform distribution:

    .. math::

        W_{i,j} \sim U\Bigl(-g\sqrt{\frac{6}{m}},\ g\sqrt{\frac{6}{m}}\Bigr).
    """
    m, _ = fans(w)
    return _uniform(w, _check_gain(gain) * math.sqrt(6.0 / m), generator)


@torch.no_grad()
def _haar_orthogonal(rows: int, cols: int, generator, dtype, device) -> Tensor:
    """A (rows, cols) matrix with orthonormal rows (rows <= cols) or columns (rows >= cols),
    distributed uniformly (Haar) over such matrices."""
    big, small = max(rows, cols), min(rows, cols)
    a = torch.randn(big, small, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    # QR's signs are arbitrary (LAPACK's R has a negative diagonal half of the time);
    # fixing diag(R) > 0 makes Q Haar distributed (Mezzadri 2007).
    q = q * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, torch.ones(()))
    q = q if rows >= cols else q.T
    return q.to(dtype=dtype, device=device)


def orthogonal_(w: Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    r"""A random orthogonal matrix times the gain :math:`g` (Saxe et al. 2013, sec. 8.4):
    :math:`W = g Q`.

    The weight is viewed as a (out, m) matrix :math:`W` (a conv kernel (O, C, k, k) as
    (O, C k k), as ``torch.nn.init.orthogonal_`` does). With out >= m the columns are
    orthonormal, :math:`W^\top W = g^2 I`; with out <= m the rows are, :math:`W W^\top = g^2 I`. In a deep *linear* network
    such weights preserve the norm of every signal exactly, forward and backward.
    """
    gain = _check_gain(gain)
    fans(w)
    rows = w.shape[0]
    cols = w.numel() // rows
    q = _haar_orthogonal(rows, cols, generator, w.dtype, w.device)
    with torch.no_grad():
        w.copy_(q.reshape(w.shape) * gain)
    return w


def delta_orthogonal_(w: Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    r"""Orthogonal initialization for convolutions (Xiao et al. 2018): the kernel is zero
    except at its central tap, which is :math:`g Q` for a random orthogonal (O, C) matrix
    :math:`Q`:

    .. math::

        K_{:,:,p} = \begin{cases} g Q & p = \text{centre} \\ 0 & \text{otherwise.} \end{cases}

    At initialization the convolution then maps each position's channel vector by :math:`gQ`, so
    with O >= C it preserves the norm of the whole feature map (away from the borders),
    unlike ``orthogonal_``, which only makes the flattened kernel matrix orthogonal.
    Needs odd kernel sizes (a well-defined centre).
    """
    gain = _check_gain(gain)
    if w.dim() < 3 or any(k % 2 == 0 for k in w.shape[2:]):
        raise ShapeError(
            f"delta_orthogonal_ needs a conv kernel (O, C, k...) with odd sizes k, got shape {tuple(w.shape)}"
        )
    q = _haar_orthogonal(w.shape[0], w.shape[1], generator, w.dtype, w.device)
    centre = tuple(k // 2 for k in w.shape[2:])
    with torch.no_grad():
        w.zero_()
        w[(slice(None), slice(None), *centre)] = q * gain
    return w


def sparse_(
    w: Tensor, k: int = 15, gain: float = 1.0, std: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    r"""Sparse initialization (Martens 2010, sec. 8.4): each unit :math:`i` gets exactly
    :math:`k` non-zero incoming weights, drawn from :math:`N\bigl(0, (g \sigma)^2\bigr)` with
    :math:`\sigma` = ``std``; the rest are 0:

    .. math::

        W_{i,j} \sim N\bigl(0, (g\sigma)^2\bigr) \text{ for } j \in S_i,\quad
        W_{i,j} = 0 \text{ otherwise},\qquad S_i \subset \{1, \dots, m\},\ |S_i| = k
        \text{ uniformly at random}.

    "The idea is to keep the total amount of input to the unit independent from the number
    of inputs m without making the magnitude of individual weight elements shrink with m."
    Martens used k = 15 and unit Gaussians. For a conv kernel (O, C, kh, kw) a unit is an
    output channel and its incoming weights are the C kh kw kernel entries.
    Unlike ``torch.nn.init.sparse_``, which zeroes a fraction of each *column*.
    """
    gain = _check_gain(gain)
    m, _ = fans(w)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= m:
        raise ConfigError(f"sparse initialization needs 1 <= k <= fan-in = {m} non-zero weights per unit, got k={k!r}")
    if not std > 0:
        raise ConfigError(f"Invalid std: {std}; it must be > 0")
    rows = w.shape[0]
    with torch.no_grad():
        # k distinct columns per row: the first k of a random permutation of each row.
        cols = torch.rand(rows, m, generator=generator).argsort(dim=1)[:, :k]
        values = torch.randn(rows, k, generator=generator) * (gain * std)
        dense = torch.zeros(rows, m).scatter_(1, cols, values)
        w.copy_(dense.reshape(w.shape))
    return w


# ----------------------------------------------------------------------------- LSUV
LAYERS: tuple[type, ...] = (nn.Linear, nn.modules.conv._ConvNd)


def _descend_layers() -> tuple[type, ...]:
    try:  # descend's own convolutions hold weights in torch's layout
        from descend.nn.conv import _ConvNd

        return (_ConvNd,)
    except ImportError:  # pragma: no cover
        return ()


def weight_layers(model: nn.Module) -> list[nn.Module]:
    """The linear and convolutional layers of ``model`` (torch's and descend's), in module order.

    Transposed convolutions are left out: their weight is (in, out, ...), and their fan-in
    is not ``weight.shape[1]``.
    """
    kinds = LAYERS + _descend_layers()
    out = []
    for mod in model.modules():
        if isinstance(mod, kinds) and not isinstance(mod, nn.modules.conv._ConvTransposeNd):
            if isinstance(getattr(mod, "weight", None), Tensor) and mod.weight.dim() >= 2:
                out.append(mod)
    return out


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the layer of interest has run."""


def forward_order(model: nn.Module, x: Tensor, layers: Sequence[nn.Module]) -> list[nn.Module]:
    """``layers`` in the order the forward pass of ``model`` on ``x`` calls them (unused ones dropped)."""
    order: list[nn.Module] = []
    handles = [m.register_forward_hook(lambda mod, i, o: order.append(mod) if mod not in order else None)
               for m in layers]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return order


@torch.no_grad()
def _output_variance(model: nn.Module, x: Tensor, layer: nn.Module) -> float:
    captured: list[Tensor] = []

    def hook(mod, inputs, output):
        captured.append(output)
        raise _Stop  # nothing after this layer is needed

    handle = layer.register_forward_hook(hook)
    try:
        model(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not captured:
        raise ShapeError("LSUV: a layer was not reached by the forward pass")
    return float(captured[0].double().var())


def lsuv_(
    model: nn.Module,
    x: Tensor,
    tol: float = 0.1,
    max_iter: int = 10,
    gain: float = 1.0,
    pre_init: str = "orthogonal",
    generator: torch.Generator | None = None,
) -> list[float]:
    r"""Layer-sequential unit-variance initialization (Mishkin & Matas 2015; sec. 8.4's
    "look at the range or standard deviation of activations ... on a single minibatch").

    Algorithm (their Algorithm 1), with :math:`g` = ``gain``:

    .. math::

        \begin{aligned}
        &\text{pre-initialize every linear/conv layer with orthonormal matrices (}
            \texttt{pre\_init}\text{)} \\
        &\textbf{for } \text{each layer } L \text{, in forward order } \textbf{do} \\
        &\quad v \leftarrow \operatorname{Var}(\text{output of } L \text{ on the batch } x) \\
        &\quad \textbf{while } |v - g^2| \ge \texttt{tol} \cdot g^2
            \text{ and fewer than } \texttt{max\_iter} \text{ rescalings } \textbf{do} \\
        &\qquad W_L \leftarrow \frac{g}{\sqrt{v}}\, W_L \\
        &\qquad v \leftarrow \operatorname{Var}(\text{output of } L \text{ on the batch } x) \\
        &\quad \textbf{end while} \\
        &\textbf{end for}
        \end{aligned}

    Then each layer's output has variance :math:`g^2` (unit variance for :math:`g = 1`) on
    ``x``. The model runs in evaluation mode (no dropout noise; batch norm
    uses its running statistics, which are the identity before training).
    Returns the final output variance of each layer, in forward order.
    """
    if not tol > 0 or max_iter < 1:
        raise ConfigError(f"LSUV needs tol > 0 and max_iter >= 1, got tol={tol}, max_iter={max_iter}")
    gain = _check_gain(gain)
    if not torch.is_tensor(x) or len(x) < 2:
        raise ShapeError("LSUV needs a batch of at least 2 inputs to measure a variance")
    layers = weight_layers(model)
    if not layers:
        raise ConfigError("LSUV found no linear or convolutional layer in the model")
    was_training = model.training
    model.eval()
    try:
        if pre_init != "none":
            for layer in layers:
                _WEIGHT_SCHEMES[pre_init](layer.weight, 1.0, generator)
        target = gain**2
        variances = []
        for layer in forward_order(model, x, layers):
            v = _output_variance(model, x, layer)
            for _ in range(max_iter):
                if abs(v - target) < tol * target:
                    break
                if not math.isfinite(v) or v <= 0:
                    raise DataError(
                        f"LSUV: the output variance of {layer.__class__.__name__} is {v} on the batch; "
                        "use a batch of varied, finite inputs"
                    )
                with torch.no_grad():
                    layer.weight.mul_(math.sqrt(target / v))
                v = _output_variance(model, x, layer)
            variances.append(v)
    finally:
        model.train(was_training)
    return variances


# ----------------------------------------------------------------------------- biases
def class_marginals(labels: Tensor, num_classes: int | None = None, smoothing: float = 0.0) -> Tensor:
    r"""The empirical class distribution :math:`c` of integer ``labels`` (with ``smoothing``
    :math:`\lambda` added to each count): :math:`c_k = (n_k + \lambda) / \sum_j (n_j + \lambda)`,
    :math:`n_k` the number of labels equal to :math:`k`."""
    labels = torch.as_tensor(labels)
    if labels.dtype in (torch.float16, torch.float32, torch.float64) or labels.dim() != 1 or len(labels) == 0:
        raise ShapeError(f"class_marginals needs a non-empty 1-D tensor of integer labels, got {labels.dtype} "
                         f"{tuple(labels.shape)}")
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    if smoothing < 0:
        raise ConfigError(f"smoothing must be >= 0, got {smoothing}")
    counts = torch.bincount(labels.long(), minlength=num_classes).double() + smoothing
    return counts / counts.sum()


@torch.no_grad()
def output_bias_from_marginals_(bias: Tensor, c: Tensor, activation: str = "softmax") -> Tensor:
    r"""Set an output layer's bias so that, with small weights, the output matches the
    marginal statistics :math:`c` of the training targets (sec. 8.4):

    .. math::

        \operatorname{softmax}(b) = c \;\Leftarrow\; b = \log c, \qquad
        \sigma(b) = c \;\Leftrightarrow\; b = \log \frac{c}{1 - c}

    (softmax is shift-invariant; this :math:`b` has :math:`\operatorname{logsumexp}(b) = 0`);
    the second form is for sigmoid outputs.
    """
    c = torch.as_tensor(c, dtype=torch.float64)
    if c.shape != bias.shape:
        raise ShapeError(f"the marginals have shape {tuple(c.shape)} but the bias has {tuple(bias.shape)}")
    if not bool(((c > 0) & (c < 1 if activation == "sigmoid" else c <= 1)).all()):
        zero = torch.nonzero(c <= 0).flatten().tolist()
        raise DataError(
            f"output_bias_from_marginals_ needs marginals strictly inside (0, 1); class(es) {zero or '?'} "
            "have probability 0 (or 1). Add smoothing (class_marginals(..., smoothing=1))"
        )
    if activation == "softmax":
        if abs(float(c.sum()) - 1.0) > 1e-6:
            raise DataError(f"softmax marginals must sum to 1, got {float(c.sum())}")
        b = c.log()
    elif activation == "sigmoid":
        b = (c / (1 - c)).log()
    else:
        raise ConfigError(f"unknown output activation {activation!r}; use 'softmax' or 'sigmoid'")
    return bias.copy_(b.to(bias.dtype))


@torch.no_grad()
def constant_bias_(modules: nn.Module | Iterable[nn.Module], value: float) -> None:
    """Set the bias of every linear/conv layer in ``modules`` to ``value``, e.g. 0.1 for ReLU
    units "to avoid saturating the ReLU at initialization" (sec. 8.4), or 0.

    ``modules`` is a layer, a model (all its linear and conv layers) or a list of them.
    """
    modules = [modules] if isinstance(modules, nn.Module) else list(modules)
    for layer in (layer for m in modules for layer in weight_layers(m)):
        if isinstance(layer.bias, Tensor):
            layer.bias.fill_(value)


@torch.no_grad()
def forget_gate_bias_(module: nn.Module, value: float = 1.0) -> int:
    """Set the forget-gate bias of every LSTM in ``module`` to ``value`` and its other gate
    biases to 0 (sec. 8.4; Jozefowicz et al. 2015). Returns the number of LSTMs changed.

    ``torch.nn.LSTM``/``LSTMCell`` order their gate blocks (i, f, g, o) and add two bias
    vectors; the forget block of ``bias_ih`` gets ``value`` and that of ``bias_hh`` 0, so
    the effective bias is ``value``. descend's ``LSTMCell`` has one vector ``b``.
    """
    changed = 0
    for m in module.modules():
        if isinstance(m, (nn.LSTM, nn.LSTMCell)):
            H = m.hidden_size
            for name, p in m.named_parameters():
                if name.startswith("bias_"):
                    p.zero_()
                    if name.startswith("bias_ih"):
                        p[H : 2 * H] = value
            changed += 1
        elif type(m).__name__ == "LSTMCell" and hasattr(m, "b") and hasattr(m, "hidden_size"):
            H = m.hidden_size
            m.b.zero_()
            m.b[H : 2 * H] = value
            m.forget_bias = float(value)
            changed += 1
    return changed


# ----------------------------------------------------------------------------- apply_init
_WEIGHT_SCHEMES = {
    "uniform": uniform_,
    "normalized": normalized_,
    "lecun": lecun_normal_,
    "lecun-uniform": lecun_uniform_,
    "he": he_normal_,
    "he-uniform": he_uniform_,
    "orthogonal": orthogonal_,
    "delta-orthogonal": delta_orthogonal_,
}


def default_gain(scheme: str, nonlinearity: str = "linear") -> float:
    """The gain a scheme uses when none is given: He's schemes carry their sqrt(2) in the
    formula, LeCun's are defined with g = 1 and LSUV aims at unit variance whatever the
    nonlinearity (Mishkin & Matas); the others use ``calculate_gain``."""
    if scheme in ("he", "he-uniform", "lecun", "lecun-uniform", "lsuv"):
        return 1.0
    return calculate_gain(nonlinearity)


def apply_init(
    model: nn.Module,
    scheme: str,
    gain: float | None = None,
    *,
    nonlinearity: str = "linear",
    sparse_k: int = 15,
    hidden_bias: float = 0.0,
    output_bias: Tensor | None = None,
    output_activation: str = "softmax",
    forget_bias: float | None = 1.0,
    data: Tensor | None = None,
    lsuv_tol: float = 0.1,
    generator: torch.Generator | None = None,
) -> nn.Module:
    """Initialize every linear and convolutional layer of ``model`` with ``scheme`` (sec. 8.4).

    Args:
        scheme: one of ``SCHEMES``: "default" keeps the layers' own initialization (only the
            biases below are set), "lsuv" needs ``data`` (a batch of inputs).
        gain: the gain g; by default ``default_gain(scheme, nonlinearity)``.
        nonlinearity: the hidden units' nonlinearity, for the default gain.
        sparse_k: non-zero incoming weights per unit for "sparse" (capped at each layer's fan-in).
        hidden_bias: the bias of every layer but the last (0; 0.1 is the text's ReLU choice).
        output_bias: marginals c for the last layer's bias (softmax(b) = c), or None for 0.
        forget_bias: the forget-gate bias of LSTMs in the model (None leaves them alone).
        generator: for reproducible draws.

    The last layer in module order is taken as the output layer. Layers other than
    linear and convolutional ones (normalization, recurrent weights, locally connected)
    keep their own initialization.
    """
    if scheme not in SCHEMES:
        raise ConfigError(f"unknown initialization scheme {scheme!r}; use one of {', '.join(SCHEMES)}")
    if nonlinearity not in NONLINEARITIES:
        raise ConfigError(f"unknown nonlinearity {nonlinearity!r}; use one of {', '.join(NONLINEARITIES)}")
    g = default_gain(scheme, nonlinearity) if gain is None else _check_gain(gain)
    layers = weight_layers(model)
    # Biases first: LSUV measures output variances with the biases in place.
    if layers:
        constant_bias_(layers[:-1], hidden_bias)
        if output_bias is not None and layers[-1].bias is not None:
            output_bias_from_marginals_(layers[-1].bias, output_bias, output_activation)
        else:
            constant_bias_(layers[-1], 0.0)
    if forget_bias is not None:
        forget_gate_bias_(model, forget_bias)
    if scheme == "lsuv":
        if data is None:
            raise ConfigError("init scheme 'lsuv' needs a batch of training inputs (data=...)")
        lsuv_(model, data, tol=lsuv_tol, gain=g, generator=generator)
    elif scheme == "sparse":
        for layer in layers:
            sparse_(layer.weight, min(sparse_k, fans(layer.weight)[0]), gain=g, generator=generator)
    elif scheme == "delta-orthogonal":
        for layer in layers:  # linear layers: a plain orthogonal matrix
            fn = delta_orthogonal_ if layer.weight.dim() > 2 else orthogonal_
            fn(layer.weight, g, generator)
    elif scheme != "default":
        for layer in layers:
            _WEIGHT_SCHEMES[scheme](layer.weight, g, generator)
    return model
