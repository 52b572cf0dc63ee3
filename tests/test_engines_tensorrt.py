"""TensorRT: the build plan and the runtime's buffer bookkeeping on CPU (against the exported ONNX files);
building and running engines where a GPU and tensorrt are present (``-m gpu``)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from engines import BackendName
from engines.compile import CompileOptions, Compiler
from engines.io_buffers import IOBuffers, specs_from_onnx
from engines.specs import BuildSpec, Component, ControlNetPart, Precision, TensorSpec
from engines.tensorrt_build import make_build_plan, timing_cache_path
from engines.tensorrt_runtime import check_engine_io, engine_io
from stream import StreamConfig, StreamEngine
from stream.control import ControlNetConfig
from stream.tiny_codecs import CONTROLNET_DIR
from tests.support import camera_frame, mean_abs_diff

BUILD = BuildSpec(width=64, height=64, steps=2, streams=2, kv_length=300)  # as test_engines_export


@pytest.fixture(scope="module")
def compiler(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Compiler:
    backend = StreamEngine.from_pretrained(tiny_model_dir, StreamConfig(width=64, height=64)).backend
    return Compiler(backend, BUILD, CompileOptions(cache_dir=tmp_path_factory.getbasetemp() / "engine-cache"),
                    BackendName.TENSORRT)


@pytest.fixture(scope="module")
def controlled_compiler(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Compiler:
    nets = (ControlNetConfig(str(tiny_model_dir / CONTROLNET_DIR)),)
    backend = StreamEngine.from_pretrained(tiny_model_dir, StreamConfig(width=64, height=64, controlnets=nets)).backend
    return Compiler(backend, BUILD, CompileOptions(cache_dir=tmp_path_factory.getbasetemp() / "engine-cache"),
                    BackendName.TENSORRT)


@pytest.fixture(scope="module")
def transformer_onnx(compiler: Compiler) -> Path:
    return compiler.onnx(Component.TRANSFORMER, Precision.FP32)


def test_build_plan_is_static_and_strongly_typed(transformer_onnx: Path, compiler: Compiler):
    plan = make_build_plan(transformer_onnx, Precision.FP32, builder_optimization_level=3,
                           timing_cache=Path("/cache/timing/x.cache"))
    spec = compiler.part(Component.TRANSFORMER, Precision.FP32)
    assert plan.strongly_typed and plan.precision is Precision.FP32 and plan.builder_optimization_level == 3
    assert plan.inputs == spec.inputs and plan.outputs == spec.outputs
    assert [p.name for p in plan.profiles] == [t.name for t in spec.inputs]
    assert all(p.min == p.opt == p.max == spec.input(p.name).shape for p in plan.profiles)


def test_controlnet_build_plan_is_static_and_keeps_timestep_fp32(controlled_compiler: Compiler):
    part = ControlNetPart(0)
    plan = make_build_plan(controlled_compiler.onnx(part, Precision.FP32), Precision.FP32)
    spec = controlled_compiler.part(part, Precision.FP32)
    assert plan.inputs == spec.inputs and plan.outputs == spec.outputs
    assert all(p.min == p.opt == p.max == spec.input(p.name).shape for p in plan.profiles)
    bf16 = controlled_compiler.part(part, Precision.BF16)
    assert bf16.input("timestep").dtype == "float32"
    assert {t.dtype for t in (*bf16.inputs, *bf16.outputs) if t.name != "timestep"} == {"bfloat16"}


def test_build_plan_refuses_a_graph_of_another_precision(transformer_onnx: Path):
    with pytest.raises(ValueError, match="is not a float16 graph"):
        make_build_plan(transformer_onnx, Precision.FP16)


def test_low_precision_plan_keeps_timestep_fp32(compiler: Compiler, tmp_path: Path):
    from engines.export import export_onnx

    spec = compiler.part(Component.DECODER, Precision.FP16)
    path = export_onnx(compiler.modules[Component.DECODER], spec, tmp_path)
    plan = make_build_plan(path, Precision.FP16)
    assert {t.dtype for t in (*plan.inputs, *plan.outputs)} == {"float16"}
    t_spec = compiler.part(Component.TRANSFORMER, Precision.BF16)
    assert t_spec.input("timestep").dtype == "float32" and t_spec.input("hidden_states").dtype == "bfloat16"


def test_timing_cache_is_per_gpu_and_version():
    a = timing_cache_path(Path("/c"), "NVIDIA H100 80GB HBM3", "9.0", "10.13.0")
    assert a == Path("/c/timing/nvidia-h100-80gb-hbm3-sm90-trt10.13.0.cache")
    assert a != timing_cache_path(Path("/c"), "NVIDIA GeForce RTX 4090", "8.9", "10.13.0")
    assert a != timing_cache_path(Path("/c"), "NVIDIA H100 80GB HBM3", "9.0", "11.4.0")


def test_buffers_follow_the_onnx_io(transformer_onnx: Path):
    inputs, outputs = specs_from_onnx(transformer_onnx)
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
    buffers = IOBuffers(*specs_from_onnx(transformer_onnx), torch.device("cpu"))
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
    """An ICudaEngine's io queries (num_io_tensors, get_tensor_*) over specs, outputs listed first."""

    def __init__(self, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]) -> None:
        kinds = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}
        self.tensors = [(t, "out") for t in outputs] + [(t, "in") for t in inputs]
        self.kinds = kinds
        self.num_io_tensors = len(self.tensors)

    def get_tensor_name(self, i: int) -> str:
        return self.tensors[i][0].name

    def _find(self, name: str) -> tuple[TensorSpec, str]:
        return next(x for x in self.tensors if x[0].name == name)

    def get_tensor_dtype(self, name: str) -> str:
        return self.kinds[self._find(name)[0].dtype]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self._find(name)[0].shape

    def get_tensor_mode(self, name: str) -> str:
        return self._find(name)[1]


