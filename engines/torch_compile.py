"""The torch-compile backend: each part's torch module compiled by ``torch.compile`` (Inductor) and run on fixed
buffers, behind the same ``CompiledBackend`` as onnxruntime and TensorRT parts.

It needs neither ONNX nor TensorRT, so it is the fast path on a GPU where TensorRT cannot be installed (and the one
``make device-check`` measures offline). Each part is a ``CompiledPart`` on buffers sized for the most rows
(``engines.specs``) that runs the rows a call has: the batching, prompt K/V padding and ControlNet residuals are
``CompiledBackend``'s. On a GPU every row count is compiled at load and runs in a CUDA graph of its own, captured
by us on the buffers (``TorchCompileGraphs.OWN``, as TensorRT parts) or by Inductor (``REDUCE_OVERHEAD``); on a
CPU Inductor generates C++ (a C++ compiler must be installed) and compiles other row counts on first use.

Inductor's caches (its FX graph cache, generated code, Triton kernels) live in ``inductor/`` of the engine cache
(``$SANA_STREAM_CACHE/engines/inductor`` by default), so a second start compiles nothing: dynamo traces the
modules again (seconds) and Inductor loads the code it wrote the first time.
"""

from __future__ import annotations

import logging
from collections import Counter
import os
import time
from pathlib import Path

import torch
from torch import nn

from engines.base import CompiledPart
from engines.compile_options import CompileOptions, TorchCompileGraphs
from engines.io_buffers import IOBuffers
from engines.specs import PartId, PartSpec, Precision

logger = logging.getLogger(__name__)

INDUCTOR_DIR = "inductor"  # in CompileOptions.cache_dir


def use_inductor_cache(cache_dir: Path) -> Path:
    """Points Inductor's and Triton's caches into ``cache_dir``/inductor (process-wide environment variables,
    read by torch when it compiles, so set before the first compile) and returns that directory."""
    directory = Path(cache_dir) / INDUCTOR_DIR
    (directory / "triton").mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(directory)
    os.environ["TRITON_CACHE_DIR"] = str(directory / "triton")
    return directory


def compiled_graphs() -> dict[str, int]:
    """This process's count of Inductor graphs compiled (``miss``) and loaded from the cache (``hit``): torch's
    own counters (FX graph cache and AOTAutograd cache). A start that finds everything cached has ``miss`` 0."""
    from torch._dynamo.utils import counters  # torch's counters of compile events; a private but stable module

    fx, aot = counters["inductor"], counters["aot_autograd"]
    return {"hit": int(fx["fxgraph_cache_hit"] + aot["autograd_cache_hit"]),
            "miss": int(fx["fxgraph_cache_miss"])}


def model_precision(dtype: torch.dtype, asked: Precision | None) -> Precision:
    """torch-compile runs the model in its own dtype; a different ``asked`` precision is refused."""
    own = next((p for p in Precision if p.dtype == dtype), None)
    if own is None:
        raise ValueError(f"torch-compile cannot run a {dtype} model")
    if asked is not None and asked is not own:
        raise ValueError(f"torch-compile runs the model's own dtype ({own.value}); precision {asked.value} was asked "
                         "for: load the model in that dtype instead (StreamConfig(dtype=...))")
    return own


