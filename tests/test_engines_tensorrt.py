"""TensorRT: the build plan, the runtime's buffer bookkeeping, the timing-cache save, the GPU probe and the
parity reference's precision on CPU; building and running engines where a GPU and tensorrt are present
(``-m gpu``, in tests/test_engines_tensorrt_gpu.py)."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from engines import BackendName
from engines.compile import CompileOptions, Compiler
from engines.io_buffers import IOBuffers, specs_from_onnx
from engines.specs import BatchRange, BuildSpec, Component, ControlNetPart, Precision, TensorSpec
from engines.tensorrt_build import make_build_plan, timing_cache_path
from engines.tensorrt_runtime import check_engine_io, engine_io
from stream import StreamConfig, StreamEngine
from stream.control import ControlNetConfig
from stream.demo_extras import CONTROLNET_DIR

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

BUILD = BuildSpec(width=64, height=64, steps=2, streams=2, kv_length=300)  # as test_engines_export
BATCH = BatchRange(1, 2, 4)  # the transformer's: any batch up to 2 steps x 2 streams, tuned for one stream


@pytest.fixture(scope="module")
def compiler(demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Compiler:
    backend = StreamEngine.from_pretrained(demo_model_dir, StreamConfig(width=64, height=64)).backend
    return Compiler(backend, BUILD, CompileOptions(cache_dir=tmp_path_factory.getbasetemp() / "engine-cache"),
                    BackendName.TENSORRT)


@pytest.fixture(scope="module")
def controlled_compiler(demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Compiler:
    nets = (ControlNetConfig(str(demo_model_dir / CONTROLNET_DIR)),)
    backend = StreamEngine.from_pretrained(demo_model_dir, StreamConfig(width=64, height=64, controlnets=nets)).backend
    return Compiler(backend, BUILD, CompileOptions(cache_dir=tmp_path_factory.getbasetemp() / "engine-cache"),
                    BackendName.TENSORRT)


@pytest.fixture(scope="module")
def transformer_onnx(compiler: Compiler) -> Path:
    return compiler.onnx(Component.TRANSFORMER, Precision.FP32)


def assert_batch_profile(plan, spec) -> None:
    """One profile: the batch from 1 over one stream's rows (opt) to the maximum, every other dimension static."""
    assert [p.name for p in plan.profiles] == [t.name for t in spec.inputs]
    for p in plan.profiles:
        shape = spec.input(p.name).shape
        assert (p.min, p.opt, p.max) == ((1, *shape[1:]), (2, *shape[1:]), shape), p


def test_build_plan_has_a_dynamic_batch_and_is_strongly_typed(transformer_onnx: Path, compiler: Compiler):
    spec = compiler.part(Component.TRANSFORMER, Precision.FP32)
    assert spec.batch_range == BATCH
    plan = make_build_plan(transformer_onnx, Precision.FP32, spec.batch_range, builder_optimization_level=3,
                           timing_cache=Path("/cache/timing/x.cache"))
    assert plan.strongly_typed and plan.precision is Precision.FP32 and plan.builder_optimization_level == 3
    assert plan.inputs == spec.inputs and plan.outputs == spec.outputs and plan.batch == BATCH
    assert_batch_profile(plan, spec)
    for component in (Component.ENCODER, Component.DECODER):  # one frame per stream, tuned for one
        assert compiler.part(component, Precision.FP32).batch_range == BatchRange(1, 1, 2)


def test_controlnet_build_plan_has_a_dynamic_batch_and_keeps_timestep_fp32(controlled_compiler: Compiler):
    part = ControlNetPart(0)
    spec = controlled_compiler.part(part, Precision.FP32)
    plan = make_build_plan(controlled_compiler.onnx(part, Precision.FP32), Precision.FP32, spec.batch_range)
    assert plan.inputs == spec.inputs and plan.outputs == spec.outputs
    assert_batch_profile(plan, spec)
    bf16 = controlled_compiler.part(part, Precision.BF16)
    assert bf16.input("timestep").dtype == "float32"
    assert {t.dtype for t in (*bf16.inputs, *bf16.outputs) if t.name != "timestep"} == {"bfloat16"}


