"""TensorRT runtime: the tensor API on buffers allocated once, a CUDA stream per part, CUDA graphs.

Stream discipline (docs/gpu.md, "Threads and CUDA streams"): every part runs on a stream of its own, never on
the legacy default stream. ``execute`` makes the part's stream wait for the caller's current stream (so the
caller's writes into the input buffers land first) and the caller's stream wait for the part's (so its reads
of the outputs, and its next writes, come after). The part is warmed up and captured in a CUDA graph while it
is constructed, before any pipeline thread exists, in ``thread_local`` capture mode; the caller's stream is
restored whatever the capture does. Everything runs under the part's own device (``cuda:N``).

``import tensorrt`` happens only in ``engines.gpu_probe`` (lazily), so CPU installs never need it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from engines.base import CompiledPart
from engines.exceptions import EngineError
from engines.gpu_probe import create_runtime, cuda_device, engine_load_error, import_tensorrt, process_logger
from engines.io_buffers import IOBuffers
from engines.specs import TensorSpec

__all__ = ["TrtPart", "capture_graph", "check_engine_io", "engine_io", "import_tensorrt", "on_stream",
           "require_cuda"]

logger = logging.getLogger(__name__)

_TRT_DTYPES = ("float32", "float16", "bfloat16", "int32", "int64", "bool")


def require_cuda(device: torch.device | str | None) -> torch.device:
    """``device`` resolved to ``cuda:N``, or BackendUnavailableError with the reason CUDA cannot be used."""
    return cuda_device(device)


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


@contextlib.contextmanager
def on_stream(stream: torch.cuda.Stream) -> Iterator[None]:
    """Makes ``stream`` the current stream of its device, and restores the previous one in a ``finally``."""
    previous = torch.cuda.current_stream(stream.device)
    torch.cuda.set_stream(stream)
    try:
        yield
    finally:
        torch.cuda.set_stream(previous)


def capture_graph(enqueue: Callable[[int], None], stream: torch.cuda.Stream) -> torch.cuda.CUDAGraph:
    """A CUDA graph of what ``enqueue(stream handle)`` launches on ``stream``.

    ``thread_local`` capture mode: only this thread's unsafe CUDA calls can invalidate the capture (torch's
    default, ``global``, lets any thread's do so). Unlike ``torch.cuda.graph``, whose ``__exit__`` skips
    restoring the stream when ``capture_end`` raises, the caller's stream is restored on every path."""
    graph = torch.cuda.CUDAGraph()
    stream.synchronize()
    with on_stream(stream):
        graph.capture_begin(capture_error_mode="thread_local")
        try:
            enqueue(stream.cuda_stream)
        finally:
            graph.capture_end()
    return graph


class TrtPart(CompiledPart):
    """A deserialized plan with one execution context whose tensor addresses never change, on its own stream.

    Construction warms the context up (one eager run on zeroed inputs) and, with ``cuda_graph``, captures it;
    ``execute`` then replays the graph. ``eager_runs`` and ``replays`` count what ran; ``graph_error`` says why
    a capture failed (the part then runs eagerly, which is slower, and says so in a warning). ``errors`` holds what
    TensorRT logged as an error during this part's own calls (the process's one logger routes them here).
    """

    def __init__(self, path: Path, device: torch.device | str, *, cuda_graph: bool = True,
                 expected_io: tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]] | None = None) -> None:
        trt = import_tensorrt()
        self.path, self.device = Path(path), require_cuda(device)
        self._trt_logger = process_logger(trt)
        self.errors: list[str] = []
        with torch.cuda.device(self.device), self._trt_logger.recording(self.errors):
            self._runtime = create_runtime(trt, self._trt_logger, self.device)
            self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
            if self.engine is None:
                raise engine_load_error(self.path, "deserialize_cuda_engine returned None (a plan from another "
                                        "TensorRT version or GPU, or a damaged file)", self.errors)
            io = engine_io(self.engine, trt)
            if expected_io is not None:
                check_engine_io(io, expected_io)
            self.buffers = IOBuffers(*io, self.device)
            self.context = self.engine.create_execution_context()
            if self.context is None:  # not the plan's fault: an EngineError, not an EngineLoadError (no rebuild)
                logged = "; ".join(self.errors) or "no message"
                raise EngineError(f"TensorRT could not create an execution context for {self.path} on {self.device} "
                                  f"({logged}); the GPU is probably out of memory: stop other GPU processes")
            for t in io[0]:
                self.context.set_input_shape(t.name, t.shape)
            for name, address in self.buffers.addresses().items():
                self.context.set_tensor_address(name, address)
            self.stream = torch.cuda.Stream(self.device)
            self.graph: torch.cuda.CUDAGraph | None = None
            self.graph_error: str | None = None
            self.eager_runs = self.replays = 0
            self._warm_up_and_capture(cuda_graph)
        logger.info("tensorrt %s: loaded %s on %s (%d inputs, %d outputs, batch %d, %s)", trt.__version__,
                    self.path.parent.name, self.device, len(io[0]), len(io[1]), self.buffers.batch,
                    "CUDA graph" if self.graph is not None else "no CUDA graph")

    @property
    def cuda_graph(self) -> bool:
        """Whether ``execute`` replays a CUDA graph."""
        return self.graph is not None

    def _enqueue(self, stream_handle: int) -> None:
        with self._trt_logger.recording(self.errors):
            enqueued = self.context.execute_async_v3(stream_handle)
        if not enqueued:
            raise RuntimeError(f"TensorRT execute_async_v3 failed for {self.path}: "
                               + ("; ".join(self.errors[-3:]) or "no message"))

    def _warm_up_and_capture(self, cuda_graph: bool) -> None:
        """TensorRT's first run does lazy setup that a graph must not capture: run once, then capture."""
        self.stream.wait_stream(torch.cuda.current_stream(self.device))  # the buffers' zero fill
        self._enqueue(self.stream.cuda_stream)
        self.eager_runs += 1
        self.stream.synchronize()
        if not cuda_graph:
            return
        try:
            self.graph = capture_graph(self._enqueue, self.stream)
        except RuntimeError as exc:  # capture-invalidating calls inside TensorRT, or an enqueue failure
            self.graph_error = str(exc)
            logger.warning("CUDA graph capture failed for %s (%s): this part runs without a graph, which is slower",
                           self.path.parent.name, exc)

    def execute(self) -> None:
        with torch.cuda.device(self.device):
            caller = torch.cuda.current_stream(self.device)
            self.stream.wait_stream(caller)  # the caller's input writes land before the part reads them
            if self.graph is not None:
                with on_stream(self.stream):
                    self.graph.replay()  # replays on the current stream
                self.replays += 1
            else:
                self._enqueue(self.stream.cuda_stream)
                self.eager_runs += 1
            caller.wait_stream(self.stream)  # the caller's output reads (and next writes) wait for the part

    def close(self) -> None:
        self.stream.synchronize()
        self.graph = None
        del self.context
