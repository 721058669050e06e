r"""Recurrent networks of Deep Learning ch. 10.1-10.2 and the LSTM of sec. 10.10.

* ``RNN``: hidden-to-hidden recurrence, eqs. 10.8-10.9 (fig. 10.3)
* ``SequenceToSequence``: an output :math:`o^{(t)} = c + V h^{(t)}` at every step,
  eq. 10.10; with ``RNN`` and ``sequence_nll`` this is the whole network of eqs. 10.8-10.14
* ``SequenceToOne``: a single output from the final state (fig. 10.5)
* ``sequence_nll``: the loss of eqs. 10.12-10.14 (softmax of eq. 10.11 inside)
* ``OutputRecurrentRNN``: output-to-hidden recurrence (fig. 10.4), teacher forcing
  (sec. 10.2.1, fig. 10.6), free-running generation, scheduled sampling
* ``LSTMCell``, ``LSTM``: the gated cell of sec. 10.10 with forget-gate bias 1 (sec. 8.4)

Conventions. Sequences are batch-first, ``(batch N, time T, features F)``. Every
recurrent module maps ``(x, state=None)`` to ``(output, state)`` like ``torch.nn.RNN``,
so a long sequence can be fed in chunks with the state carried over (unfolding is the
same whether the graph is cut or not, sec. 10.1; truncated BPTT in
``descend.train.tbptt`` relies on it). Time is a Python loop (the recurrence is
inherently sequential, sec. 10.2: "each time step may only be computed after the
previous one"); nothing loops over the batch, and the input projections :math:`U x^{(t)}` of
all steps are one matrix product before the loop.

Backward. ``bptt`` picks how gradients are computed:

* ``"explicit"``: the BPTT recursions of ``descend.nn.bptt`` (eqs. 10.19-10.21 and
  their LSTM analogue) wrapped in a ``torch.autograd.Function``: a few tensor
  operations per time step instead of autograd replaying every per-step node. The
  default of ``RNN``.
* ``"fused"`` (LSTM and RNN): torch's own sequence kernel (``torch._VF.lstm``, the
  function behind ``torch.nn.LSTM``; oneDNN on CPU, cuDNN on CUDA) called with this
  layer's parameters. The equations are the same, so are the numbers up to float
  rounding. The default of ``LSTM``, where it is the fastest path.
* ``"autograd"``: plain autograd through the Python loop over time: the reference
  the tests compare against, and the path to use when second derivatives are needed
  (the explicit backward is ``once_differentiable``).

Mixed precision. Under ``torch.autocast`` the explicit and fused paths convert their
inputs and parameters to the autocast dtype at the boundary and run with autocast
disabled inside (see ``descend.nn.functional.autocast``): the work is matrix products,
which autocast runs in the lower precision anyway, and inside a
``torch.autograd.Function`` autocast would see only some of the ops. That is what
torch's own recurrent kernels do under autocast. (It also sidesteps a failure of
``torch.nn.LSTM`` under float16 autocast on CPU, where autocast hands the sequence to
oneDNN's LSTM primitive, which has no float16 form there; given float16 tensors
outside autocast, torch picks a kernel that has one.)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from descend.errors import ConfigError, ShapeError
from descend.nn.bptt import lstm_backward, tanh_rnn_backward
from descend.nn.functional.autocast import cast, lower_precision

# --------------------------------------------------------------------- checks


def check_sequence(x: Tensor, features: int, dtype: torch.dtype | None = None, name: str = "x") -> None:
    """Raise ShapeError unless ``x`` is a floating ``(batch, time, features)`` tensor."""
    if not torch.is_tensor(x):
        raise ShapeError(f"{name} must be a tensor of shape (batch, time, {features}); got {type(x).__name__}")
    if x.dim() != 3:
        hint = ""
        if x.dim() == 2:
            hint = "; for a single sequence use x.unsqueeze(0)"
        elif x.dim() == 4:
            hint = "; for images (N, C, H, W) use descend.data.sequences.sequential_mnist(x)"
        raise ShapeError(
            f"{name} must be a batch of sequences (batch, time, features) = (N, T, {features}); "
            f"got shape {tuple(x.shape)}{hint}"
        )
    if x.shape[1] == 0:
        raise ShapeError(f"{name} has no time steps (shape {tuple(x.shape)}); sequences need length >= 1")
    if x.shape[2] != features:
        raise ShapeError(
            f"{name} has {x.shape[2]} features per time step but the module expects {features} "
            f"(shape {tuple(x.shape)}); build it with input_size={x.shape[2]}"
        )
    if not x.is_floating_point():
        raise ShapeError(f"{name} must be floating point, got {x.dtype}; convert with x.float()")
    if dtype is not None and x.dtype != dtype and lower_precision(x.device) is None:  # autocast mixes dtypes
        raise ShapeError(f"{name} is {x.dtype} but the parameters are {dtype}; use x.to({dtype}) or module.to({x.dtype})")


def _check_state(h: Tensor, batch: int, hidden: int, name: str) -> None:
    if not torch.is_tensor(h) or h.shape != (batch, hidden):
        shape = tuple(h.shape) if torch.is_tensor(h) else type(h).__name__
        raise ShapeError(f"{name} must be (batch, hidden) = {(batch, hidden)}; got {shape}")


def _time_major(x: Tensor) -> Tensor:
    """(N, T, F) -> contiguous (T, N, F), so that x[t] is one contiguous time step."""
    return x.transpose(0, 1).contiguous()


# --------------------------------------------------------------------- loss


def sequence_nll(o: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
    r"""Negative log-likelihood of a target sequence, eqs. 10.12-10.14.

    .. math::

        \begin{aligned}
        L\bigl(\{x^{(1)}, \dots, x^{(\tau)}\}, \{y^{(1)}, \dots, y^{(\tau)}\}\bigr)
            &= \sum_t L^{(t)} && \text{(10.12-10.13)} \\
            &= -\sum_t \log p_{\text{model}}\bigl(y^{(t)} \mid \{x^{(1)}, \dots, x^{(t)}\}\bigr)
            && \text{(10.14)}
        \end{aligned}

    where :math:`p_{\text{model}}` is read from :math:`\hat{y}^{(t)} = \operatorname{softmax}(o^{(t)})`
    (eq. 10.11), for outputs ``o`` ``(N, T, K)`` and integer targets ``y`` ``(N, T)``. The text's loss is per sequence (a sum over t);
    ``reduction`` says how the N sequences of a batch combine: ``"mean"`` (default, so
    the scale does not depend on the batch size), ``"sum"``, or ``"none"`` (one loss per
    sequence). ``torch.nn.functional.cross_entropy`` would instead average over time
    steps too.
    """
    if reduction not in ("mean", "sum", "none"):
        raise ConfigError(f"Invalid reduction: {reduction!r}; use 'mean', 'sum' or 'none'")
    if o.dim() != 3:
        raise ShapeError(f"outputs must be (batch, time, classes); got shape {tuple(o.shape)}")
    if y.shape != o.shape[:2]:
        raise ShapeError(
            f"targets must be (batch, time) = {tuple(o.shape[:2])} to match the outputs; got {tuple(y.shape)}"
        )
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ShapeError(f"targets must be integer class indices, got {y.dtype}")
    N, T, K = o.shape
    per_step = F.cross_entropy(o.reshape(N * T, K), y.reshape(N * T).long(), reduction="none")
    per_sequence = per_step.view(N, T).sum(1)  # eq. 10.13
    if reduction == "none":
        return per_sequence
    return per_sequence.sum() if reduction == "sum" else per_sequence.mean()


# --------------------------------------------------------------------- RNN, eqs. 10.8-10.9


def _tanh_recurrence(ax: Tensor, h0: Tensor, W: Tensor) -> Tensor:
    """``h(t) = tanh(ax(t) + W h(t-1))`` for t = 1..T, where ``ax(t) = b + U x(t)``."""
    WT = W.t()
    hs = []
    h = h0
    for a_x in ax.unbind(0):
        h = torch.tanh(torch.addmm(a_x, h, WT))  # eqs. 10.8-10.9, one fused matmul-add
        hs.append(h)
    return torch.stack(hs)


class _TanhRNNFunction(torch.autograd.Function):
    """Forward of eqs. 10.8-10.9; backward by the explicit recursion of eqs. 10.19-10.21."""

    @staticmethod
    def forward(ctx, x: Tensor, h0: Tensor, U: Tensor, W: Tensor, b: Tensor) -> Tensor:
        xt = _time_major(x)
        T, N, F_ = xt.shape
        h = torch.addmm(b, xt.view(T * N, F_), U.t()).view(T, N, -1)  # b + U x(t), all t
        # In place, step by step: h[t] <- tanh(h[t] + W h(t-1)), eqs. 10.8-10.9.
        h_t = h.unbind(0)
        WT = W.t()
        prev = h0
        for t in range(T):
            h_t[t].addmm_(prev, WT).tanh_()
            prev = h_t[t]
        ctx.save_for_backward(xt, h0, h, U, W)
        return h  # time-major (T, N, H)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_h: Tensor):
        xt, h0, h, U, W = ctx.saved_tensors
        T, N, H = h.shape
        grad_a, grad_h0 = tanh_rnn_backward(grad_h, h, W)
        flat = grad_a.view(T * N, H)
        grad_x = (flat @ U).view(T, N, -1).transpose(0, 1) if ctx.needs_input_grad[0] else None
        grad_U = flat.t() @ xt.view(T * N, -1)
        # dL/dW = sum_t dL/da(t) h(t-1)^T, with h(t-1) = h0 for t = 1.
        grad_W = torch.addmm(grad_a[0].t() @ h0, grad_a[1:].reshape(-1, H).t(), h[:-1].reshape(-1, H))
        grad_b = flat.sum(0)
        return grad_x, grad_h0, grad_U, grad_W, grad_b


BPTT = ("fused", "explicit", "autograd")


def _check_bptt(bptt: str) -> str:
    if bptt not in BPTT:
        raise ConfigError(f"Invalid bptt: {bptt!r}; use 'fused' (torch's kernel), 'explicit' (the BPTT "
                          "recursions of descend.nn.bptt) or 'autograd' (autograd through the time loop)")
    return bptt


class RNN(nn.Module):
    r"""Hidden-to-hidden recurrent layer with tanh units, eqs. 10.8-10.9 (fig. 10.3).

    For :math:`t = 1, \dots, \tau`, from the initial state :math:`h^{(0)}` (zeros unless given):

    .. math::

        \begin{aligned}
        a^{(t)} &= b + W h^{(t-1)} + U x^{(t)} && \text{(10.8)} \\
        h^{(t)} &= \tanh(a^{(t)}) && \text{(10.9)}
        \end{aligned}

    The same ``U``, ``W``, ``b`` serve every time step (parameter sharing of the
    unfolded graph, sec. 10.1). Add an output layer with :class:`SequenceToSequence`
    (eqs. 10.10-10.11) or :class:`SequenceToOne` (fig. 10.5).

    Args:
        input_size: features F of each x(t).
        hidden_size: units H of h(t).
        bptt: how gradients are computed: ``"explicit"`` (default) the recursion of
            eqs. 10.19-10.21 (first derivatives only), ``"fused"`` torch's
            ``torch.nn.RNN`` kernel with these parameters, ``"autograd"`` autograd
            through the loop over time (twice differentiable).

    Shape: ``forward(x (N, T, F), h0 (N, H) or None) -> (h (N, T, H), h(T) (N, H))``.

    Differs from ``torch.nn.RNN(nonlinearity="tanh", batch_first=True)`` only in having
    one bias ``b`` (torch adds two, ``b_ih + b_hh``, which is the same function with a
    redundant parameter) and zero initial biases (torch draws them uniformly).
    Weights are drawn like torch's, uniform in :math:`(-1/\sqrt{H}, 1/\sqrt{H})`.
    Cost: O(T) sequential steps and O(T) stored states (sec. 10.2): a Python loop over
    the T time steps (two tensor operations each), none over the batch.
    """

    def __init__(self, input_size: int, hidden_size: int, *, bptt: str = "explicit", device=None, dtype=None) -> None:
        super().__init__()
        if input_size < 1 or hidden_size < 1:
            raise ConfigError(f"input_size and hidden_size must be >= 1; got {input_size}, {hidden_size}")
        kw = {"device": device, "dtype": dtype}
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bptt = _check_bptt(bptt)
        self.U = nn.Parameter(torch.empty(hidden_size, input_size, **kw))  # input-to-hidden
        self.W = nn.Parameter(torch.empty(hidden_size, hidden_size, **kw))  # hidden-to-hidden
        self.b = nn.Parameter(torch.empty(hidden_size, **kw))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        nn.init.uniform_(self.U, -bound, bound)
        nn.init.uniform_(self.W, -bound, bound)
        nn.init.zeros_(self.b)

    def forward(self, x: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_sequence(x, self.input_size, self.U.dtype)
        N = x.shape[0]
        if h0 is None:
            h0 = x.new_zeros(N, self.hidden_size)
        else:
            _check_state(h0, N, self.hidden_size, "the initial state h0")
        if self.bptt == "autograd":  # plain ops: autocast picks each one's precision
            ax = F.linear(x.transpose(0, 1), self.U, self.b)
            h = _tanh_recurrence(ax, h0, self.W)
            return h.transpose(0, 1), h[-1]
        lower = lower_precision(x.device)
        args = cast(lower or self.U.dtype, x, h0, self.U, self.W, self.b)
        with torch.autocast(x.device.type, enabled=False):
            if self.bptt == "explicit":
                h = _TanhRNNFunction.apply(*args).transpose(0, 1)
            else:
                h = _fused_rnn(*args)
        h = h if lower is None else h.to(lower)
        return h, h[:, -1]

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bptt={self.bptt!r}"


def _fused_rnn(x: Tensor, h0: Tensor, U: Tensor, W: Tensor, b: Tensor) -> Tensor:
    """Eqs. 10.8-10.9 by torch's ``torch.nn.RNN`` kernel (its second bias b_hh is zero here)."""
    h, _ = torch._VF.rnn_tanh(x, h0.unsqueeze(0), (U, W, b, torch.zeros_like(b)), True, 1, 0.0,
                              torch.is_grad_enabled(), False, True)
    return h


