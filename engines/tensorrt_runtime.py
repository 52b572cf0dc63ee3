"""TensorRT runtime: the tensor API on buffers allocated once, a CUDA stream per part, a CUDA graph per batch size.

Stream discipline (docs/gpu.md, "Threads and CUDA streams"): every part runs on a stream of its own, never on
the legacy default stream. ``execute`` makes the part's stream wait for the caller's current stream (so the
caller's writes into the input buffers land first) and the caller's stream wait for the part's (so its reads
of the outputs, and its next writes, come after). Everything runs under the part's own device (``cuda:N``).

Batch sizes and CUDA graphs: the engine's one optimization profile takes any batch from 1 to its maximum N. A CUDA
graph holds the shapes it was captured with, so the part keeps one graph per batch size, all on the same execution
context, IO buffers (the first ``rows`` rows of each) and TensorRT scratch memory (the context's, sized for N once).
They are **captured at load, for every size from 1 to N**, while the part is constructed: before any pipeline
thread exists (``thread_local`` capture mode; the caller's stream is restored whatever the capture does), so no
frame ever waits for a warm-up run and a capture, and a capture that fails shows at start, not when a second peer
joins. The cost is N warm-up runs of growing size plus N captures per part at load (for ``serve``'s 4 peers at one
step: 1+2+3+4 transformer rows), and only graph objects per size, no memory of their own. Lazy capture on first
use would put that work on the frame path, inside the engine thread, while the other pipeline threads use the GPU.

``import tensorrt`` happens only in ``engines.gpu_probe`` (lazily), so CPU installs never need it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from engines.base import CompiledPart
from engines.exceptions import EngineError
from engines.gpu_probe import create_runtime, cuda_device, engine_load_error, import_tensorrt, process_logger
from engines.io_buffers import IOBuffers
from engines.specs import BatchRange, TensorSpec

__all__ = ["TrtPart", "capture_graph", "check_engine_io", "engine_io", "import_tensorrt", "on_stream",
           "require_cuda"]

logger = logging.getLogger(__name__)

_TRT_DTYPES = ("float32", "float16", "bfloat16", "int32", "int64", "bool")


def require_cuda(device: torch.device | str | None) -> torch.device:
    """``device`` resolved to ``cuda:N``, or BackendUnavailableError with the reason CUDA cannot be used."""
    return cuda_device(device)


EngineIO = tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...], BatchRange]  # inputs, outputs (at max), batch


def engine_io(engine: Any, trt: ModuleType) -> EngineIO:
    """(inputs, outputs, batch range) of a deserialized ICudaEngine, in its IO order: the batch range is the
    optimization profile's for dimension 0 (one profile, the same for every input), shapes hold its maximum."""
    names = {getattr(trt, n): n for n in _TRT_DTYPES if hasattr(trt, n)}
    inputs, outputs, ranges = [], [], set()
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        dtype = engine.get_tensor_dtype(name)
        if dtype not in names:
            raise ValueError(f"engine tensor {name!r} has dtype {dtype}, which we do not run")
        shape = tuple(int(d) for d in engine.get_tensor_shape(name))
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
            low, opt, high = (tuple(int(d) for d in s) for s in engine.get_tensor_profile_shape(name, 0))
            if low[1:] != high[1:]:
                raise ValueError(f"engine input {name!r} varies past the batch: {low} .. {high}")
            ranges.add((low[0], opt[0], high[0]))
            inputs.append(TensorSpec(name, high, names[dtype]))
        else:
            outputs.append((name, shape, names[dtype]))
    if len(ranges) != 1:
        raise ValueError(f"engine inputs must share one batch range, got {sorted(ranges)}")
    batch = BatchRange(*ranges.pop())
    return (tuple(inputs), tuple(TensorSpec(n, (batch.max, *shape[1:]), dt) for n, shape, dt in outputs), batch)


