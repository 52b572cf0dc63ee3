"""From loaded torch modules to a compiled backend: export (cached), check, build (TensorRT), load.

    torch parts --export_onnx--> ONNX (cache) --[check: ORT vs torch, fp32]--> ORT session | TensorRT plan (cache)

The parts: the transformer (with its ControlNet residual inputs, see ``engines.specs``), the encoder, the
decoder, and one part per ControlNet. The same cache serves ``sana-stream build`` (prebuild) and ``serve``
(build on first use).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from engines import BackendName
from engines.base import CompiledPart
from engines.cache import CacheKey, PartCache, module_digest
from engines.compile_options import CompileOptions
from engines.compiled_backend import CompiledBackend
from engines.export import ONNX_FILE, export_onnx, require_onnx_tools
from engines.graphs import ControlNetGraph, DecodeGraph, EncodeGraph, VelocityGraph
from engines.parity import ParityReport, check_parity
from engines.part_loader import ExportedPart, PartLoader
from engines.specs import BuildSpec, Component, ControlNetPart, ModelShapes, PartId, PartSpec, Precision, part_kind
from engines.torch_backend import TorchBackend

logger = logging.getLogger(__name__)


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
                                        Component.ENCODER: EncodeGraph(backend.encoder),
                                        Component.DECODER: DecodeGraph(backend.decoder)}
    for i, net in enumerate(backend.controlnets):
        modules[ControlNetPart(i)] = ControlNetGraph(net)
    return modules


@dataclass
class CompileResult:
    """What ``compile_backend`` produced, with timings for benchmarks and the build command."""

    backend: CompiledBackend
    onnx_paths: dict[PartId, Path]
    part_paths: dict[PartId, Path]
    parity: dict[PartId, ParityReport]
    seconds: dict[str, float]


class Compiler:
    """Exports and builds the parts of one TorchBackend into ``options.cache_dir``."""

    def __init__(self, backend: TorchBackend, spec: BuildSpec, options: CompileOptions, name: BackendName) -> None:
        self.backend, self.spec, self.options, self.name = backend, spec, options, BackendName(name)
        self.cache = PartCache(options.cache_dir)
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


def part_loader(name: BackendName, cache: PartCache, options: CompileOptions, device: torch.device) -> PartLoader:
    """The loader of runtime ``name``; each imports its runtime only here."""
    if name is BackendName.ONNXRUNTIME:
        from engines.onnxruntime_backend import OnnxRuntimeLoader

        return OnnxRuntimeLoader(threads=options.threads)
    if name is BackendName.TENSORRT:
        from engines.tensorrt_build import TensorRTLoader

        return TensorRTLoader(cache, options, device)
    raise ValueError(f"the {name.value} backend is not compiled; use TorchBackend directly")


def compile_with_torch(backend: TorchBackend, spec: BuildSpec, options: CompileOptions, *,
                       compile: bool = True) -> CompileResult:
    """The torch-compile backend: every part's module compiled by Inductor on fixed buffers, no export.
    ``compile=False``: the same parts eager, in CUDA graphs on a GPU (torch with graphs alone, for comparisons)."""
    from engines.torch_compile import compile_torch_parts, model_precision

    geo = backend.geometry
    spec = BuildSpec(**{**spec.__dict__, "precision": model_precision(geo.dtype, options.precision)})
    compiler = Compiler(backend, spec, options, BackendName.TORCH_COMPILE)
    started = time.perf_counter()
    ids = part_ids(backend)
    parts = compile_torch_parts({p: compiler.modules[p] for p in ids},
                                {p: compiler.part(p, spec.precision) for p in ids}, geo.device, options,
                                compile=compile)
    compiler.add_time("compile", started)
    name = BackendName.TORCH_COMPILE.value if compile else "torch-graphs"
    compiled = CompiledBackend(backend, parts, spec.kv_length, name)
    return CompileResult(compiled, {}, {}, {}, compiler.seconds)


def compile_backend(backend: TorchBackend, spec: BuildSpec, options: CompileOptions,
                    name: BackendName | str) -> CompileResult:
    """Builds (or loads from the cache) every part for ``name`` and returns the backend over them."""
    name = BackendName(name)
    if name is BackendName.TORCH:
        raise ValueError("the torch backend is not compiled; use TorchBackend directly")
    if name is BackendName.TORCH_COMPILE:
        return compile_with_torch(backend, spec, options)
    require_onnx_tools()
    precision = options.resolved_precision(name)
    spec = BuildSpec(**{**spec.__dict__, "precision": precision})
    compiler = Compiler(backend, spec, options, name)
    device = backend.geometry.device
    loader = part_loader(name, compiler.cache, options, device)  # fails before minutes of export, not after
    parity: dict[PartId, ParityReport] = {}
    onnx_paths: dict[PartId, Path] = {}
    part_paths: dict[PartId, Path] = {}
    compiled_parts: dict[PartId, CompiledPart] = {}
    for component in part_ids(backend):
        if options.check:
            parity[component] = compiler.check(component)
        onnx_paths[component] = compiler.onnx(component, precision)
        started = time.perf_counter()
        loaded = loader.load(ExportedPart(component, onnx_paths[component], compiler.onnx_key(component, precision),
                                          precision, device, compiler.part(component, precision).batch_range))
        part_paths[component], compiled_parts[component] = loaded.path, loaded.compiled
        if loaded.build_seconds:
            compiler.seconds[f"build_{component.value}"] = loaded.build_seconds
        compiler.add_time(f"load_{component.value}", started)
    compiled = CompiledBackend(backend, compiled_parts, spec.kv_length, name.value)
    logger.info("%s backend ready (%s, transformer batch 1..%d, frame batch 1..%d, %d prompt tokens, %d ControlNets)",
                name.value, precision.value, spec.velocity_batch, spec.frame_batch, spec.kv_length,
                len(backend.controlnets))
    return CompileResult(compiled, onnx_paths, part_paths, parity, compiler.seconds)