def test_build_plan_refuses_a_graph_of_another_precision(transformer_onnx: Path):
    with pytest.raises(ValueError, match="is not a float16 graph"):
        make_build_plan(transformer_onnx, Precision.FP16, BATCH)


def test_low_precision_plan_keeps_timestep_fp32(compiler: Compiler, tmp_path: Path):
    from engines.export import export_onnx

    spec = compiler.part(Component.DECODER, Precision.FP16)
    path = export_onnx(compiler.modules[Component.DECODER], spec, tmp_path)
    plan = make_build_plan(path, Precision.FP16, spec.batch_range)
    assert {t.dtype for t in (*plan.inputs, *plan.outputs)} == {"float16"}
    t_spec = compiler.part(Component.TRANSFORMER, Precision.BF16)
    assert t_spec.input("timestep").dtype == "float32" and t_spec.input("hidden_states").dtype == "bfloat16"


def test_timing_cache_is_per_gpu_and_version():
    a = timing_cache_path(Path("/c"), "NVIDIA H100 80GB HBM3", "9.0", "10.13.0")
    assert a == Path("/c/timing/nvidia-h100-80gb-hbm3-sm90-trt10.13.0.cache")
    assert a != timing_cache_path(Path("/c"), "NVIDIA GeForce RTX 4090", "8.9", "10.13.0")
    assert a != timing_cache_path(Path("/c"), "NVIDIA H100 80GB HBM3", "9.0", "11.4.0")


def test_buffers_follow_the_onnx_io(transformer_onnx: Path):
    inputs, outputs = specs_from_onnx(transformer_onnx, batch=4)
    buffers = IOBuffers(inputs, outputs, torch.device("cpu"))
    assert buffers.batch == 4
    for t in (*inputs, *outputs):
        assert tuple(buffers.tensors[t.name].shape) == t.shape and buffers.tensors[t.name].dtype == t.torch_dtype
    addresses = buffers.addresses()
    assert len(set(addresses.values())) == len(addresses)  # one buffer each
    rows = buffers.write("hidden_states", torch.ones(3, *inputs[0].shape[1:]))
    assert rows == 3 and buffers.addresses() == addresses
    assert buffers.tensors["hidden_states"][:3].eq(1).all() and buffers.tensors["hidden_states"][3].eq(0).all()
    out = buffers.read("velocity", 2)
    assert out.shape[0] == 2 and out.data_ptr() != addresses["velocity"]  # a copy, safe past the next run


def test_buffers_validate_what_is_written(transformer_onnx: Path):
    buffers = IOBuffers(*specs_from_onnx(transformer_onnx, batch=4), torch.device("cpu"))
    hidden = buffers.tensors["hidden_states"]
    with pytest.raises(ValueError, match="holds 4 rows"):
        buffers.write("hidden_states", torch.zeros(5, *hidden.shape[1:]))
    with pytest.raises(ValueError, match="takes"):
        buffers.write("hidden_states", torch.zeros(2, 3, 3, 3))
    with pytest.raises(KeyError, match="no input named 'velocity'"):
        buffers.write("velocity", torch.zeros(1))
    with pytest.raises(KeyError, match="missing"):
        buffers.write_all({"hidden_states": torch.zeros(1, *hidden.shape[1:])})
    buffers.write("timestep", torch.tensor([0.5, 0.25], dtype=torch.float64))  # dtype cast on copy
    assert buffers.tensors["timestep"].dtype == torch.float32 and buffers.tensors["timestep"][1] == 0.25


class FakeTrt:
    """The few names of the tensorrt module that ``engine_io`` reads."""

    float32, float16, bfloat16, int32, int64, bool = "f32", "f16", "bf16", "i32", "i64", "b"
    TensorIOMode = SimpleNamespace(INPUT="in", OUTPUT="out")


