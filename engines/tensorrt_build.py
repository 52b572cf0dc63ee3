"""TensorRT engine builds with polygraphy: strongly typed networks from fp16/bf16/fp32 ONNX.

TensorRT 11 has no FP16/BF16 builder flags (docs/design.md#dependency-facts); polygraphy's ``CreateConfig(fp16=True)``
depends on them; a strongly typed network takes each layer's precision from the ONNX graph's dtypes
instead, which works on TensorRT 10 and 11 alike. Shapes are static: one optimization profile with
min = opt = max. A timing cache per GPU and TensorRT version makes rebuilds fast; a progress monitor logs
the builder's phases, since a build takes minutes.

The build plan (``make_build_plan``) is pure and tested on CPU; only ``build_engine`` imports tensorrt.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from engines.cache import CacheKey
from engines.exceptions import EngineLoadError
from engines.io_buffers import specs_from_onnx
from engines.specs import PartId, Precision, TensorSpec
from engines.tensorrt_runtime import TrtEngine, import_tensorrt, require_cuda

if TYPE_CHECKING:
    from engines.compile import Compiler

logger = logging.getLogger(__name__)

PLAN_FILE = "engine.plan"
FP32_INPUTS = frozenset({"timestep"})  # stays fp32 in every precision (the timestep embedding runs in fp32)


@dataclass(frozen=True)
class ProfileShape:
    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclass(frozen=True)
class TrtBuildPlan:
    """Everything a build needs, derived from the ONNX file alone."""

    onnx_path: Path
    precision: Precision
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    profiles: tuple[ProfileShape, ...]  # one profile, static: min = opt = max
    strongly_typed: bool = True  # the only way on TensorRT 11; no FP16/BF16 flags
    builder_optimization_level: int = 3
    timing_cache: Path | None = None


def make_build_plan(onnx_path: Path, precision: Precision, *, builder_optimization_level: int = 3,
                    timing_cache: Path | None = None) -> TrtBuildPlan:
    """The plan for ``onnx_path``; checks that its float tensors carry ``precision`` (a strongly typed
    network builds in the dtypes the graph has, so a mismatch would silently build the wrong precision)."""
    inputs, outputs = specs_from_onnx(onnx_path)
    want = {Precision.FP32: "float32", Precision.FP16: "float16", Precision.BF16: "bfloat16"}[Precision(precision)]
    wrong = [t.describe() for t in (*inputs, *outputs)
             if t.dtype != want and not (t.name in FP32_INPUTS and t.dtype == "float32")]
    if wrong:
        raise ValueError(f"{onnx_path} is not a {want} graph: {wrong}")
    profiles = tuple(ProfileShape(t.name, t.shape, t.shape, t.shape) for t in inputs)
    return TrtBuildPlan(Path(onnx_path), Precision(precision), inputs, outputs, profiles, True,
                        builder_optimization_level, timing_cache)


def gpu_identity(device: torch.device) -> tuple[str, str]:
    """(GPU name, compute capability "major.minor") of ``device``."""
    props = torch.cuda.get_device_properties(device)
    return props.name, f"{props.major}.{props.minor}"


def timing_cache_path(root: Path, gpu_name: str, capability: str, trt_version: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name).strip("-").lower()
    return root / "timing" / f"{slug}-sm{capability.replace('.', '')}-trt{trt_version}.cache"


def _progress_monitor(trt: Any) -> Any:
    """A trt.IProgressMonitor that logs each top-level phase and every 10% of its steps."""

    class BuildProgress(trt.IProgressMonitor):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.started = time.perf_counter()
            self.steps: dict[str, int] = {}
            self.top: set[str] = set()

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            self.steps[phase_name] = num_steps
            if parent_phase is None:
                self.top.add(phase_name)
                logger.info("TensorRT build [%5.0f s] %s (%d steps)", self._elapsed(), phase_name, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            total = self.steps.get(phase_name, 0)
            if phase_name in self.top and total >= 10 and (step + 1) % max(1, total // 10) == 0:
                logger.info("TensorRT build [%5.0f s] %s: %d/%d", self._elapsed(), phase_name, step + 1, total)
            return True  # never cancel

        def phase_finish(self, phase_name: str) -> None:
            if phase_name in self.top:
                logger.info("TensorRT build [%5.0f s] %s done", self._elapsed(), phase_name)

        def _elapsed(self) -> float:
            return time.perf_counter() - self.started

    return BuildProgress()


def build_engine(plan: TrtBuildPlan, out_path: Path) -> None:
    """Builds and writes a serialized engine (needs tensorrt and a GPU)."""
    trt = import_tensorrt()
    from polygraphy.backend.trt import CreateConfig, NetworkFromOnnxPath, Profile, engine_bytes_from_network

    profile = Profile()
    for p in plan.profiles:
        profile.add(p.name, min=p.min, opt=p.opt, max=p.max)
    monitor = _progress_monitor(trt)  # must outlive the build
    timing = plan.timing_cache
    if timing is not None:
        timing.parent.mkdir(parents=True, exist_ok=True)
    config = CreateConfig(profiles=[profile], builder_optimization_level=plan.builder_optimization_level,
                          load_timing_cache=str(timing) if timing is not None and timing.is_file() else None,
                          progress_monitor=monitor)
    network = NetworkFromOnnxPath(str(plan.onnx_path), strongly_typed=plan.strongly_typed)
    started = time.perf_counter()
    logger.info("building a %s TensorRT %s engine from %s (this takes minutes; timing cache %s)",
                plan.precision.value, trt.__version__, plan.onnx_path.parent.name, timing)
    serialized = engine_bytes_from_network(network, config=config,
                                           save_timing_cache=str(timing) if timing is not None else None)
    if not serialized:
        raise RuntimeError(f"TensorRT returned no engine for {plan.onnx_path}")
    out_path.write_bytes(bytes(serialized))
    logger.info("built %s in %.0f s (%.1f MB)", out_path, time.perf_counter() - started,
                out_path.stat().st_size / 1e6)


def load_or_build(compiler: Compiler, component: PartId, onnx_path: Path) -> tuple[Path, TrtEngine]:
    """The cached engine of ``component`` (built when missing, stale or corrupt), loaded on the GPU. Its key
    identifies the part as the ONNX graph's key does (a ControlNet by its weights, not its index)."""
    trt = import_tensorrt()
    device = compiler.backend.geometry.device
    require_cuda(device)
    gpu_name, capability = gpu_identity(device)
    options = compiler.options
    precision = compiler.spec.precision
    onnx_key = compiler.onnx_key(component, precision)
    key = CacheKey(kind="tensorrt", model_digest=onnx_key.model_digest, component=onnx_key.component,
                   shapes=onnx_key.shapes, precision=precision.value, opset=options.opset,
                   trt_version=trt.__version__, gpu_name=gpu_name, compute_capability=capability,
                   builder_optimization_level=options.builder_optimization_level)
    plan = make_build_plan(onnx_path, precision, builder_optimization_level=options.builder_optimization_level,
                           timing_cache=timing_cache_path(options.cache_dir, gpu_name, capability, trt.__version__))

    def build(directory: Path) -> None:
        started = time.perf_counter()
        build_engine(plan, directory / PLAN_FILE)
        compiler.add_time(f"build_{component.value}", started)

    entry = compiler.cache.get_or_build(key, build, what="TensorRT engine")
    expected = (plan.inputs, plan.outputs)
    try:
        engine = TrtEngine(entry / PLAN_FILE, device, cuda_graph=options.cuda_graph, expected_io=expected)
    except (EngineLoadError, ValueError) as exc:  # refused plan or io mismatch: never use it, rebuild once
        compiler.cache.invalidate(key, str(exc))
        entry = compiler.cache.build(key, build)
        engine = TrtEngine(entry / PLAN_FILE, device, cuda_graph=options.cuda_graph, expected_io=expected)
    return entry / PLAN_FILE, engine
