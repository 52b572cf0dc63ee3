"""TensorRT engine builds with polygraphy: strongly typed networks from fp16/bf16/fp32 ONNX.

TensorRT 11 has no FP16/BF16 builder flags (docs/design.md#dependency-facts); polygraphy's ``CreateConfig(fp16=True)``
depends on them; a strongly typed network takes each layer's precision from the ONNX graph's dtypes
instead, which works on TensorRT 10 and 11 alike. The batch is dynamic: one optimization profile with
min 1, opt one stream's rows and max the rows of all streams the part is built for (``engines.specs``); every other
dimension is static (min = opt = max). opt is one stream because one streamer on one GPU is the common case: TensorRT
picks its kernels for opt and runs every batch in the range with them. A timing cache per GPU and TensorRT version
makes rebuilds fast; a progress monitor logs the builder's phases, since a build takes minutes.

TF32 (docs/gpu.md, "Precision"): fp32 engines build without it, so they compare with torch's fp32; bf16 and
fp16 engines keep polygraphy's default (off) for their fp32 islands too, unless ``CompileOptions.tf32`` asks.

The timing cache is written by ``save_timing_cache``, not by polygraphy's ``save_timing_cache=``: polygraphy
enters ``timing_cache.serialize()`` as a context manager, which TensorRT 10/11 deprecate with a warning that
``filterwarnings = error`` turns into a failed build.

The build plan (``make_build_plan``) is pure and tested on CPU; only ``build_engine`` imports tensorrt.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engines.cache import CacheKey, PartCache
from engines.compile_options import CompileOptions
from engines.exceptions import EngineBuildError, EngineLoadError
from engines.gpu_probe import import_tensorrt, probe_tensorrt, process_logger, start_trt
from engines.io_buffers import specs_from_onnx
from engines.part_loader import ExportedPart, LoadedPart, PartLoader
from engines.specs import BatchRange, Precision, TensorSpec
from engines.tensorrt_runtime import TrtPart, require_cuda

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
    profiles: tuple[ProfileShape, ...]  # one profile: the batch from 1 to max, the other dimensions static
    batch: BatchRange
    strongly_typed: bool = True  # the only way on TensorRT 11; no FP16/BF16 flags
    builder_optimization_level: int = 3
    timing_cache: Path | None = None
    tf32: bool = False  # TF32 for the network's fp32 tensors (never for an fp32 engine)


def make_build_plan(onnx_path: Path, precision: Precision, batch: BatchRange, *, builder_optimization_level: int = 3,
                    timing_cache: Path | None = None, tf32: bool = False) -> TrtBuildPlan:
    """The plan for ``onnx_path`` taking ``batch`` rows; checks that its float tensors carry ``precision`` (a strongly
    typed network builds in the dtypes the graph has, so a mismatch would silently build the wrong precision)."""
    inputs, outputs = specs_from_onnx(onnx_path, batch=batch.max)
    want = {Precision.FP32: "float32", Precision.FP16: "float16", Precision.BF16: "bfloat16"}[Precision(precision)]
    wrong = [t.describe() for t in (*inputs, *outputs)
             if t.dtype != want and not (t.name in FP32_INPUTS and t.dtype == "float32")]
    if wrong:
        raise ValueError(f"{onnx_path} is not a {want} graph: {wrong}")
    profiles = tuple(ProfileShape(t.name, t.with_batch(batch.min).shape, t.with_batch(batch.opt).shape, t.shape)
                     for t in inputs)
    return TrtBuildPlan(Path(onnx_path), Precision(precision), inputs, outputs, profiles, batch, True,
                        builder_optimization_level, timing_cache, tf32 and Precision(precision) is not Precision.FP32)


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


def save_timing_cache(config: Any, path: Path) -> bool:
    """Writes the builder config's timing cache to ``path`` (atomically; the config loaded the old cache before
    the build, so it holds the old entries and the new ones). False when the config has no cache."""
    cache = config.get_timing_cache()
    if cache is None:
        return False
    data = cache.serialize()  # an IHostMemory; never entered as a context manager (deprecated in TensorRT 10/11)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_bytes(bytes(data))
    os.replace(partial, path)  # two builds at once: the last one's cache wins, neither file is torn
    return True


def _build_hint(reason: str) -> str:
    if "parse" in reason.lower():
        return "The ONNX graph holds something this TensorRT cannot parse; TensorRT's messages are in the log above"
    return ("TensorRT's messages are in the log above; \"could not find any implementation\" usually means the GPU "
            "ran out of memory during tactic timing: stop other GPU processes or build for fewer streams")


def create_builder(trt: Any, device: torch.device) -> Any:
    """A ``trt.Builder`` on ``device``, created once up front so that its failure names the cause instead of
    surfacing from inside polygraphy."""
    return start_trt(trt, "Builder", process_logger(trt), device)


def build_engine(plan: TrtBuildPlan, out_path: Path, device: torch.device) -> None:
    """Builds and writes a serialized engine on ``device`` (needs tensorrt and a GPU). polygraphy's failures
    (``PolygraphyException``) become EngineBuildError with the cause and what to do."""
    trt = import_tensorrt()
    from polygraphy.backend.trt import CreateConfig, Profile, engine_bytes_from_network, network_from_onnx_path
    from polygraphy.exception import PolygraphyException

    profile = Profile()
    for p in plan.profiles:
        profile.add(p.name, min=p.min, opt=p.opt, max=p.max)
    monitor = _progress_monitor(trt)  # must outlive the build
    timing = plan.timing_cache
    started = time.perf_counter()
    logger.info("building a %s TensorRT %s engine from %s on %s (this takes minutes; timing cache %s, TF32 %s)",
                plan.precision.value, trt.__version__, plan.onnx_path.parent.name, device, timing,
                "on" if plan.tf32 else "off")
    with torch.cuda.device(device):
        create_builder(trt, device)
        try:
            network = network_from_onnx_path(str(plan.onnx_path), strongly_typed=plan.strongly_typed)
            config = CreateConfig(profiles=[profile], builder_optimization_level=plan.builder_optimization_level,
                                  tf32=plan.tf32, progress_monitor=monitor,
                                  load_timing_cache=str(timing) if timing is not None and timing.is_file() else None,
                                  )(network[0], network[1])
            serialized = engine_bytes_from_network(network, config=config)
        except PolygraphyException as exc:
            raise EngineBuildError(plan.onnx_path, str(exc).strip(), _build_hint(str(exc))) from exc
        if timing is not None:
            save_timing_cache(config, timing)
    if not serialized:
        raise EngineBuildError(plan.onnx_path, "TensorRT returned no engine", _build_hint(""))
    out_path.write_bytes(bytes(serialized))
    logger.info("built %s in %.0f s (%.1f MB)", out_path, time.perf_counter() - started,
                out_path.stat().st_size / 1e6)


class TensorRTLoader(PartLoader):
    """Builds each part's plan into the cache (or finds it there) and loads it on the GPU. Made before any
    export, it fails at once, with the actual cause, where TensorRT or a GPU is missing."""

    def __init__(self, cache: PartCache, options: CompileOptions, device: torch.device) -> None:
        probe_tensorrt(device)
        self.cache, self.options = cache, options

    def load(self, exported: ExportedPart) -> LoadedPart:
        """The cached engine of ``exported`` (built when missing, stale or corrupt), loaded on the GPU. Its key
        identifies the part as the ONNX graph's key does (a ControlNet by its weights, not its index)."""
        trt = import_tensorrt()
        device = require_cuda(exported.device)  # cuda:N: the build, the context and its runs
        gpu_name, capability = gpu_identity(device)
        options = self.options
        precision = exported.precision
        onnx_key = exported.onnx_key
        key = CacheKey(kind="tensorrt", model_digest=onnx_key.model_digest, component=onnx_key.component,
                       shapes=f"{onnx_key.shapes};{exported.batch.describe()}", precision=precision.value,
                       opset=options.opset,
                       trt_version=trt.__version__, gpu_name=gpu_name, compute_capability=capability,
                       builder_optimization_level=options.builder_optimization_level,
                       tf32=options.tf32 and precision is not Precision.FP32)
        plan = make_build_plan(exported.onnx_path, precision, exported.batch,
                               builder_optimization_level=options.builder_optimization_level,
                               timing_cache=timing_cache_path(options.cache_dir, gpu_name, capability,
                                                              trt.__version__),
                               tf32=options.tf32)
        build_seconds = 0.0

        def build(directory: Path) -> None:
            nonlocal build_seconds
            started = time.perf_counter()
            build_engine(plan, directory / PLAN_FILE, device)
            build_seconds += time.perf_counter() - started

        entry = self.cache.get_or_build(key, build, what="TensorRT engine")
        expected = (plan.inputs, plan.outputs, plan.batch)
        try:
            engine = TrtPart(entry / PLAN_FILE, device, cuda_graph=options.cuda_graph, expected_io=expected)
        except (EngineLoadError, ValueError) as exc:  # refused plan, io or batch mismatch: never use it, rebuild once
            self.cache.invalidate(key, str(exc))
            entry = self.cache.build(key, build)
            engine = TrtPart(entry / PLAN_FILE, device, cuda_graph=options.cuda_graph, expected_io=expected)
        return LoadedPart(entry / PLAN_FILE, engine, build_seconds)