# --------------------------------------------------------------------- output layers


class SequenceToSequence(nn.Module):
    r"""An output at every time step, :math:`o^{(t)} = c + V h^{(t)}` (eq. 10.10, fig. 10.3).

    With :class:`RNN` and :func:`sequence_nll` this is the network of eqs. 10.8-10.11:

    .. math::

        \begin{aligned}
        a^{(t)} &= b + W h^{(t-1)} + U x^{(t)} && \text{(10.8)} \\
        h^{(t)} &= \tanh(a^{(t)}) && \text{(10.9)} \\
        o^{(t)} &= c + V h^{(t)} && \text{(10.10)} \\
        \hat{y}^{(t)} &= \operatorname{softmax}(o^{(t)}) && \text{(10.11)}
        \end{aligned}

    Wraps any recurrent layer (``RNN``, ``LSTM``) that returns hidden states
    ``(N, T, H)``; ``SequenceToSequence(RNN(F, H), K)`` is exactly the network of
    eqs. 10.8-10.11, trained with :func:`sequence_nll` (eqs. 10.12-10.14): an input
    sequence mapped to an output sequence of the same length.

    Shape: ``forward(x (N, T, F), state=None) -> (o (N, T, K), state)``; ``o`` are the
    unnormalized log-probabilities (softmax, eq. 10.11, is inside the loss).
    """

    def __init__(self, recurrent: nn.Module, output_size: int) -> None:
        super().__init__()
        if output_size < 1:
            raise ConfigError(f"output_size must be >= 1; got {output_size}")
        self.recurrent = recurrent
        H = recurrent.hidden_size
        p = next(recurrent.parameters())
        self.V = nn.Parameter(torch.empty(output_size, H, device=p.device, dtype=p.dtype))  # hidden-to-output
        self.c = nn.Parameter(torch.zeros(output_size, device=p.device, dtype=p.dtype))
        nn.init.uniform_(self.V, -1.0 / math.sqrt(H), 1.0 / math.sqrt(H))

    def forward(self, x: Tensor, state=None) -> tuple[Tensor, object]:
        h, state = self.recurrent(x, state)
        return F.linear(h, self.V, self.c), state  # eq. 10.10 for all t at once