def test_engine_io_is_checked_against_the_onnx_graph(transformer_onnx: Path):
    onnx_io = specs_from_onnx(transformer_onnx)
    io = engine_io(FakeEngine(*onnx_io), FakeTrt)
    check_engine_io(io, onnx_io)  # same tensors, another order
    wrong = (tuple(TensorSpec(t.name, (8, *t.shape[1:]), t.dtype) for t in onnx_io[0]), onnx_io[1])
    with pytest.raises(ValueError, match="differ from the ONNX graph"):
        check_engine_io(engine_io(FakeEngine(*wrong), FakeTrt), onnx_io)


@pytest.mark.cpu
def test_tensorrt_backend_without_a_gpu_is_an_error_not_a_fallback(tiny_model_dir: Path, tmp_path: Path):
    from engines.exceptions import BackendUnavailableError

    with pytest.raises(BackendUnavailableError, match="tensorrt"):
        StreamEngine.from_pretrained(tiny_model_dir, StreamConfig(width=64, height=64, backend="tensorrt"),
                                     compile_options=CompileOptions(cache_dir=tmp_path))


# ---- on a GPU with tensorrt -----------------------------------------------------------------------------


def gpu_engine_settings(tmp_path_factory: pytest.TempPathFactory, precision: str) -> tuple[Path, dict]:
    """Skips without TensorRT or a CUDA GPU; else the shared engine cache and the stream settings of a GPU test."""
    pytest.importorskip("tensorrt")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    config = {"width": 64, "height": 64, "t_list": (1.2, 0.6), "prompt": "a cat", "seed": 3, "device": "cuda",
              "dtype": "float32" if precision == "fp32" else "bfloat16"}
    return tmp_path_factory.getbasetemp() / "trt-cache", config


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_tensorrt_engine_matches_torch(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, precision):
    cache, config = gpu_engine_settings(tmp_path_factory, precision)
    options = CompileOptions(streams=2, precision=precision, cache_dir=cache, check=True)
    compiled = StreamEngine.from_pretrained(tiny_model_dir, StreamConfig(backend="tensorrt", **config),
                                            compile_options=options)
    eager = StreamEngine.from_pretrained(tiny_model_dir, StreamConfig(**config))
    for engine in (compiled, eager):
        engine.add_stream("b", prompt="a watercolor painting of a city street at night", seed=4)
    limit = 1.0 if precision == "fp32" else 4.0
    for k in range(5):  # call 1 warms up, call 2 captures the CUDA graphs, later calls replay them
        frames = {"default": camera_frame(k), "b": camera_frame(k + 5)}
        ours, theirs = compiled.process(frames), eager.process(frames)
        for sid in frames:
            diff = mean_abs_diff(ours[sid].image, theirs[sid].image)
            assert diff <= limit, (k, sid, diff)
    # the same settings again: every engine comes from the cache
    again = StreamEngine.from_pretrained(tiny_model_dir, StreamConfig(backend="tensorrt", **config),
                                         compile_options=options)
    assert again.backend.name == "tensorrt"


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_tensorrt_controlnet_matches_torch(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, precision):
    """The trained-like ControlNet on its own engine, summed into the transformer's residual inputs; scale 0 then
    gives the frames of a TensorRT engine without ControlNets, which shares the transformer engine."""
    cache, config = gpu_engine_settings(tmp_path_factory, precision)
    nets = (ControlNetConfig(str(tiny_model_dir / CONTROLNET_DIR), "canny", 1.0),)
    options = CompileOptions(streams=2, precision=precision, cache_dir=cache, check=True)
    compiled = StreamEngine.from_pretrained(tiny_model_dir,
                                            StreamConfig(backend="tensorrt", controlnets=nets, **config),
                                            compile_options=options)
    plain = StreamEngine.from_pretrained(tiny_model_dir, StreamConfig(backend="tensorrt", **config),
                                         compile_options=options)
    eager = StreamEngine.from_pretrained(tiny_model_dir, StreamConfig(controlnets=nets, **config))
    assert set(compiled.backend.engines) == {*Component, ControlNetPart(0)}
    assert compiled.backend.engines[Component.TRANSFORMER].path == plain.backend.engines[Component.TRANSFORMER].path
    limit = 1.0 if precision == "fp32" else 4.0
    for k in range(4):  # call 1 warms up, call 2 captures the CUDA graphs, later calls replay them
        frame = {"default": camera_frame(k)}
        ours, theirs = compiled.process(frame)["default"], eager.process(frame)["default"]
        plain.process(frame)
        diff = mean_abs_diff(ours.image, theirs.image)
        assert diff <= limit, (k, diff)
    compiled.update(control_scales=(0.0,))
    for k in range(4, 7):  # from the second call on, both steps of the frame ran at scale 0
        frame = {"default": camera_frame(k)}
        ours, off = compiled.process(frame)["default"], plain.process(frame)["default"]
        assert k == 4 or np.array_equal(ours.image, off.image), k
