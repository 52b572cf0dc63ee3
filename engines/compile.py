"""From loaded torch modules to a compiled backend: export (cached), check, build (TensorRT), load.

    torch parts --export_onnx--> ONNX (cache) --[check: ORT vs torch, fp32]--> ORT session | TensorRT plan (cache)

The parts: the transformer (with its ControlNet residual inputs, see ``engines.specs``), the encoder, the
decoder, and one part per ControlNet. The same cache serves ``sana-stream build`` (prebuild) and ``serve``
(build on first use).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from engines import BackendName
from engines.base import CompiledEngine
from engines.cache import CacheKey, EngineCache, default_cache_dir, module_digest
from engines.compiled_backend import CompiledBackend
from engines.export import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, ONNX_FILE, export_onnx, require_onnx_tools
from engines.graphs import ControlNetGraph, DecodeGraph, EncodeGraph, VelocityGraph
from engines.parity import FP32_TOLERANCE, ParityReport, check_parity
from engines.specs import BuildSpec, Component, ControlNetPart, ModelShapes, PartId, PartSpec, Precision, part_kind
from engines.torch_backend import TorchBackend

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompileOptions:
    """How compiled parts are built. ``streams`` is the number of streams one model call is built for (more
    run in several calls); ``precision`` None means fp32 for onnxruntime and bf16 for tensorrt."""

    streams: int = 1
    precision: Precision | None = None
    kv_length: int | None = None  # prompt tokens the engines hold; None: the config's max_sequence_length (300)
    cache_dir: Path = field(default_factory=default_cache_dir)
    opset: int = DEFAULT_OPSET
    check: bool = False  # parity of every part (ORT vs torch, fp32) before use; a failure raises ParityError
    tolerance: float = FP32_TOLERANCE
    builder_optimization_level: int = 3  # TensorRT: 3 is NVIDIA's demo default; 5 builds far longer
    cuda_graph: bool = True  # TensorRT: capture each part in a CUDA graph when it is loaded
    tf32: bool = False  # TensorRT: TF32 for the fp32 islands of bf16/fp16 engines (docs/gpu.md, "Precision")
    threads: int = 0  # onnxruntime's CPU thread pool; 0: its default, the physical cores (a cluster worker: its share)

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

    def resolved_precision(self, backend: BackendName) -> Precision:
        if self.precision is not None:
            return self.precision
        return Precision.BF16 if backend is BackendName.TENSORRT else Precision.FP32


def model_shapes(backend: TorchBackend) -> ModelShapes:
    """The shapes the backend's networks fix. ControlNets must share the transformer's token and K/V layout
    (their residuals are added to its tokens; their K/V are batched with its own)."""
    t, geo = backend.transformer, backend.geometry
    fields = ("num_attention_heads", "attention_head_dim", "patch_size", "num_cross_attention_heads",
              "cross_attention_head_dim")
    for i, net in enumerate(backend.controlnets):
        differ = [f"{f} {net.config[f]} vs {t.config[f]}" for f in fields if net.config[f] != t.config[f]]
        if differ:
            raise ValueError(f"controlnets[{i}] does not fit the transformer: {', '.join(differ)}")
    return ModelShapes(latent_channels=geo.latent_channels, spatial_compression=geo.spatial_compression,
                       num_blocks=len(t.transformer_blocks), cross_heads=int(t.config.num_cross_attention_heads),
                       cross_head_dim=int(t.config.cross_attention_head_dim),
                       hidden_size=int(t.config.num_attention_heads * t.config.attention_head_dim),
                       patch_size=int(t.config.patch_size),
                       controlnet_blocks=tuple(len(net.transformer_blocks) for net in backend.controlnets))


def part_ids(backend: TorchBackend) -> list[PartId]:
    """Every part of a compiled backend: the three components, then one per ControlNet."""
    return [*Component, *(ControlNetPart(i) for i in range(len(backend.controlnets)))]


def graph_modules(backend: TorchBackend) -> dict[PartId, nn.Module]:
    """The module each part is exported from (sharing the backend's weights)."""
    modules: dict[PartId, nn.Module] = {Component.TRANSFORMER: VelocityGraph(backend.transformer),
                                        Component.ENCODER: EncodeGraph(backend.encoder_codec),
                                        Component.DECODER: DecodeGraph(backend.decoder_codec)}
    for i, net in enumerate(backend.controlnets):
        modules[ControlNetPart(i)] = ControlNetGraph(net)
    return modules


@dataclass
class CompiledParts:
    """What ``compile_backend`` produced, with timings for benchmarks and the build command."""

    backend: CompiledBackend
    onnx_paths: dict[PartId, Path]
    engine_paths: dict[PartId, Path]
    parity: dict[PartId, ParityReport]
    seconds: dict[str, float]


class Compiler:
    """Exports and builds the parts of one TorchBackend into ``options.cache_dir``."""

    def __init__(self, backend: TorchBackend, spec: BuildSpec, options: CompileOptions, name: BackendName) -> None:
        self.backend, self.spec, self.options, self.name = backend, spec, options, BackendName(name)
        self.cache = EngineCache(options.cache_dir)
        self.modules = graph_modules(backend)
        self.shapes = model_shapes(backend)
        self._digests: dict[PartId, str] = {}
        self.seconds: dict[str, float] = {}

    def digest(self, component: PartId) -> str:
        if component not in self._digests:
            self._digests[component] = module_digest(self.modules[component])
        return self._digests[component]

    def part(self, component: PartId, precision: Precision) -> PartSpec:
        spec = BuildSpec(**{**self.spec.__dict__, "precision": precision})
        return spec.parts(self.shapes)[component]

    def onnx_key(self, component: PartId, precision: Precision) -> CacheKey:
        """The weights' digest and the part's io identify a graph: a ControlNet's key holds neither its index
        nor the other nets, and the transformer's does not depend on the ControlNets at all."""
        return CacheKey(kind="onnx", model_digest=self.digest(component), component=part_kind(component),
                        shapes=self.part(component, precision).describe(), precision=precision.value,
                        opset=self.options.opset)

    def onnx(self, component: PartId, precision: Precision) -> Path:
        """The cached (or freshly exported) ONNX graph of ``component`` at ``precision``."""
        part = self.part(component, precision)
        started = time.perf_counter()
        entry = self.cache.get_or_build(self.onnx_key(component, precision),
                                        lambda d: export_onnx(self.modules[component], part, d, self.options.opset),
                                        what=f"ONNX graph ({precision.value})")
        self.add_time(f"export_{component.value}", started)
        return entry / ONNX_FILE

    def check(self, component: PartId) -> ParityReport:
        """ORT vs torch on the fp32 graph (exported on a fp32 copy when the model runs in another dtype)."""
        module = self.modules[component]
        if next(module.parameters()).dtype != torch.float32:
            import copy

            module = copy.deepcopy(module).float()
        path = self.onnx(component, Precision.FP32)
        return check_parity(module, path, self.part(component, Precision.FP32), tolerance=self.options.tolerance)

    def add_time(self, name: str, started: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started


def compile_backend(backend: TorchBackend, spec: BuildSpec, options: CompileOptions,
                    name: BackendName | str) -> CompiledParts:
    """Builds (or loads from the cache) every part for ``name`` and returns the backend over them."""
    name = BackendName(name)
    if name is BackendName.TORCH:
        raise ValueError("the torch backend is not compiled; use TorchBackend directly")
    require_onnx_tools()
    if name is BackendName.TENSORRT:  # fail before minutes of export, not after, with the actual cause
        from engines.gpu_probe import probe_tensorrt

        probe_tensorrt(backend.geometry.device)
    precision = options.resolved_precision(name)
    spec = BuildSpec(**{**spec.__dict__, "precision": precision})
    compiler = Compiler(backend, spec, options, name)
    parity: dict[PartId, ParityReport] = {}
    onnx_paths: dict[PartId, Path] = {}
    engine_paths: dict[PartId, Path] = {}
    engines: dict[PartId, CompiledEngine] = {}
    device = backend.geometry.device
    for component in part_ids(backend):
        if options.check:
            parity[component] = compiler.check(component)
        onnx_paths[component] = compiler.onnx(component, precision)
        started = time.perf_counter()
        if name is BackendName.ONNXRUNTIME:
            from engines.onnxruntime_backend import OrtEngine

            engines[component] = OrtEngine(onnx_paths[component], device, threads=options.threads)
            engine_paths[component] = onnx_paths[component]
        else:
            from engines.tensorrt_build import load_or_build

            engine_paths[component], engines[component] = load_or_build(compiler, component, onnx_paths[component])
        compiler.add_time(f"load_{component.value}", started)
    compiled = CompiledBackend(backend, engines, spec.kv_length, name.value)
    logger.info("%s backend ready (%s, transformer batch %d, frame batch %d, %d prompt tokens, %d ControlNets)",
                name.value, precision.value, spec.velocity_batch, spec.frame_batch, spec.kv_length,
                len(backend.controlnets))
    return CompiledParts(compiled, onnx_paths, engine_paths, parity, compiler.seconds)
