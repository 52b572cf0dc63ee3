"""TensorRT on a GPU (``-m gpu``; skipped without tensorrt and a CUDA GPU): the tiny model's engines against
eager torch, that every part replays a CUDA graph per batch size (each equal to an eager run of that size), that
one stream on parts built for two runs one stream's rows, that a second start builds nothing, a threaded FramePipeline
while prompts change, two streams on one engine, a ControlNet on its own engine, and the CUDA stream rules.

The engines are built once per session into one cache at builder optimization level 0 (the fastest build;
correctness does not depend on the level), so that ``make gpu-check`` fits its time budget; under
``$SANA_STREAM_CACHE/gpu-tests`` when that is set (gpu-check sets it), so its reruns build nothing.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.cache import CACHE_ENV, cache_root
from engines.compile import CompileOptions, compile_backend
from engines.specs import BuildSpec, Component, ControlNetPart
from stream import StreamConfig, StreamEngine
from stream.control import ControlNetConfig
from stream.pipeline import FramePipeline
from stream.demo_extras import CONTROLNET_DIR
from tests.support import camera_frame, mean_abs_diff

pytestmark = pytest.mark.gpu

PROMPT_B = "a watercolor painting of a city street at night"


def limit(precision: str) -> float:
    """Mean difference in 8-bit levels allowed between an engine's frames and eager torch's."""
    return 1.0 if precision == "fp32" else 4.0


@pytest.fixture(scope="session")
def trt_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("tensorrt")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    if os.environ.get(CACHE_ENV):  # make gpu-check sets it: a rerun reuses every engine built before
        return cache_root() / "gpu-tests"
    return tmp_path_factory.getbasetemp() / "trt-cache"


def settings(precision: str, **extra) -> dict:
    return {"width": 64, "height": 64, "t_list": (1.2, 0.6), "prompt": "a cat", "seed": 3, "device": "cuda",
            "dtype": "float32" if precision == "fp32" else "bfloat16", **extra}


def options(cache: Path, precision: str, **extra) -> CompileOptions:
    return CompileOptions(streams=2, precision=precision, cache_dir=cache, builder_optimization_level=0, **extra)


def tensorrt_engine(model: Path, cache: Path, precision: str, **extra) -> StreamEngine:
    return StreamEngine.from_pretrained(model, StreamConfig(backend="tensorrt", **settings(precision, **extra)),
                                        compile_options=options(cache, precision))


def assert_graphs_replayed(engine: StreamEngine) -> None:
    """Every part was warmed up once per batch size and captured at load (one graph per size), and every later
    call replayed the graph of its size."""
    for part, trt_engine in engine.backend.parts.items():
        sizes = list(range(1, trt_engine.buffers.batch + 1))
        assert sorted(trt_engine.graphs) == sizes, (part, trt_engine.graph_errors)
        assert trt_engine.eager_runs == len(sizes), (part, trt_engine.eager_runs)
        assert trt_engine.replays == sum(trt_engine.runs.values()) > 0, (part, trt_engine.runs)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_tensorrt_engine_matches_torch_replays_graphs_and_reloads_without_building(demo_model_dir: Path,
                                                                                  trt_cache: Path, precision):
    compiled = StreamEngine.from_pretrained(
        demo_model_dir, StreamConfig(backend="tensorrt", **settings(precision)),
        compile_options=options(trt_cache, precision, check=True))
    eager = StreamEngine.from_pretrained(demo_model_dir, StreamConfig(**settings(precision)))
    for engine in (compiled, eager):
        engine.add_stream("b", prompt=PROMPT_B, seed=4)
    for k in range(5):
        frames = {"default": camera_frame(k), "b": camera_frame(k + 5)}
        ours, theirs = compiled.process(frames), eager.process(frames)
        for sid in frames:
            assert mean_abs_diff(ours[sid].image, theirs[sid].image) <= limit(precision), (k, sid)
    assert_graphs_replayed(compiled)
    # a second start with the same settings: everything from the cache, no build step timed
    spec = BuildSpec(width=64, height=64, steps=2, streams=2, kv_length=300)
    again = compile_backend(eager.backend, spec, options(trt_cache, precision), "tensorrt")
    assert not [step for step in again.seconds if step.startswith("build_")], again.seconds
    assert {p: e.path for p, e in again.backend.parts.items()} == {
        p: e.path for p, e in compiled.backend.parts.items()}


def test_threaded_pipeline_on_tensorrt_matches_eager_torch_while_prompts_change(demo_model_dir: Path,
                                                                               trt_cache: Path):
    """Both pipelines run their three threads at once on one GPU; the prompt changes from this thread (as the
    server's HTTP thread does) between frames."""
    compiled = tensorrt_engine(demo_model_dir, trt_cache, "fp32")
    eager = StreamEngine.from_pretrained(demo_model_dir, StreamConfig(**settings("fp32")))
    prompts = {3: PROMPT_B, 6: "an oil painting of a dog", 8: "a cat"}
    with FramePipeline(compiled) as ours, FramePipeline(eager) as theirs:
        for pipe in (ours, theirs):
            pipe.open_stream("cam")
        for k in range(10):
            if k in prompts:
                for pipe in (ours, theirs):
                    pipe.engine.update("cam", prompt=prompts[k])
            for pipe in (ours, theirs):
                pipe.submit("cam", camera_frame(k), k)
            a, b = (pipe.wait_for_output("cam", after=k - 1, timeout=30) for pipe in (ours, theirs))
            assert a is not None and b is not None and a.kind is b.kind, k
            assert mean_abs_diff(a.image, b.image) <= limit("fp32"), k
        assert ours.thread_errors() == theirs.thread_errors() and ours.stats("cam").errors == 0
    assert_graphs_replayed(compiled)


def test_two_streams_on_one_engine_stay_isolated(demo_model_dir: Path, trt_cache: Path):
    """Streams sharing each model call get what each would get alone in eager torch."""
    compiled = tensorrt_engine(demo_model_dir, trt_cache, "fp32")
    alone = {sid: StreamEngine.from_pretrained(demo_model_dir, StreamConfig(**settings("fp32", prompt=p, seed=s)))
             for sid, p, s in (("a", "a cat", 11), ("b", PROMPT_B, 12))}
    compiled.add_stream("a", prompt="a cat", seed=11)
    compiled.add_stream("b", prompt=PROMPT_B, seed=12)
    for k in range(4):
        frames = {"a": camera_frame(k), "b": camera_frame(20 + k)}
        together = compiled.process(frames)
        for sid, engine in alone.items():
            own = engine.process({"default": frames[sid]})["default"]
            assert mean_abs_diff(together[sid].image, own.image) <= limit("fp32"), (k, sid)
        if k >= 1:  # from the first finished frame on, the two streams' outputs differ
            assert mean_abs_diff(together["a"].image, together["b"].image) > limit("fp32")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_tensorrt_controlnet_matches_torch(demo_model_dir: Path, trt_cache: Path, precision):
    """The trained-like ControlNet on its own engine, summed into the transformer's residual inputs; scale 0 then
    gives the frames of a TensorRT engine without ControlNets, which shares the transformer engine."""
    nets = (ControlNetConfig(str(demo_model_dir / CONTROLNET_DIR), "canny", 1.0),)
    compiled = tensorrt_engine(demo_model_dir, trt_cache, precision, controlnets=nets)
    plain = tensorrt_engine(demo_model_dir, trt_cache, precision)
    eager = StreamEngine.from_pretrained(demo_model_dir, StreamConfig(controlnets=nets, **settings(precision)))
    assert set(compiled.backend.parts) == {*Component, ControlNetPart(0)}
    assert compiled.backend.parts[Component.TRANSFORMER].path == plain.backend.parts[Component.TRANSFORMER].path
    for k in range(4):
        frame = {"default": camera_frame(k)}
        ours, theirs = compiled.process(frame)["default"], eager.process(frame)["default"]
        plain.process(frame)
        assert mean_abs_diff(ours.image, theirs.image) <= limit(precision), k
    assert_graphs_replayed(compiled)
    compiled.update(control_scales=(0.0,))
    for k in range(4, 7):  # from the second call on, both steps of the frame ran at scale 0
        frame = {"default": camera_frame(k)}
        ours, off = compiled.process(frame)["default"], plain.process(frame)["default"]
        assert k == 4 or np.array_equal(ours.image, off.image), k


def test_failed_capture_restores_the_callers_stream(trt_cache: Path):
    """A capture that fails (here: a synchronisation, illegal while capturing) leaves the thread on the stream it
    was on, and an exception rather than a half-captured graph."""
    from engines.tensorrt_runtime import capture_graph

    side = torch.cuda.Stream()
    before = torch.cuda.current_stream()
    x = torch.ones(4, device="cuda")

    def illegal(_: int) -> None:
        x.mul_(2)
        torch.cuda.synchronize()

    with pytest.raises(RuntimeError):
        capture_graph(illegal, side)
    assert torch.cuda.current_stream() == before

    def raises(_: int) -> None:
        raise ValueError("enqueue failed")

    with pytest.raises(ValueError, match="enqueue failed"):  # the capture itself ends cleanly here
        capture_graph(raises, torch.cuda.Stream())
    assert torch.cuda.current_stream() == before
    graph = capture_graph(lambda _: x.add_(1), torch.cuda.Stream())  # capturing works again
    graph.replay()
    torch.cuda.synchronize()
    assert torch.cuda.current_stream() == before


def test_capture_in_thread_local_mode_ignores_other_threads(trt_cache: Path):
    """While one thread captures, another allocates and copies on the GPU (what the pipeline's threads do)."""
    from engines.tensorrt_runtime import capture_graph

    stop, errors = threading.Event(), []

    def busy() -> None:
        try:
            while not stop.is_set():
                torch.ones(1 << 16, device="cuda").cpu()
        except RuntimeError as exc:  # reported below
            errors.append(exc)

    worker = threading.Thread(target=busy)
    worker.start()
    try:
        y = torch.zeros(8, device="cuda")
        for _ in range(20):
            capture_graph(lambda _: y.add_(1), torch.cuda.Stream())
    finally:
        stop.set()
        worker.join()
    assert errors == []


def test_probe_resolves_the_device(trt_cache: Path):
    from engines.gpu_probe import probe_tensorrt

    assert probe_tensorrt("cuda") == torch.device("cuda", torch.cuda.current_device())


def test_a_part_on_the_second_gpu_runs_there(demo_model_dir: Path, trt_cache: Path):
    """Defect 7: everything of a part on cuda:1 runs on cuda:1 while the thread's current device is cuda:0."""
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    torch.cuda.set_device(0)
    compiled = StreamEngine.from_pretrained(
        demo_model_dir, StreamConfig(backend="tensorrt", **settings("fp32", device="cuda:1")),
        compile_options=options(trt_cache, "fp32"))
    eager = StreamEngine.from_pretrained(demo_model_dir, StreamConfig(**settings("fp32", device="cuda:1")))
    for k in range(3):
        frame = {"default": camera_frame(k)}
        assert mean_abs_diff(compiled.process(frame)["default"].image, eager.process(frame)["default"].image) <= 1.0
    assert all(e.device == torch.device("cuda", 1) for e in compiled.backend.parts.values())
    assert torch.cuda.current_device() == 0
    assert_graphs_replayed(compiled)


def test_each_batch_size_replays_its_own_graph_equal_to_an_eager_run(demo_model_dir: Path, trt_cache: Path):
    """The same plan loaded with and without CUDA graphs: at every batch size from 1 to the maximum, the graph's
    outputs equal an eager run's on the same inputs, and only the rows of that size are written."""
    from engines.tensorrt_runtime import TrtPart

    compiled = tensorrt_engine(demo_model_dir, trt_cache, "fp32")
    path = compiled.backend.parts[Component.TRANSFORMER].path
    graphed, eager = TrtPart(path, "cuda"), TrtPart(path, "cuda", cuda_graph=False)
    assert not eager.graphs and eager.eager_runs == eager.buffers.batch
    generator = torch.Generator(device="cuda").manual_seed(0)
    for rows in range(1, graphed.buffers.batch + 1):
        for part in (graphed, eager):
            part.buffers.tensors["velocity"].fill_(float("nan"))  # rows past the call's must stay untouched
        for t in graphed.buffers.inputs:
            value = torch.rand((rows, *t.shape[1:]), generator=generator, device="cuda").to(t.torch_dtype)
            for part in (graphed, eager):
                part.buffers.write(t.name, value)
        for part in (graphed, eager):
            part.execute(rows)
        torch.cuda.synchronize()
        ours, theirs = graphed.buffers.tensors["velocity"], eager.buffers.tensors["velocity"]
        assert torch.equal(ours[:rows], theirs[:rows]) and not ours[:rows].isnan().any(), rows
        assert ours[rows:].isnan().all(), rows
    assert graphed.replays == graphed.buffers.batch and graphed.runs == eager.runs


def test_one_stream_on_parts_built_for_two_runs_its_own_rows(demo_model_dir: Path, trt_cache: Path):
    """Issue 27 on TensorRT: one stream on parts built for two streams runs one stream's rows (1, then its 2
    slots) and matches parts built for one."""
    built = {n: StreamEngine.from_pretrained(demo_model_dir, StreamConfig(backend="tensorrt", **settings("fp32")),
                                             compile_options=CompileOptions(streams=n, precision="fp32",
                                                                            cache_dir=trt_cache,
                                                                            builder_optimization_level=0))
             for n in (2, 1)}
    for k in range(4):
        ours, alone = (built[n].process({"default": camera_frame(k)})["default"] for n in (2, 1))
        assert ours.kind is alone.kind and mean_abs_diff(ours.image, alone.image) <= limit("fp32"), k
    parts = built[2].backend.parts
    assert parts[Component.TRANSFORMER].buffers.batch == 4
    assert parts[Component.TRANSFORMER].runs == {1: 1, 2: 3} and parts[Component.DECODER].runs == {1: 3}
    assert_graphs_replayed(built[2])


def test_one_logger_for_every_part_and_each_part_keeps_its_own_errors(demo_model_dir: Path, trt_cache: Path,
                                                                      tmp_path: Path):
    from engines.exceptions import EngineLoadError
    from engines.gpu_probe import import_tensorrt, process_logger
    from engines.tensorrt_runtime import TrtPart

    compiled = tensorrt_engine(demo_model_dir, trt_cache, "fp32")
    parts = list(compiled.backend.parts.values())
    assert {id(part._trt_logger) for part in parts} == {id(process_logger(import_tensorrt()))}
    damaged = tmp_path / "model.plan"
    damaged.write_bytes(b"not a TensorRT plan")
    with pytest.raises(EngineLoadError) as error:  # a later part: TensorRT's error reaches it, not the first part
        TrtPart(damaged, "cuda")
    assert "deserialize_cuda_engine returned None" in str(error.value)
    assert all(part.errors == [] for part in parts)