def check_engine_io(engine: EngineIO, onnx: EngineIO) -> None:
    """An engine must have the ONNX graph's inputs and outputs (any order): names, shapes, dtypes; and the batch
    range it was built for (an engine of another range is another cache entry, never reused)."""
    for kind, got, want in (("inputs", engine[0], onnx[0]), ("outputs", engine[1], onnx[1])):
        if sorted(got, key=lambda t: t.name) != sorted(want, key=lambda t: t.name):
            raise ValueError(f"engine {kind} {[t.describe() for t in got]} differ from the ONNX graph's "
                             f"{[t.describe() for t in want]}")
    if engine[2] != onnx[2]:
        raise ValueError(f"engine batch {engine[2].describe()} differs from the build's {onnx[2].describe()}")


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

    Construction warms the context up at every batch size (one eager run each, on zeroed inputs) and, with
    ``cuda_graph``, captures one graph per size (see the module's docstring); ``execute(rows)`` then replays the
    graph of ``rows``. ``eager_runs`` and ``replays`` count what ran, ``runs`` the calls per size;
    ``graph_errors`` says why a size's capture failed (that size then runs eagerly, which is slower, with a warning).
    ``errors`` holds what TensorRT logged as an error during this part's own calls (the process's one logger
    routes them here).
    """

    def __init__(self, path: Path, device: torch.device | str, *, cuda_graph: bool = True,
                 expected_io: EngineIO | None = None) -> None:
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
            self.buffers, self.batch = IOBuffers(io[0], io[1], self.device), io[2]
            self.context = self.engine.create_execution_context()
            if self.context is None:  # not the plan's fault: an EngineError, not an EngineLoadError (no rebuild)
                logged = "; ".join(self.errors) or "no message"
                raise EngineError(f"TensorRT could not create an execution context for {self.path} on {self.device} "
                                  f"({logged}); the GPU is probably out of memory: stop other GPU processes")
            for name, address in self.buffers.addresses().items():  # the first rows of a buffer start there too
                self.context.set_tensor_address(name, address)
            self.stream = torch.cuda.Stream(self.device)
            self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
            self.graph_errors: dict[int, str] = {}
            self.eager_runs = self.replays = 0
            self.runs: Counter[int] = Counter()
            self._shape_rows = 0  # the batch the context's input shapes are set to
            started = time.perf_counter()
            for rows in range(self.batch.min, self.batch.max + 1):
                self._warm_up_and_capture(rows, cuda_graph)
        logger.info("tensorrt %s: loaded %s on %s (%d inputs, %d outputs, batch %s, CUDA graphs for %s, %.1f s)",
                    trt.__version__, self.path.parent.name, self.device, len(io[0]), len(io[1]),
                    self.batch.describe(), sorted(self.graphs) or "none", time.perf_counter() - started)

    @property
    def cuda_graph(self) -> bool:
        """Whether ``execute`` replays a CUDA graph at every batch size."""
        return len(self.graphs) == self.batch.max - self.batch.min + 1

    def _set_rows(self, rows: int) -> None:
        """Sets every input's shape to ``rows`` rows (host-side; a replay needs none, its graph holds them)."""
        for t in self.buffers.inputs:
            with self._trt_logger.recording(self.errors):
                accepted = self.context.set_input_shape(t.name, (rows, *t.shape[1:]))
            if not accepted:
                raise EngineError(f"TensorRT refused batch {rows} for {t.name!r} of {self.path} "
                                  f"(built for {self.batch.describe()}): " + "; ".join(self.errors[-3:]))
        self._shape_rows = rows

    def _enqueue(self, stream_handle: int) -> None:
        with self._trt_logger.recording(self.errors):
            enqueued = self.context.execute_async_v3(stream_handle)
        if not enqueued:
            raise RuntimeError(f"TensorRT execute_async_v3 failed for {self.path}: "
                               + ("; ".join(self.errors[-3:]) or "no message"))

    def _warm_up_and_capture(self, rows: int, cuda_graph: bool) -> None:
        """TensorRT's first run after a shape change does setup that a graph must not capture: run once at
        ``rows`` rows, then capture that size."""
        self._set_rows(rows)
        self.stream.wait_stream(torch.cuda.current_stream(self.device))  # the buffers' zero fill
        self._enqueue(self.stream.cuda_stream)
        self.eager_runs += 1
        self.stream.synchronize()
        if not cuda_graph:
            return
        try:
            self.graphs[rows] = capture_graph(self._enqueue, self.stream)
        except RuntimeError as exc:  # capture-invalidating calls inside TensorRT, or an enqueue failure
            self.graph_errors[rows] = str(exc)
            logger.warning("CUDA graph capture failed for %s at batch %d (%s): that batch runs without a graph, "
                           "which is slower", self.path.parent.name, rows, exc)

    def execute(self, rows: int) -> None:
        graph = self.graphs.get(self.buffers.check_rows(rows))
        with torch.cuda.device(self.device):
            caller = torch.cuda.current_stream(self.device)
            self.stream.wait_stream(caller)  # the caller's input writes land before the part reads them
            if graph is not None:
                with on_stream(self.stream):
                    graph.replay()  # replays on the current stream
                self.replays += 1
            else:
                if self._shape_rows != rows:
                    self._set_rows(rows)
                self._enqueue(self.stream.cuda_stream)
                self.eager_runs += 1
            caller.wait_stream(self.stream)  # the caller's output reads (and next writes) wait for the part
        self.runs[rows] += 1

    def close(self) -> None:
        self.stream.synchronize()
        self.graphs.clear()
        del self.context