class SequenceToOne(SequenceToSequence):
    r"""Read a whole sequence, produce one output from the final state (fig. 10.5).

    :math:`o = c + V h^{(\tau)}`: a sequence classifier (``sequence -> class``) or, with
    ``output_size=1`` and a squared error, a sequence regressor (the adding problem).
    Back-propagation reaches early time steps only through ``h(tau)``, which is where
    long-term dependencies become hard (sec. 8.2.5).

    Shape: ``forward(x (N, T, F), state=None) -> (o (N, K), state)``. The output layer
    (``V``, ``c``) is :class:`SequenceToSequence`'s, applied to the last step only.
    """

    def forward(self, x: Tensor, state=None) -> tuple[Tensor, object]:
        h, state = self.recurrent(x, state)
        return F.linear(h[:, -1], self.V, self.c), state


# --------------------------------------------------------------------- output recurrence, fig. 10.4


def inverse_sigmoid_decay(step: int | Tensor, k: float = 1000.0) -> float:
    r"""Teacher-forcing probability for scheduled sampling, at training step :math:`i`:

    .. math::

        \epsilon_i = \frac{k}{k + \exp(i / k)}.

    The curriculum of Bengio et al. (2015) cited in sec. 10.2.1: start near 1 (always
    feed the ground truth) and decay towards 0 (always feed the model's own output), so
    training gradually sees the inputs it will see when free-running. ``k >= 1`` sets
    the speed: the probability is 1/2 near :math:`i = k \log k`.
    """
    if k < 1:
        raise ConfigError(f"Invalid decay constant k: {k}; k must be >= 1")
    return float(k / (k + math.exp(min(float(step) / k, 700.0))))


