"""ONNX export of one part: torch.export + torch.onnx (dynamo), then constant folding with polygraphy.

Choices (docs/design.md#dependency-facts): opset 18-20 (23 emits Attention/RMSNormalization ops that ONNX Runtime CPU
and TensorRT 10 parsers reject); a dynamic batch, the first dimension of every input and output (one symbol,
``batch``), and static other dimensions from ``engines.specs`` (DC-AE needs its spatial size fixed); example
inputs of ``EXPORT_BATCH`` = 2 rows whatever the part is built for, since torch.export specialises a batch of 1
into the graph, and one graph then serves every maximum batch; ``check_graph`` refuses a graph whose batch came
out static; explicit input and output names; the epsilon guard of ``engines.graphs.export_safe``. Graphs are
saved with external weights, so parts over 2 GB work the same way as tiny ones.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import logging
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

from engines.exceptions import BackendUnavailableError, ExportError
from engines.graphs import export_safe
from engines.install_hint import install_hint
from engines.specs import PartSpec

logger = logging.getLogger(__name__)

MIN_OPSET, MAX_OPSET = 18, 20
DEFAULT_OPSET = 18
ONNX_FILE = "model.onnx"
WEIGHTS_FILE = "model.onnx.data"
# ops that TensorRT 10 parsers or ONNX Runtime CPU reject, or that show an unoptimised dynamo graph
FORBIDDEN_OPS = frozenset({"SplitToSequence", "SequenceAt", "SequenceConstruct", "ConcatFromSequence",
                           "Attention", "RMSNormalization", "If", "Loop"})
KV_MASK = -10000.0  # the additive bias of a masked prompt token (diffusers uses the same)
EXPORT_BATCH = 2  # rows of the example inputs: torch.export bakes a batch of 1 into the graph


def require_onnx_tools() -> None:
    """Raises BackendUnavailableError when the packages of the ``onnx`` extra are missing."""
    import importlib.util

    missing = [m for m in ("onnx", "onnxruntime", "onnxscript", "polygraphy", "onnx_graphsurgeon")
               if importlib.util.find_spec(m) is None]
    if missing:
        raise BackendUnavailableError("onnx export", ", ".join(missing),
                                      f"install the extra: {install_hint('onnx')}")


def example_inputs(spec: PartSpec, device: torch.device, seed: int = 0) -> list[Tensor]:
    """Random inputs in each tensor's real range: images in [-1, 1], flow time in (0, 1), guidance 0.45,
    ControlNet scales in [0.25, 1.25], K/V of unit scale, and a K/V bias that masks the second half of the
    tokens in odd batch rows. Latents, control latents and the transformer's ControlNet residuals are unit
    normal: non-zero residuals, so that a parity check covers the path that adds them."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for t in spec.inputs:
        if t.name == "timestep":
            x = torch.rand(t.shape, generator=generator) * 0.9 + 0.05
        elif t.name == "guidance":
            x = torch.full(t.shape, 0.45)
        elif t.name == "conditioning_scale":
            x = torch.rand(t.shape, generator=generator) + 0.25
        elif t.name == "kv_bias":
            x = torch.zeros(t.shape)
            x[1::2, ..., t.shape[-1] // 2:] = KV_MASK
        elif t.name == "images":
            x = torch.rand(t.shape, generator=generator) * 2 - 1
        else:
            x = torch.randn(t.shape, generator=generator)
        out.append(x.to(device=device, dtype=t.torch_dtype))
    return out


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silences the exporter's known chatter (not our warnings): torch's deprecation of pytree's LeafSpec
    (raised from copyreg), its note that torchvision ops are not registered, onnx_ir's per-initializer logs, and
    its note that every input's ``batch`` axis is one symbol (what ``batch_dynamic_shapes`` asks for)."""
    quiet = [logging.getLogger(n) for n in ("torch.onnx._internal.exporter._registration", "onnx_ir", "onnxscript")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                                    category=FutureWarning)
            warnings.filterwarnings("ignore", message=r"# The axis name: batch will not be used, since it shares",
                                    category=UserWarning)
            yield
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)


