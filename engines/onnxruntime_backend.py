"""ONNX Runtime parts: one InferenceSession per part, run with IO binding on preallocated buffers.

CPU uses the CPU execution provider; a CUDA device needs onnxruntime-gpu's CUDA provider, and its
absence is an error, never a quiet move to the CPU.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from engines.base import CompiledPart
from engines.exceptions import BackendUnavailableError, EngineLoadError
from engines.io_buffers import IOBuffers, specs_from_onnx
from engines.part_loader import ExportedPart, LoadedPart, PartLoader

if TYPE_CHECKING:
    import onnxruntime as ort

logger = logging.getLogger(__name__)

NUMPY_TYPES = {"float32": np.float32, "float16": np.float16, "int32": np.int32, "int64": np.int64, "bool": np.bool_}


def providers_for(device: torch.device) -> list[str | tuple[str, dict[str, object]]]:
    """The execution providers for ``device``: CPU, or CUDA on that GPU (an error where onnxruntime lacks it)."""
    import onnxruntime as ort

    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    if device.type == "cuda":
        available = ort.get_available_providers()
        if "CUDAExecutionProvider" not in available:
            raise BackendUnavailableError("onnxruntime", "the CUDAExecutionProvider",
                                          f"this onnxruntime offers {available}; install onnxruntime-gpu, or run "
                                          "on the CPU with device='cpu'")
        return [("CUDAExecutionProvider", {"device_id": device.index or 0})]
    raise ValueError(f"onnxruntime runs on cpu or cuda devices, got {device}")


class OrtPart(CompiledPart):
    """An ONNX graph with a dynamic batch on ``IOBuffers`` for up to ``max_batch`` rows, run with
    ``run_with_iobinding``: one IO binding per row count, each binding the first rows of the same buffers (made on
    first use: a binding is host bookkeeping, no memory of its own)."""

    def __init__(self, path: Path, device: torch.device, max_batch: int, *, threads: int = 0) -> None:
        import onnxruntime as ort

        self.path, self.device = Path(path), device
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads  # 0: onnxruntime's default (the physical cores)
        options.log_severity_level = 3
        if device.type == "cpu":
            # as torch.set_flush_denormal on CPU (docs/design.md#dependency-facts: random weights hit denormals)
            options.add_session_config_entry("session.set_denormal_as_zero", "1")
            # pool threads spin between ops by default, taking the idle cycles the event loop and encoders need
            # (benchmarks/README.md#measurements-behind-design-choices)
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=providers_for(device))
        except BackendUnavailableError:
            raise
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types for a bad file
            raise EngineLoadError(self.path, "onnxruntime", str(exc)) from exc
        try:
            inputs, outputs = specs_from_onnx(self.path, batch=max_batch)
        except ValueError as exc:
            raise EngineLoadError(self.path, "onnxruntime", str(exc)) from exc
        unsupported = [t.describe() for t in (*inputs, *outputs) if t.dtype not in NUMPY_TYPES]
        if unsupported:
            raise EngineLoadError(self.path, "onnxruntime", f"no IO binding for {unsupported} (bf16 is TensorRT only)")
        self.buffers = IOBuffers(inputs, outputs, device)
        self.bindings: dict[int, ort.IOBinding] = {}
        self.runs: Counter[int] = Counter()
        logger.info("onnxruntime %s: %s on %s, batch 1..%d", ort.__version__, self.path.parent.name,
                    self.session.get_providers()[0], max_batch)

    def binding(self, rows: int) -> ort.IOBinding:
        """The IO binding of the first ``rows`` rows of every buffer."""
        binding = self.bindings.get(rows)
        if binding is None:
            binding = self.bindings[rows] = self.session.io_binding()
            device_type, device_id = self.device.type, self.device.index or 0
            for bind, specs in ((binding.bind_input, self.buffers.inputs), (binding.bind_output, self.buffers.outputs)):
                for t in specs:
                    bind(t.name, device_type, device_id, NUMPY_TYPES[t.dtype], [rows, *t.shape[1:]],
                         self.buffers.tensors[t.name].data_ptr())
        return binding

    def execute(self, rows: int) -> None:
        binding = self.binding(self.buffers.check_rows(rows))
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()  # our writes land before ORT reads
        self.session.run_with_iobinding(binding)
        self.runs[rows] += 1

    def close(self) -> None:
        for binding in self.bindings.values():
            binding.clear_binding_inputs()
            binding.clear_binding_outputs()


class OnnxRuntimeLoader(PartLoader):
    """ONNX Runtime runs the exported graph itself: nothing to build. ``threads``: its CPU pool (0: its default)."""

    def __init__(self, threads: int = 0) -> None:
        self.threads = threads

    def load(self, exported: ExportedPart) -> LoadedPart:
        return LoadedPart(exported.onnx_path, OrtPart(exported.onnx_path, exported.device, exported.batch.max,
                                                      threads=self.threads))
