"""``descend export``: a trained network as an ONNX file, to run without descend or PyTorch.

    export_onnx(model, input_shape, path)    any model -> path.onnx, checked in onnxruntime
    export_run(run_dir, ...)                 the final (or best) weights of a run directory

The graph is captured with ``torch.export`` (``torch.onnx.export(..., dynamo=True)``,
which needs ``onnxscript``); the batch dimension stays free. The legacy TorchScript
exporter (``dynamo=False``) is not used: it cannot trace descend's convolution layers,
whose shape checks see tensors instead of numbers, and it gave wrong outputs for the
recurrent classifiers at a batch size other than the traced one.

An export is only written after onnxruntime has run it on a batch of another size than
the traced one and matched PyTorch's outputs (``atol``). A model whose graph does not
survive the translation is refused with an :class:`ExportError` naming the layers and
the custom ``torch.autograd.Function`` they compute with (descend's fast locally
connected layer gathers its receptive fields through strided views of a re-laid-out
copy, which the exported graph does not reproduce).

Inputs are named ``images`` (N, C, H, W) float32, preprocessed as for ``descend predict``
(pixels in [0, 1]; a run's ``data.preprocess`` layer is part of the model); the output
``logits`` (N, classes).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from descend.errors import ConfigError, DescendError
from descend.io import atomic_path

FORMATS = ("onnx",)


class ExportError(DescendError):
    """A model cannot be exported to the requested format (the message says which part and why)."""


def _require_onnx():
    try:
        import importlib

        import onnxruntime

        importlib.import_module("onnxscript")  # torch.onnx.export(dynamo=True) needs it
    except ImportError as exc:
        raise ExportError(
            f'exporting to ONNX needs onnx, onnxscript and onnxruntime ({exc.name} is missing): '
            'pip install "descend[onnx]"'
        ) from None
    return onnxruntime


def custom_functions(model: nn.Module, x: torch.Tensor) -> dict[str, str]:
    """The custom ``torch.autograd.Function`` classes ``model(x)`` computes with, as
    ``{"module.path.FunctionName": "layer.name (LayerClass)"}`` (the innermost layer that uses it)."""
    found: dict[str, str] = {}
    names = {m: n for n, m in model.named_modules()}

    def walk(tensor) -> set:
        nodes, stack, seen = set(), [getattr(tensor, "grad_fn", None)], set()
        while stack:
            node = stack.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            cls = getattr(node, "_forward_cls", None)  # set on the backward nodes of custom Functions
            if cls is not None:
                nodes.add(f"{cls.__module__}.{cls.__qualname__}")
            stack.extend(next_node for next_node, _ in node.next_functions)
        return nodes

    def hook(module, inputs, output):
        out = output[0] if isinstance(output, (tuple, list)) else output
        if torch.is_tensor(out):
            for fn in walk(out) - found.keys():  # modules finish inside-out: the first is the innermost
                found[fn] = f"{names[module] or '(the model)'} ({type(module).__name__})"

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.enable_grad():
            model(x.detach().requires_grad_())
    finally:
        for h in handles:
            h.remove()
    return found


def _culprits(model: nn.Module, x: torch.Tensor) -> str:
    try:
        functions = custom_functions(model, x)
    except Exception:  # the explanation must not hide the original error
        functions = {}
    if not functions:
        return ""
    return "; it computes with custom autograd Functions, which the ONNX exporter traces through: " + ", ".join(
        f"{fn} in {layer}" for fn, layer in functions.items())


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: str | Path, *, atol: float = 1e-4,
                opset: int | None = None) -> Path:
    """Export ``model`` (inputs ``(N, *input_shape)``) to ONNX at ``path``, atomically.

    The model is exported in eval mode on the CPU with a free batch dimension; the file is
    written only if onnxruntime reproduces PyTorch's outputs within ``atol`` on a batch
    of a size other than the traced one. Raises :class:`ExportError` otherwise.
    """
    onnxruntime = _require_onnx()
    name = type(model).__name__
    model = model.cpu().float().eval()
    traced, checked = torch.rand(2, *input_shape), torch.rand(3, *input_shape)
    quiet = io.StringIO()
    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping torchvision::nms", ...
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(quiet):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model, (traced,), dynamo=True, input_names=["images"], output_names=["logits"],
                dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), opset_version=opset, verbose=False,
            )
    except Exception as exc:  # torch.export and the ONNX translation raise many kinds
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"{name} cannot be exported to ONNX: {type(exc).__name__}: {first}"
                          f"{_culprits(model, traced)}") from None
    finally:
        onnx_logger.setLevel(level)
    proto = program.model_proto.SerializeToString()
    session = onnxruntime.InferenceSession(proto, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(checked)
    try:
        got = torch.from_numpy(session.run(None, {"images": checked.numpy()})[0])
    except Exception as exc:
        raise ExportError(f"{name}: the exported ONNX graph does not run in onnxruntime ({exc})"
                          f"{_culprits(model, traced)}") from None
    error = float((got - expected).abs().max()) if got.shape == expected.shape else float("inf")
    if not error <= atol:
        raise ExportError(
            f"{name} cannot be exported to ONNX faithfully: onnxruntime's outputs differ from PyTorch's by "
            f"{error:.3g} (> {atol:g}) on a batch of 3{_culprits(model, traced)}. Export a model without these layers"
        )
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(proto)
    return path


def export_run(run_dir: str | Path, fmt: str = "onnx", output: str | Path | None = None,
               weights: str = "last") -> Path:
    """Export the network of a finished run directory; returns the written file.

    ``weights``: ``last`` (``model.safetensors``, the final weights) or ``best``
    (``best.safetensors``, the best validation epoch's). ``output`` defaults to
    ``RUN_DIR/model.onnx`` (``best.onnx`` for the best weights).
    """
    from descend import runs

    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    run_dir = Path(run_dir)
    if runs.member_dirs(run_dir):
        raise ExportError(f"{run_dir} is an ensemble; export one member, e.g. descend export {run_dir / 'member-1'}")
    runs.weights_file(run_dir, weights)  # a bad or missing choice fails before the slow part
    _require_onnx()
    model, meta = runs.load_model(run_dir, weights)
    output = Path(output) if output is not None else run_dir / f"{'model' if weights == 'last' else weights}.{fmt}"
    return export_onnx(model, tuple(meta["input_shape"]), output)