def batch_dynamic_shapes(module: nn.Module, count: int) -> tuple[object, ...]:
    """torch.export's ``dynamic_shapes`` for ``module.forward`` called with ``count`` positional tensors: dimension
    0 of each is one shared ``batch`` symbol; a ``*args`` parameter takes a tuple of the remaining tensors."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    shapes: list[object] = []
    for param in inspect.signature(module.forward).parameters.values():
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            shapes.append(tuple({0: batch} for _ in range(count - len(shapes))))
            return tuple(shapes)
        if len(shapes) < count:
            shapes.append({0: batch})
    return tuple(shapes)


def export_onnx(module: nn.Module, spec: PartSpec, directory: Path, opset: int = DEFAULT_OPSET) -> Path:
    """Exports ``module`` (called with ``spec``'s inputs in order) to ``directory/model.onnx`` (+ weights),
    folded with polygraphy. The module is cast to the spec's dtype on a copy when it differs."""
    require_onnx_tools()
    import onnx

    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset must lie in [{MIN_OPSET}, {MAX_OPSET}], got {opset}")
    component = spec.component.value
    dtype = spec.outputs[0].torch_dtype
    param = next(module.parameters())
    if param.dtype != dtype:
        module = copy.deepcopy(module).to(dtype)
    module = module.eval()
    args = example_inputs(spec.with_batch(EXPORT_BATCH), param.device)
    directory.mkdir(parents=True, exist_ok=True)
    raw = directory / "raw.onnx"
    started = time.perf_counter()
    with export_safe(module), _quiet_exporter(), torch.no_grad():
        torch.onnx.export(module, tuple(args), str(raw), input_names=[t.name for t in spec.inputs],
                          output_names=[t.name for t in spec.outputs], opset_version=opset, dynamo=True,
                          external_data=True, optimize=True, verbose=False,
                          dynamic_shapes=batch_dynamic_shapes(module, len(args)))
    exported = time.perf_counter() - started
    model = fold(onnx.load(str(raw)), component)
    for leftover in directory.glob("raw.onnx*"):
        leftover.unlink()
    if spec.outputs[0].dtype == "bfloat16":
        model = cast_resize_to_float(model)
    check_graph(model, spec)
    path = directory / ONNX_FILE
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=WEIGHTS_FILE, size_threshold=1024)
    logger.info("exported the %s to ONNX in %.1f s (+%.1f s folding): %d nodes, opset %d, %s",
                component, exported, time.perf_counter() - started - exported, len(model.graph.node), opset,
                spec.outputs[0].dtype)
    return path


def fold(model: onnx.ModelProto, component: str) -> onnx.ModelProto:  # noqa: F821 - onnx is optional
    """Constant folding and shape inference with polygraphy (ONNX Runtime does the folding)."""
    from polygraphy.backend.onnx import fold_constants
    from polygraphy.logger import G_LOGGER

    severity = G_LOGGER.module_severity
    G_LOGGER.module_severity = G_LOGGER.ERROR
    try:
        before = len(model.graph.node)
        folded = fold_constants(model, allow_onnxruntime_shape_inference=True)
    finally:
        G_LOGGER.module_severity = severity
    logger.debug("folded the %s: %d -> %d nodes", component, before, len(folded.graph.node))
    return folded


def cast_resize_to_float(model: onnx.ModelProto) -> onnx.ModelProto:  # noqa: F821
    """TensorRT has no bf16 Resize: run every Resize in fp32 between two Casts (as NVIDIA's demo does)."""
    import numpy as np
    import onnx
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(model)
    for node in [n for n in graph.nodes if n.op == "Resize"]:
        data, out = node.inputs[0], node.outputs[0]
        up = gs.Variable(f"{data.name}_fp32", dtype=np.float32)
        graph.nodes.append(gs.Node("Cast", inputs=[data], outputs=[up], attrs={"to": onnx.TensorProto.FLOAT}))
        resized = gs.Variable(f"{out.name}_fp32", dtype=np.float32)
        node.inputs[0], node.outputs[0] = up, resized
        graph.nodes.append(gs.Node("Cast", inputs=[resized], outputs=[out], attrs={"to": onnx.TensorProto.BFLOAT16}))
    graph.cleanup().toposort()
    return gs.export_onnx(graph)


def check_graph(model: onnx.ModelProto, spec: PartSpec) -> None:  # noqa: F821
    """The graph's inputs and outputs are exactly the spec's, with a dynamic batch, and it holds no op we must not
    ship."""
    from engines.io_buffers import specs_from_onnx

    try:
        inputs, outputs = specs_from_onnx(model, batch=spec.batch)
    except ValueError as exc:  # a static batch (or another dynamic dimension) in the exported graph
        raise ExportError(spec.component.value, str(exc)) from exc
    if inputs != spec.inputs or outputs != spec.outputs:
        raise ExportError(spec.component.value, f"the graph's io {[t.describe() for t in (*inputs, *outputs)]} "
                          f"differs from the spec {spec.describe()}")
    bad = sorted({n.op_type for n in model.graph.node} & FORBIDDEN_OPS)
    if bad:
        raise ExportError(spec.component.value, f"the graph holds ops TensorRT or ONNX Runtime reject: {bad}")

