"""TensorRT runtime: the tensor API on buffers allocated once, torch's current stream, CUDA graphs.

``import tensorrt`` happens only here and in ``tensorrt_build`` (lazily), so CPU installs never need it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from engines.base import CompiledPart
from engines.exceptions import BackendUnavailableError, EngineLoadError
from engines.io_buffers import IOBuffers
from engines.specs import TensorSpec

logger = logging.getLogger(__name__)

_TRT_DTYPES = ("float32", "float16", "bfloat16", "int32", "int64", "bool")


def import_tensorrt() -> ModuleType:
    """The ``tensorrt`` module, or BackendUnavailableError saying how to get it."""
    try:
        import tensorrt
    except ImportError as exc:
        raise BackendUnavailableError("tensorrt", "the tensorrt package",
                                      "install the extra on a machine with an NVIDIA GPU: "
                                      "pip install 'sana-stream[tensorrt]'") from exc
    return tensorrt


def require_cuda(device: torch.device) -> None:
    if device.type != "cuda" or not torch.cuda.is_available():
        raise BackendUnavailableError("tensorrt", "a CUDA GPU",
                                      f"the model is on {device}; TensorRT engines only run on NVIDIA GPUs")


def engine_io(engine: Any, trt: ModuleType) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """(inputs, outputs) of a deserialized ICudaEngine, in its IO order."""
    names = {getattr(trt, n): n for n in _TRT_DTYPES if hasattr(trt, n)}
    inputs, outputs = [], []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        dtype = engine.get_tensor_dtype(name)
        if dtype not in names:
            raise ValueError(f"engine tensor {name!r} has dtype {dtype}, which we do not run")
        spec = TensorSpec(name, tuple(int(d) for d in engine.get_tensor_shape(name)), names[dtype])
        (inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(spec)
    return tuple(inputs), tuple(outputs)


def check_engine_io(engine: tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]],
                    onnx: tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]) -> None:
    """An engine must have the ONNX graph's inputs and outputs (any order): names, shapes, dtypes."""
    for kind, got, want in (("inputs", engine[0], onnx[0]), ("outputs", engine[1], onnx[1])):
        if sorted(got, key=lambda t: t.name) != sorted(want, key=lambda t: t.name):
            raise ValueError(f"engine {kind} {[t.describe() for t in got]} differ from the ONNX graph's "
                             f"{[t.describe() for t in want]}")


class TrtPart(CompiledPart):
    """A deserialized plan with one execution context whose tensor addresses never change.

    The first ``execute`` runs eagerly (TensorRT's warm-up); with ``cuda_graph`` it is then captured once
    and every later call replays the graph on torch's current stream.
    """

    def __init__(self, path: Path, device: torch.device, *, cuda_graph: bool = True,
                 expected_io: tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]] | None = None) -> None:
        trt = import_tensorrt()
        require_cuda(device)
        self.path, self.device, self.cuda_graph = Path(path), device, cuda_graph
        self._trt_logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._trt_logger)
        with torch.cuda.device(device):
            self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise EngineLoadError(self.path, "tensorrt", "deserialize_cuda_engine returned None (a plan from another "
                                  "TensorRT version or GPU, or a damaged file)")
        io = engine_io(self.engine, trt)
        if expected_io is not None:
            check_engine_io(io, expected_io)
        self.buffers = IOBuffers(*io, device)
        self.context = self.engine.create_execution_context()
        for t in io[0]:
            self.context.set_input_shape(t.name, t.shape)
        for name, address in self.buffers.addresses().items():
            self.context.set_tensor_address(name, address)
        self._graph: torch.cuda.CUDAGraph | None = None
        self._runs = 0
        logger.info("tensorrt %s: loaded %s (%d inputs, %d outputs, batch %d)", trt.__version__,
                    self.path.parent.name, len(io[0]), len(io[1]), self.buffers.batch)

    def execute(self) -> None:
        if self._graph is not None:
            self._graph.replay()
            return
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"TensorRT execute_async_v3 failed for {self.path}")
        self._runs += 1
        if self.cuda_graph and self._runs == 1:
            self._capture()

    def _capture(self) -> None:
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):  # inside, torch's current stream is the capture stream
                ok = self.context.execute_async_v3(torch.cuda.current_stream(self.device).cuda_stream)
        except RuntimeError as exc:
            ok = False
            reason = str(exc)
        else:
            reason = "execute_async_v3 returned False"
        if not ok:
            self.cuda_graph = False
            logger.warning("CUDA graph capture failed for %s (%s): running it without a graph, which is slower",
                           self.path.parent.name, reason)
            return
        self._graph = graph

    def close(self) -> None:
        self._graph = None
        del self.context