class OutputRecurrentRNN(nn.Module):
    r"""An RNN whose only recurrence is from the output to the hidden units (fig. 10.4).

    With :math:`\tilde{y}^{(t-1)}` the output vector fed back from step :math:`t - 1`
    (zeros at :math:`t = 1`):

    .. math::

        \begin{aligned}
        h^{(t)} &= \tanh\bigl(b + W \tilde{y}^{(t-1)} + U x^{(t)}\bigr) \\
        o^{(t)} &= c + V h^{(t)} \\
        \hat{y}^{(t)} &= \operatorname{softmax}(o^{(t)})
        \end{aligned}

    What is fed back (sec. 10.2.1, fig. 10.6):

    * teacher forcing (training, ``teacher_forcing=1`` with targets ``y``): the ground
      truth ``onehot(y(t-1))``. All time steps are then decoupled and computed in one
      batched pass with no loop over time: "training can thus be parallelized".
    * free running (``y=None`` or ``teacher_forcing=0``, or :meth:`generate`): the
      model's own output at t-1, as a one-hot of its most probable symbol
      (``feedback="argmax"``) or of a sample from ``y_hat(t-1)`` (``"sample"``). This is
      the open-loop use of the text, whose inputs can differ from those seen in training.
    * scheduled sampling (``0 < teacher_forcing < 1``, Bengio et al. 2015): at each step
      each sequence gets the ground truth with probability ``teacher_forcing``, else
      the model's own output; :func:`inverse_sigmoid_decay` lowers it during training.
      As in that paper the fed-back model output is a discrete symbol, so no gradient
      flows through the choice.

    Targets are discrete (softmax outputs, eq. 10.11) with ``num_classes`` symbols.

    Shape: ``forward(x (N, T, F), state=None, y=None (N, T)) -> (o (N, T, K), state)``,
    where ``state`` is the vector ``(N, K)`` to be fed back at the next step.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_classes: int,
        *,
        feedback: str = "argmax",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if min(input_size, hidden_size, num_classes) < 1:
            raise ConfigError(
                f"input_size, hidden_size and num_classes must be >= 1; got {input_size}, {hidden_size}, {num_classes}"
            )
        if feedback not in ("argmax", "sample"):
            raise ConfigError(f"Invalid feedback: {feedback!r}; use 'argmax' or 'sample'")
        kw = {"device": device, "dtype": dtype}
        self.input_size, self.hidden_size, self.num_classes = input_size, hidden_size, num_classes
        self.feedback = feedback
        self.U = nn.Parameter(torch.empty(hidden_size, input_size, **kw))  # input-to-hidden
        self.W = nn.Parameter(torch.empty(hidden_size, num_classes, **kw))  # output-to-hidden
        self.b = nn.Parameter(torch.zeros(hidden_size, **kw))
        self.V = nn.Parameter(torch.empty(num_classes, hidden_size, **kw))  # hidden-to-output
        self.c = nn.Parameter(torch.zeros(num_classes, **kw))
        bound = 1.0 / math.sqrt(hidden_size)
        for w in (self.U, self.W, self.V):
            nn.init.uniform_(w, -bound, bound)

    def forward(
        self,
        x: Tensor,
        state: Tensor | None = None,
        y: Tensor | None = None,
        *,
        teacher_forcing: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        check_sequence(x, self.input_size, self.U.dtype)
        if not 0.0 <= teacher_forcing <= 1.0:
            raise ConfigError(f"Invalid teacher_forcing probability: {teacher_forcing}; it must be in [0, 1]")
        N, T, _ = x.shape
        K = self.num_classes
        if state is None:
            state = x.new_zeros(N, K)
        else:
            _check_state(state, N, K, "the fed-back output state")
        if y is not None:
            if y.shape != (N, T) or y.is_floating_point():
                raise ShapeError(f"targets y must be integer (batch, time) = {(N, T)}; got {tuple(y.shape)} {y.dtype}")
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= K):
                raise ShapeError(f"targets y must lie in [0, {K}); got values in [{int(y.min())}, {int(y.max())}]")
        ax = F.linear(x, self.U, self.b)  # b + U x(t) for every t, (N, T, H)

        if y is not None and teacher_forcing == 1.0:
            # Teacher forcing: the inputs at every step are known, so no loop over time.
            truth = F.one_hot(y, K).to(x.dtype)
            fed = torch.cat([state.unsqueeze(1), truth[:, :-1]], dim=1)  # y(t-1) feeds h(t)
            h = torch.tanh(ax + F.linear(fed, self.W))
            return F.linear(h, self.V, self.c), truth[:, -1]

        truth = F.one_hot(y, K).to(x.dtype) if y is not None and teacher_forcing > 0 else None
        o, fed, _ = self._unfold(ax, state, truth, teacher_forcing, generator)
        return o, fed

    def _unfold(self, ax: Tensor, fed: Tensor, truth: Tensor | None, teacher_forcing: float, generator):
        """Step through time feeding back the model's output (or, by coin flip, the truth)."""
        N, T, _ = ax.shape
        outputs, emitted = [], []
        for t in range(T):
            h = torch.tanh(ax[:, t] + F.linear(fed, self.W))
            o = F.linear(h, self.V, self.c)
            outputs.append(o)
            own = self._own_output(o, generator)
            emitted.append(own)
            if truth is None:
                fed = own
            else:  # scheduled sampling: ground truth with probability teacher_forcing
                coin = torch.rand(N, 1, generator=generator, device=ax.device) < teacher_forcing
                fed = torch.where(coin, truth[:, t], own)
        return torch.stack(outputs, dim=1), fed, torch.stack(emitted, dim=1)

    def _own_output(self, o: Tensor, generator: torch.Generator | None) -> Tensor:
        """The model's output at one step as a one-hot vector to feed back (fig. 10.6, right)."""
        with torch.no_grad():
            if self.feedback == "sample":
                symbol = torch.multinomial(torch.softmax(o, dim=1), 1, generator=generator).squeeze(1)
            else:
                symbol = o.argmax(dim=1)
            return F.one_hot(symbol, self.num_classes).to(o.dtype)

    @torch.no_grad()
    def generate(self, x: Tensor, state: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Free-running generation: the symbols ``(N, T)`` the model emits, each fed back as its next input."""
        check_sequence(x, self.input_size, self.U.dtype)
        if state is None:
            state = x.new_zeros(x.shape[0], self.num_classes)
        else:
            _check_state(state, x.shape[0], self.num_classes, "the fed-back output state")
        _, _, emitted = self._unfold(F.linear(x, self.U, self.b), state, None, 0.0, generator)
        return emitted.argmax(dim=2)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, num_classes={self.num_classes}, feedback={self.feedback!r}"


# --------------------------------------------------------------------- LSTM, sec. 10.10


class LSTMCell(nn.Module):
    r"""One step of the long short-term memory cell (sec. 10.10), forget-gate bias 1 (sec. 8.4).

    With the four blocks of ``U`` (input-to-hidden), ``W`` (hidden-to-hidden) and ``b``
    in the order of ``torch.nn.LSTM`` (eqs. 10.40-10.44 in vector form, :math:`\sigma` the
    logistic sigmoid, :math:`\odot` the element-wise product):

    .. math::

        \begin{aligned}
        g^{(t)} &= \sigma\bigl(b^g + U^g x^{(t)} + W^g h^{(t-1)}\bigr)
            && \text{external input gate (10.42)} \\
        f^{(t)} &= \sigma\bigl(b^f + U^f x^{(t)} + W^f h^{(t-1)}\bigr)
            && \text{forget gate (10.40)} \\
        z^{(t)} &= \tanh\bigl(b + U x^{(t)} + W h^{(t-1)}\bigr) && \text{cell input} \\
        q^{(t)} &= \sigma\bigl(b^o + U^o x^{(t)} + W^o h^{(t-1)}\bigr)
            && \text{output gate (10.44)} \\
        s^{(t)} &= f^{(t)} \odot s^{(t-1)} + g^{(t)} \odot z^{(t)}
            && \text{cell state, the self-loop (10.41)} \\
        h^{(t)} &= \tanh\bigl(s^{(t)}\bigr) \odot q^{(t)} && \text{(10.43)}
        \end{aligned}

    The book's names (g, f, q, s) are used; torch calls them (i, f, o, c). The book
    writes a sigmoid for the cell input z; we use tanh, as ``torch.nn.LSTM`` and the
    original LSTM papers do (a sigmoid could only ever add to the state).

    Initialization (sec. 8.4, Jozefowicz et al. 2015): the forget-gate bias ``b_f`` is
    ``forget_bias`` (default 1), so :math:`f \approx \sigma(1) \approx 0.73` and the state is
    mostly kept at the start of training; the other biases are 0. Weights are uniform in
    :math:`(-1/\sqrt{H}, 1/\sqrt{H})` as in torch. ``torch.nn.LSTM`` initializes its biases
    uniformly too (no forget bias) and has two bias vectors whose sum is our ``b``;
    :meth:`from_torch` copies its weights.
    """

    def __init__(self, input_size: int, hidden_size: int, *, forget_bias: float = 1.0, device=None, dtype=None) -> None:
        super().__init__()
        if input_size < 1 or hidden_size < 1:
            raise ConfigError(f"input_size and hidden_size must be >= 1; got {input_size}, {hidden_size}")
        kw = {"device": device, "dtype": dtype}
        self.input_size, self.hidden_size, self.forget_bias = input_size, hidden_size, float(forget_bias)
        self.U = nn.Parameter(torch.empty(4 * hidden_size, input_size, **kw))
        self.W = nn.Parameter(torch.empty(4 * hidden_size, hidden_size, **kw))
        self.b = nn.Parameter(torch.empty(4 * hidden_size, **kw))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        H = self.hidden_size
        bound = 1.0 / math.sqrt(H)
        nn.init.uniform_(self.U, -bound, bound)
        nn.init.uniform_(self.W, -bound, bound)
        with torch.no_grad():
            self.b.zero_()
            self.b[H : 2 * H] = self.forget_bias  # forget gate block

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """One step: ``x (N, F)``, ``state = (h, s)`` each ``(N, H)`` -> ``(h(t), s(t))``."""
        if x.dim() != 2 or x.shape[1] != self.input_size:
            raise ShapeError(f"x must be (batch, {self.input_size}) for one LSTM step; got {tuple(x.shape)}")
        h, s = _lstm_state(state, x, self.hidden_size)
        pre = torch.addmm(F.linear(x, self.U, self.b), h, self.W.t())
        g, f, z, q = pre.chunk(4, dim=1)
        s = torch.sigmoid(f) * s + torch.sigmoid(g) * torch.tanh(z)
        h = torch.tanh(s) * torch.sigmoid(q)
        return h, s

    @classmethod
    def from_torch(cls, cell: nn.LSTMCell | nn.LSTM) -> "LSTMCell":
        """An LSTMCell computing the same function as a torch LSTMCell (or 1-layer LSTM)."""
        weights = _torch_lstm_weights(cell)
        out = cls(cell.input_size, cell.hidden_size, device=weights[0].device, dtype=weights[0].dtype)
        with torch.no_grad():
            for p, w in zip((out.U, out.W, out.b), weights):
                p.copy_(w)
        return out

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, forget_bias={self.forget_bias}"


def _lstm_state(state, x: Tensor, hidden: int) -> tuple[Tensor, Tensor]:
    N = x.shape[0]
    if state is None:
        zeros = x.new_zeros(N, hidden)
        return zeros, zeros
    if not (isinstance(state, (tuple, list)) and len(state) == 2):
        raise ShapeError("an LSTM state must be a pair (h, s) of (batch, hidden) tensors")
    _check_state(state[0], N, hidden, "the LSTM state h")
    _check_state(state[1], N, hidden, "the LSTM cell state s")
    return state[0], state[1]


def _torch_lstm_weights(module: nn.Module) -> tuple[Tensor, Tensor, Tensor]:
    if isinstance(module, nn.LSTM):
        if module.num_layers != 1 or module.bidirectional or module.proj_size:
            raise ConfigError("only a single-layer, unidirectional torch.nn.LSTM without projection can be copied")
        U, W = module.weight_ih_l0, module.weight_hh_l0
        b = module.bias_ih_l0 + module.bias_hh_l0 if module.bias else torch.zeros_like(U[:, 0])
    elif isinstance(module, nn.LSTMCell):
        U, W = module.weight_ih, module.weight_hh
        b = module.bias_ih + module.bias_hh if module.bias else torch.zeros_like(U[:, 0])
    else:
        raise ConfigError(f"expected torch.nn.LSTM or torch.nn.LSTMCell, got {type(module).__name__}")
    return U.detach(), W.detach(), b.detach()


def _tanh_(a: Tensor) -> Tensor:
    """``tanh`` in place as ``2 sigmoid(2a) - 1``: on CPU torch's sigmoid is vectorized and
    its tanh many times slower; on whole sequences the difference is most of the forward."""
    return a.mul_(2.0).sigmoid_().mul_(2.0).sub_(1.0)


def _qgfz(H: int, device) -> Tensor:
    """Row order [q, g, f, z] of the four gate blocks stored [g, f, z, q] (torch's order)."""
    return torch.cat([torch.arange(3 * H, 4 * H, device=device), torch.arange(0, 3 * H, device=device)])


def _lstm_forward_stepwise(x, h0, s0, U, W, b):
    """Eqs. of sec. 10.10 step by step in preallocated buffers; U, W, b rows in [q, g, f, z].

    Returns ``(xh, acts, s, tanh_s)``: row t of ``xh`` is [x(t), h(t-1)] (time-major;
    h(-1) = h0, and row T holds only h(T-1)), so that the backward gets dL/dU and dL/dW
    together from one matrix product; ``acts`` the gates [q, g, f, z] of every step;
    ``s`` the cell states s(0..tau); ``tanh_s`` = tanh(s(1..tau)).
    """
    N, T, F_ = x.shape
    H = h0.shape[1]
    kw = {"dtype": x.dtype, "device": x.device}
    xh = torch.empty(T + 1, N, F_ + H, **kw)
    xt, h = xh[:T, :, :F_], xh[:, :, F_:]
    xt.copy_(x.transpose(0, 1))
    h[0] = h0
    acts = torch.empty(T, N, 4 * H, **kw)  # per step [q, g, f, z]: pre-activations, then gates
    torch.addmm(b, xt.reshape(T * N, F_), U.t(), out=acts.view(T * N, 4 * H))  # b + U x(t), all t
    s = torch.empty(T + 1, N, H, **kw)
    tanh_s = torch.empty(T, N, H, **kw)
    s[0] = s0
    # Per-step views, made once: in the loop, indexing is a Python list lookup.
    act_t, s_t, h_t, tanh_t = acts.unbind(0), s.unbind(0), h.unbind(0), tanh_s.unbind(0)
    qgf_t = acts[:, :, : 3 * H].unbind(0)
    q_t, g_t, f_t, z_t = (block.unbind(0) for block in acts.chunk(4, dim=2))
    WT = W.t()
    for t in range(T):
        act_t[t].addmm_(h_t[t], WT)  # pre-activations of all four blocks, += W h(t-1)
        qgf_t[t].sigmoid_()  # output, input and forget gates
        z_t[t].tanh_()  # cell input
        torch.mul(f_t[t], s_t[t], out=s_t[t + 1])
        s_t[t + 1].addcmul_(g_t[t], z_t[t])  # s(t) = f s(t-1) + g z
        torch.tanh(s_t[t + 1], out=tanh_t[t])
        torch.mul(q_t[t], tanh_t[t], out=h_t[t + 1])  # h(t) = tanh(s(t)) q
    return xh, acts, s, tanh_s


def _lstm_forward_outputs_first(x, h0, s0, U, W, b, order):
    """The same buffers as :func:`_lstm_forward_stepwise`, in three passes.

    1. the outputs h(1..tau): torch's LSTM kernel (the forward of ``torch.nn.LSTM``
       with these parameters in torch's row order, no autograd: one compiled loop);
    2. every gate of every step at once: with all h(t-1) known, the pre-activations
       ``b + U x(t) + W h(t-1)`` of all t are one matrix product (the steps decouple,
       as under teacher forcing, sec. 10.2.1), then one sigmoid and one tanh;
    3. the cell states, ``s(t) = f(t) s(t-1) + g(t) z(t)``: one fused operation per step.
    """
    N, T, F_ = x.shape
    H = h0.shape[1]
    kw = {"dtype": x.dtype, "device": x.device}
    xh = torch.empty(T + 1, N, F_ + H, **kw)
    xh[:T, :, :F_] = x.transpose(0, 1)
    h = xh[:, :, F_:]
    h[0] = h0
    out, _, _ = torch._VF.lstm(x, (h0.unsqueeze(0), s0.unsqueeze(0)), (U, W, b, torch.zeros_like(b)),
                               True, 1, 0.0, False, False, True)
    h[1:] = out.transpose(0, 1)  # 1. h(1..tau)
    UW = torch.cat([U, W], dim=1)[order]
    acts = torch.addmm(b[order], xh[:T].reshape(T * N, F_ + H), UW.t()).view(T, N, 4 * H)
    acts[:, :, : 3 * H].sigmoid_()  # 2. q, g, f
    _tanh_(acts[:, :, 3 * H :])  # z
    _, g, f, z = acts.chunk(4, dim=2)
    s = torch.empty(T + 1, N, H, **kw)
    s[0] = s0
    gz = g * z
    s_t, f_t, gz_t = s.unbind(0), f.unbind(0), gz.unbind(0)
    for t in range(T):
        torch.addcmul(gz_t[t], f_t[t], s_t[t], out=s_t[t + 1])  # 3. s(t) = f s(t-1) + g z
    return xh, acts, s, _tanh_(s[1:].clone())


# Below this many multiply-adds per step of W h(t-1) (N x 4H x H), the seven operations
# a step of the stepwise forward dispatches cost about as much as its matrix product,
# and the three-pass forward (one compiled loop, whole-sequence products) is faster.
_STEPWISE_MIN_WORK = 2**20


class _LSTMFunction(torch.autograd.Function):
    """LSTM over a whole sequence; backward by the explicit recursion of ``bptt.lstm_backward``.

    Forward: :func:`_lstm_forward_stepwise`, or for small steps (few units, small
    batches, where per-operation overhead dominates) :func:`_lstm_forward_outputs_first`;
    both give the gates, cell states and [x(t), h(t-1)] that the backward needs. Inside,
    the gate blocks are kept in the order [q, g, f, z] (rows of U, W, b permuted once
    per call), so that the three sigmoid gates, and in the backward the three blocks
    scaled by dL/ds(t), are contiguous. The parameter gradients are permuted back.
    """

    @staticmethod
    def forward(ctx, x: Tensor, h0: Tensor, s0: Tensor, U: Tensor, W: Tensor, b: Tensor):
        N, H = h0.shape
        order = _qgfz(H, x.device)
        if N * 4 * H * H >= _STEPWISE_MIN_WORK:
            xh, acts, s, tanh_s = _lstm_forward_stepwise(x, h0, s0, U[order], W[order], b[order])
        else:
            xh, acts, s, tanh_s = _lstm_forward_outputs_first(x, h0, s0, U, W, b, order)
        ctx.save_for_backward(xh, acts, s, tanh_s, U[order], W[order], order)
        return xh[1:, :, U.shape[1]:], s[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_h: Tensor | None, grad_sT: Tensor | None):
        xh, acts, s, tanh_s, U, W, order = ctx.saved_tensors
        T, N, H4 = acts.shape
        H = H4 // 4
        F_ = xh.shape[2] - H
        if grad_h is None:
            grad_h = torch.zeros(T, N, H, dtype=acts.dtype, device=acts.device)
        grad_pre, grad_h0, grad_s0 = lstm_backward(grad_h, acts, s, tanh_s, W, grad_sT=grad_sT)
        flat = grad_pre.reshape(T * N, H4)  # a view: rows of grad_pre are strided, not copied
        grad_x = None
        if ctx.needs_input_grad[0]:   # flat @ U, with U's columns contiguous (much faster for small F)
            grad_x = (flat @ U.t().contiguous().t()).view(T, N, F_).transpose(0, 1)
        # dL/dU and dL/dW = sum_t dL/dpre(t) [x(t), h(t-1)]^T: one product. Rows back to
        # the parameters' order [g, f, z, q].
        inverse = torch.argsort(order)
        grad_UW = (flat.t() @ xh[:T].reshape(T * N, F_ + H))[inverse]
        grad_b = flat.sum(0)[inverse]
        return grad_x, grad_h0, grad_s0, grad_UW[:, :F_], grad_UW[:, F_:], grad_b


class LSTM(nn.Module):
    r"""The LSTM cell of :class:`LSTMCell` unfolded over a sequence (sec. 10.10).

    For :math:`t = 1, \dots, \tau`, with the same parameters at every step (eqs. 10.40-10.44):

    .. math::

        \begin{aligned}
        s^{(t)} &= f^{(t)} \odot s^{(t-1)} + g^{(t)} \odot z^{(t)} \\
        h^{(t)} &= \tanh\bigl(s^{(t)}\bigr) \odot q^{(t)}
        \end{aligned}

    with the gates :math:`f^{(t)}, g^{(t)}, q^{(t)}` and cell input :math:`z^{(t)}` functions
    of :math:`x^{(t)}` and :math:`h^{(t-1)}` as in :class:`LSTMCell`.

    Shape: ``forward(x (N, T, F), state=None) -> (h (N, T, H), (h(T), s(T)))``, the
    state being the pair (output, cell state), zeros by default, like
    ``torch.nn.LSTM(batch_first=True)`` without the leading layer dimension.

    The parameters live in ``self.cell`` (so ``LSTM`` and ``LSTMCell`` share one
    definition). ``bptt`` picks how the sequence is run and differentiated:

    * ``"fused"`` (default): torch's LSTM kernel (``torch._VF.lstm``, what
      ``torch.nn.LSTM`` calls) with this layer's ``U``, ``W``, ``b``; the gate order
      [g, f, z, q] is torch's [i, f, g, o], so the function is the same.
    * ``"explicit"``: the backward is the explicit recursion of
      ``descend.nn.bptt.lstm_backward`` (sec. 10.2.2 applied to the cell of sec.
      10.10): per time step four tensor operations and one matrix product, into
      preallocated buffers; the weight gradients are one product after the loop. The
      forward steps through the equations in place (eight operations per step), or,
      for small steps where per-operation overhead dominates, takes h(t) from torch's
      kernel and then every gate of every step from one matrix product (see
      ``_LSTMFunction``).
    * ``"autograd"``: steps ``self.cell`` under autograd (slower, twice differentiable).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        forget_bias: float = 1.0,
        bptt: str = "fused",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.cell = LSTMCell(input_size, hidden_size, forget_bias=forget_bias, device=device, dtype=dtype)
        self.input_size, self.hidden_size = input_size, hidden_size
        self.bptt = _check_bptt(bptt)

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None):
        check_sequence(x, self.input_size, self.cell.U.dtype)
        h0, s0 = _lstm_state(state, x, self.hidden_size)
        if self.bptt == "autograd":  # plain ops: autocast picks each one's precision
            hs = []
            h, s = h0, s0
            for x_t in x.unbind(1):
                h, s = self.cell(x_t, (h, s))
                hs.append(h)
            return torch.stack(hs, dim=1), (h, s)
        lower = lower_precision(x.device)
        args = cast(lower or self.cell.U.dtype, x, h0, s0, self.cell.U, self.cell.W, self.cell.b)
        with torch.autocast(x.device.type, enabled=False):
            if self.bptt == "explicit":
                h, sT = _LSTMFunction.apply(*args)
                h = h.transpose(0, 1)
            else:
                h, sT = _fused_lstm(*args, self.training)
        if lower is not None:
            h, sT = h.to(lower), sT.to(lower)
        return h, (h[:, -1], sT)

    @classmethod
    def from_torch(cls, lstm: nn.LSTM, *, bptt: str = "fused") -> "LSTM":
        """An LSTM computing the same function as a single-layer ``torch.nn.LSTM``."""
        out = cls(lstm.input_size, lstm.hidden_size, bptt=bptt)
        out.cell = LSTMCell.from_torch(lstm)
        return out

    def extra_repr(self) -> str:
        return f"bptt={self.bptt!r}"


def _fused_lstm(x: Tensor, h0: Tensor, s0: Tensor, U: Tensor, W: Tensor, b: Tensor, train: bool):
    """The LSTM of sec. 10.10 by torch's kernel; torch's second bias b_hh is zero here."""
    h, _, sT = torch._VF.lstm(x, (h0.unsqueeze(0), s0.unsqueeze(0)), (U, W, b, torch.zeros_like(b)), True, 1, 0.0,
                              train, False, True)
    return h, sT[0]