class FakeEngine:
    """An ICudaEngine's io queries (num_io_tensors, get_tensor_*) over specs, outputs listed first: the batch
    reads -1, as TensorRT reports a dynamic dimension, and the inputs' profile spans ``batch``."""

    def __init__(self, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...], batch: BatchRange) -> None:
        kinds = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}
        self.tensors = [(t, "out") for t in outputs] + [(t, "in") for t in inputs]
        self.kinds, self.batch = kinds, batch
        self.num_io_tensors = len(self.tensors)

    def get_tensor_name(self, i: int) -> str:
        return self.tensors[i][0].name

    def _find(self, name: str) -> tuple[TensorSpec, str]:
        return next(x for x in self.tensors if x[0].name == name)

    def get_tensor_dtype(self, name: str) -> str:
        return self.kinds[self._find(name)[0].dtype]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return (-1, *self._find(name)[0].shape[1:])

    def get_tensor_profile_shape(self, name: str, profile: int) -> list[tuple[int, ...]]:
        t, mode = self._find(name)
        assert mode == "in" and profile == 0
        return [t.with_batch(rows).shape for rows in (self.batch.min, self.batch.opt, self.batch.max)]

    def get_tensor_mode(self, name: str) -> str:
        return self._find(name)[1]


def test_engine_io_is_checked_against_the_onnx_graph(transformer_onnx: Path):
    onnx_io = (*specs_from_onnx(transformer_onnx, batch=4), BATCH)
    io = engine_io(FakeEngine(*onnx_io), FakeTrt)
    assert io[2] == BATCH and {t.shape[0] for t in (*io[0], *io[1])} == {4}  # the outputs' -1 reads the maximum
    check_engine_io(io, onnx_io)  # same tensors, another order
    wrong = (tuple(TensorSpec(t.name, (4, *t.shape[1:-1], t.shape[-1] + 1), t.dtype) for t in onnx_io[0]),
             onnx_io[1], BATCH)
    with pytest.raises(ValueError, match="differ from the ONNX graph"):
        check_engine_io(engine_io(FakeEngine(*wrong), FakeTrt), onnx_io)
    static = engine_io(FakeEngine(onnx_io[0], onnx_io[1], BatchRange(4, 4, 4)), FakeTrt)  # an engine of before
    with pytest.raises(ValueError, match="engine batch batch=4/4/4 differs from the build's batch=1/2/4"):
        check_engine_io(static, onnx_io)


@pytest.mark.cpu
def test_tensorrt_backend_without_a_gpu_is_an_error_not_a_fallback(demo_model_dir: Path, tmp_path: Path):
    from engines.exceptions import BackendUnavailableError

    with pytest.raises(BackendUnavailableError, match="tensorrt"):
        StreamEngine.from_pretrained(demo_model_dir, StreamConfig(width=64, height=64, backend="tensorrt"),
                                     compile_options=CompileOptions(cache_dir=tmp_path))




# ---- defect fixes that a CPU can check --------------------------------------------------------------------

TRT_DEPRECATION = "Context managers for TensorRT types are deprecated"


def tensorrt_enter():
    """TensorRT's own ``__enter__`` of its objects when the bindings import here, else the same behaviour."""
    try:
        import tensorrt
    except ImportError:  # the bindings need NVIDIA's libraries, which pip cannot fetch on this machine
        def enter(this):
            warnings.warn(TRT_DEPRECATION + ". Memory will be freed automatically when the reference count "
                          "reaches 0.", DeprecationWarning)
            return this
        return enter
    return tensorrt.common_enter


class HostMemory:
    """A stand-in for TensorRT's IHostMemory: a buffer whose ``with`` use warns as TensorRT 10/11 do."""

    __enter__ = tensorrt_enter()

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __exit__(self, *exc: object) -> None:
        pass

    def __bytes__(self) -> bytes:  # IHostMemory offers the buffer protocol, which bytes() reads alike
        return self.data


class TimingCache:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def serialize(self) -> HostMemory:
        return HostMemory(self.data)


class BuilderConfig:
    def __init__(self, cache: TimingCache | None) -> None:
        self.cache = cache

    def get_timing_cache(self) -> TimingCache | None:
        return self.cache


def test_timing_cache_is_saved_without_the_deprecated_context_manager(tmp_path: Path):
    """Defect 1: under the suite's ``filterwarnings = error``, polygraphy's ``with timing_cache.serialize()`` fails
    every build; our save writes the same bytes without entering it."""
    with pytest.raises(DeprecationWarning, match=TRT_DEPRECATION):  # what polygraphy's save runs into
        with TimingCache(b"x").serialize():
            pass
    from engines.tensorrt_build import save_timing_cache

    path = tmp_path / "timing" / "h100-sm90-trt11.cache"
    assert save_timing_cache(BuilderConfig(TimingCache(b"tactics v1")), path)
    assert save_timing_cache(BuilderConfig(TimingCache(b"tactics v2")), path)  # replaces it whole
    assert path.read_bytes() == b"tactics v2" and [p.name for p in path.parent.iterdir()] == [path.name]
    assert not save_timing_cache(BuilderConfig(None), tmp_path / "none.cache")