class TorchPart(CompiledPart):
    """One part's module on fixed buffers, compiled by ``torch.compile`` (or eager with ``compile=False``: torch
    with CUDA graphs alone): ``execute(rows)`` runs it on the first ``rows`` rows of the inputs and copies its
    outputs into those rows of the output buffers. Construction compiles and warms it up at the most rows (two runs)
    and, on a GPU, at every row count (as ``engines.tensorrt_runtime.TrtPart``, so no frame waits for a compile);
    with ``TorchCompileGraphs.OWN`` it captures one CUDA graph per row count on a stream of its own. On a CPU other
    row counts compile on first use (Inductor then makes the batch dynamic). ``eager_runs`` and ``replays`` count
    what ran, ``runs`` the calls per row count; ``graph_error`` says why a capture failed (the part then runs
    without graphs, with a warning)."""

    def __init__(self, module: nn.Module, spec: PartSpec, device: torch.device,
                 graphs: TorchCompileGraphs = TorchCompileGraphs.OWN, *, compile: bool = True) -> None:
        self.spec, self.device = spec, device
        self.buffers = IOBuffers(spec.inputs, spec.outputs, device)
        self._inputs = [self.buffers.tensors[t.name] for t in spec.inputs]
        self._outputs = [self.buffers.tensors[t.name] for t in spec.outputs]
        on_gpu = device.type == "cuda"
        self.graphs = graphs if on_gpu else TorchCompileGraphs.NONE
        if self.graphs is TorchCompileGraphs.REDUCE_OVERHEAD and not compile:
            raise ValueError("reduce-overhead graphs are torch.compile's: they need compile=True")
        mode = "reduce-overhead" if self.graphs is TorchCompileGraphs.REDUCE_OVERHEAD else None
        self._module = torch.compile(module.eval(), mode=mode, dynamic=False) if compile else module.eval()
        self.graph_by_rows: dict[int, torch.cuda.CUDAGraph] = {}
        self.graph_error: str | None = None  # why a capture failed; the part then runs without graphs
        self.eager_runs = self.replays = 0
        self.runs: Counter[int] = Counter()
        started = time.perf_counter()
        sizes = range(self.buffers.batch, 0, -1) if on_gpu else [self.buffers.batch]
        if self.graphs is TorchCompileGraphs.OWN:
            self.stream = torch.cuda.Stream(self.device)
        for rows in sizes:
            for _ in range(2):  # the first run compiles; reduce-overhead records its graph on a later one
                self._run(rows)
            if self.graphs is TorchCompileGraphs.OWN:
                self._capture(rows)
        logger.info("%s: %s ready on %s in %.1f s (batch %d, CUDA graphs: %s)", "torch-compile" if compile else
                    "torch", spec.component.value, device, time.perf_counter() - started, self.buffers.batch,
                    self.graphs.value)

    def _run(self, rows: int) -> None:
        if self.graphs is TorchCompileGraphs.REDUCE_OVERHEAD:
            torch.compiler.cudagraph_mark_step_begin()  # the last call's outputs are copied out already
        with torch.inference_mode():
            out = self._module(*(t[:rows] for t in self._inputs))
            for buffer, value in zip(self._outputs, out if isinstance(out, tuple) else (out,), strict=True):
                buffer[:rows].copy_(value)
        self.eager_runs += 1

    def _capture(self, rows: int) -> None:
        from engines.tensorrt_runtime import capture_graph

        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        try:
            self.graph_by_rows[rows] = capture_graph(lambda _handle: self._run(rows), self.stream)
        except RuntimeError as exc:  # a capture-invalidating call in the module (a host sync, say)
            self.graph_error, self.graphs = str(exc), TorchCompileGraphs.NONE
            self.graph_by_rows.clear()
            logger.warning("CUDA graph capture failed for %s (%s): this part runs without graphs, which is slower",
                           self.spec.component.value, exc)
            return
        self.eager_runs -= 1  # the captured run launched nothing

    @property
    def graph(self) -> torch.cuda.CUDAGraph | None:
        """The graph of the most rows (None without graphs)."""
        return self.graph_by_rows.get(self.buffers.batch)

    def execute(self, rows: int) -> None:
        self.runs[self.buffers.check_rows(rows)] += 1
        graph = self.graph_by_rows.get(rows)
        if graph is None:
            self._run(rows)
            return
        from engines.tensorrt_runtime import on_stream

        caller = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(caller)  # the caller's input writes land before the graph reads them
        with on_stream(self.stream):
            graph.replay()
        self.replays += 1
        caller.wait_stream(self.stream)  # the caller's reads of the outputs come after

    def close(self) -> None:
        if self.graph_by_rows:
            self.stream.synchronize()
        self.graph_by_rows.clear()


def compile_torch_parts(modules: dict[PartId, nn.Module], specs: dict[PartId, PartSpec], device: torch.device,
                        options: CompileOptions, *, compile: bool = True) -> dict[PartId, CompiledPart]:
    """A ``TorchPart`` per part (``modules`` and ``specs`` keyed by ``PartId``), Inductor's caches under
    ``options.cache_dir``; ``compile=False``: the eager modules on fixed buffers in CUDA graphs."""
    if not compile:
        return {part: TorchPart(modules[part], specs[part], device, TorchCompileGraphs.OWN, compile=False)
                for part in modules}
    cache = use_inductor_cache(options.cache_dir)
    logger.info("torch-compile: compiling %d parts on %s (Inductor cache %s; the first start takes minutes on a "
                "large model, later starts load the cached code)", len(modules), device, cache)
    before = compiled_graphs()
    parts: dict[PartId, CompiledPart] = {part: TorchPart(modules[part], specs[part], device,
                                                         options.torch_compile_graphs) for part in modules}
    after = compiled_graphs()
    logger.info("torch-compile: %d graphs compiled, %d loaded from the cache", after["miss"] - before["miss"],
                after["hit"] - before["hit"])
    return parts
