"""How compiled parts are built: one frozen dataclass shared by the compile step and each runtime's loader."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

from engines import BackendName
from engines.cache import default_cache_dir
from engines.export import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET
from engines.parity import FP32_TOLERANCE
from engines.specs import Precision


class TorchCompileGraphs(str, enum.Enum):
    """How the torch-compile backend uses CUDA graphs on a GPU (on a CPU there are none). Which is faster is
    measured by ``make device-check`` (docs/gpu.md)."""

    OWN = "own"  # each part captured in one CUDA graph on its fixed buffers, as TensorRT parts are
    REDUCE_OVERHEAD = "reduce-overhead"  # torch.compile(mode="reduce-overhead"): Inductor's CUDA graph trees
    NONE = "none"  # Inductor's kernels launched one by one


@dataclass(frozen=True)
class CompileOptions:
    """How compiled parts are built. ``streams`` is the number of streams one model call is built for (more
    run in several calls); ``precision`` None means fp32 for onnxruntime and bf16 for tensorrt."""

    streams: int = 1
    precision: Precision | None = None
    kv_length: int | None = None  # prompt tokens the parts hold; None: the config's max_sequence_length (300)
    cache_dir: Path = field(default_factory=default_cache_dir)
    opset: int = DEFAULT_OPSET
    check: bool = False  # parity of every part (ORT vs torch, fp32) before use; a failure raises ParityError
    tolerance: float = FP32_TOLERANCE
    builder_optimization_level: int = 3  # TensorRT: 3 is NVIDIA's demo default; 5 builds far longer
    cuda_graph: bool = True  # TensorRT: capture each part in a CUDA graph when it is loaded
    tf32: bool = False  # TensorRT: TF32 for the fp32 islands of bf16/fp16 engines (docs/gpu.md, "Precision")
    threads: int = 0  # onnxruntime's CPU thread pool; 0: its default, the physical cores (a cluster worker: its share)
    torch_compile_graphs: TorchCompileGraphs = TorchCompileGraphs.OWN  # torch-compile on a GPU

    def __post_init__(self) -> None:
        if isinstance(self.streams, bool) or not isinstance(self.streams, int) or not 1 <= self.streams <= 64:
            raise ValueError(f"streams must be an integer in [1, 64], got {self.streams!r}")
        if self.precision is not None:
            try:
                object.__setattr__(self, "precision", Precision(self.precision))
            except ValueError:
                raise ValueError(f"precision must be one of {', '.join(p.value for p in Precision)}, "
                                 f"got {self.precision!r}") from None
        if self.kv_length is not None and (isinstance(self.kv_length, bool) or not isinstance(self.kv_length, int)
                                           or not 1 <= self.kv_length <= 4096):
            raise ValueError(f"kv_length must be None or an integer in [1, 4096], got {self.kv_length!r}")
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise ValueError(f"opset must lie in [{MIN_OPSET}, {MAX_OPSET}], got {self.opset!r}")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 0:
            raise ValueError(f"threads must be a whole number, 0 or more, got {self.threads!r}")
        if not 0 <= self.builder_optimization_level <= 5:
            raise ValueError(f"builder_optimization_level must lie in [0, 5], got {self.builder_optimization_level!r}")
        object.__setattr__(self, "cache_dir", Path(self.cache_dir).expanduser())
        try:
            object.__setattr__(self, "torch_compile_graphs", TorchCompileGraphs(self.torch_compile_graphs))
        except ValueError:
            raise ValueError(f"torch_compile_graphs must be one of {', '.join(g.value for g in TorchCompileGraphs)}, "
                             f"got {self.torch_compile_graphs!r}") from None

    def resolved_precision(self, backend: BackendName) -> Precision:
        """The precision of the exported graphs (torch-compile runs the model's own dtype instead)."""
        if self.precision is not None:
            return self.precision
        return Precision.BF16 if backend is BackendName.TENSORRT else Precision.FP32