def test_polygraphy_floor_has_the_progress_monitor():
    """Defect 5: 0.49.0 lacks ``CreateConfig(progress_monitor=...)``, which every build passes."""
    from polygraphy.backend.trt import CreateConfig

    extras = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    onnx_extra = extras["project"]["optional-dependencies"]["onnx"]
    assert "polygraphy>=0.49.26" in onnx_extra
    monitor = object()
    assert CreateConfig(progress_monitor=monitor, tf32=False).progress_monitor is monitor  # 0.49.0: TypeError


def test_tf32_is_for_low_precision_engines_only(compiler: Compiler, transformer_onnx: Path, tmp_path: Path):
    """Defect 8: TF32 stays off unless asked for, and never touches an fp32 engine."""
    from engines.export import export_onnx

    assert not make_build_plan(transformer_onnx, Precision.FP32, BATCH, tf32=True).tf32
    decoder = compiler.part(Component.DECODER, Precision.FP16)
    fp16 = export_onnx(compiler.modules[Component.DECODER], decoder, tmp_path)
    assert make_build_plan(fp16, Precision.FP16, decoder.batch_range, tf32=True).tf32
    assert not make_build_plan(fp16, Precision.FP16, decoder.batch_range).tf32


def test_parity_reference_runs_without_tf32_and_restores_the_flags():
    """Defect 3: the torch reference of a parity check runs in true fp32, and the process's flags come back."""
    from engines.parity import true_fp32

    backends = torch.backends
    before = (backends.cuda.matmul.allow_tf32, backends.cudnn.allow_tf32)
    backends.cudnn.allow_tf32 = True
    try:
        with pytest.raises(RuntimeError, match="inside"):
            with true_fp32():
                assert not backends.cuda.matmul.allow_tf32 and not backends.cudnn.allow_tf32
                raise RuntimeError("inside")
        assert backends.cudnn.allow_tf32
    finally:
        backends.cuda.matmul.allow_tf32, backends.cudnn.allow_tf32 = before


@pytest.mark.cpu
def test_gpu_probe_names_the_cause_on_this_machine():
    """Defect 4: without a usable CUDA GPU the probe says why (here: a CPU-only torch, or no tensorrt), at once."""
    from engines.exceptions import BackendUnavailableError
    from engines.gpu_probe import cuda_problem, probe_tensorrt

    problem = cuda_problem()
    assert problem is not None and ("CPU-only" in problem or "cannot start CUDA" in problem)
    with pytest.raises(BackendUnavailableError) as caught:
        probe_tensorrt("cuda")
    assert caught.value.backend == "tensorrt" and caught.value.hint


def test_driver_and_cuda_major_hints():
    from engines.gpu_probe import driver_hint, tensorrt_cuda_major

    assert "580.65.06" in driver_hint("13.0") and "525.60.13" in driver_hint("12.8")
    assert "nvidia-smi" in driver_hint(None)
    assert tensorrt_cuda_major(["numpy", "tensorrt", "tensorrt-cu13", "tensorrt_cu13_bindings"]) == 13
    assert tensorrt_cuda_major(["tensorrt_cu12_libs"]) == 12 and tensorrt_cuda_major(["torch"]) is None


def test_build_errors_carry_the_cause_and_what_to_do():
    """Defect 6: polygraphy's failures become an EngineBuildError (an EngineError) with a hint."""
    from engines.exceptions import EngineBuildError, EngineError
    from engines.tensorrt_build import _build_hint

    error = EngineBuildError(Path("/c/transformer/model.onnx"), "Invalid Engine", _build_hint("Invalid Engine"))
    assert isinstance(error, EngineError)
    assert "could not build an engine from /c/transformer/model.onnx: Invalid Engine" in str(error)
    assert "out of memory" in str(error)
    assert "cannot parse" in _build_hint("Failed to parse ONNX model")
