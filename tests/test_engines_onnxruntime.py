"""The stream engine on the onnxruntime backend against the torch backend: same frames out, with several
streams, warm-up (fewer rows than built), more streams than built (chunks), prompts of different lengths and
ControlNets (their own parts, summed into the one transformer's residual inputs). Each part runs the rows a call
has: one stream on parts built for four runs one stream's rows, as on parts built for one."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import SanaSprintPipeline, SanaTransformer2DModel
from torch import Tensor

from engines import BackendName
from engines.base import ControlBatch
from engines.compile import CompileOptions, compile_backend
from engines.compiled_backend import CompiledBackend
from engines.prompt_kv import KVBatch, batch_prompt_kv
from engines.specs import BuildSpec, Component, ControlNetPart
from engines.torch_backend import TorchBackend
from stream import FrameKind, StreamConfig, StreamEngine
from stream.control import ControlNetConfig
from stream.demo_extras import CONTROLNET_DIR, demo_controlnet
from tests.support import camera_frame, mean_abs_diff

SHORT, LONG = "a cat", "a watercolor painting of a city street at night with neon lighting and a dragon"
CONFIG = {"width": 64, "height": 64, "t_list": (1.2, 0.6), "prompt": SHORT, "seed": 3}


@pytest.fixture(scope="module")
def engine_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "engine-cache"


@pytest.fixture(scope="module")
def engines(demo_model_dir: Path, engine_cache: Path) -> tuple[StreamEngine, StreamEngine]:
    options = CompileOptions(streams=2, cache_dir=engine_cache)  # built for 2 streams: batch 4, frames 2
    compiled = StreamEngine.from_pretrained(demo_model_dir, StreamConfig(backend="onnxruntime", **CONFIG),
                                            compile_options=options)
    eager = StreamEngine.from_pretrained(demo_model_dir, StreamConfig(**CONFIG))
    return compiled, eager



def run_both(engines, frames: dict[str, np.ndarray]) -> dict[str, tuple]:
    a, b = (e.process(frames) for e in engines)
    return {sid: (a[sid], b[sid]) for sid in frames}


def test_backend_is_compiled_onnxruntime(engines):
    compiled, _ = engines
    assert isinstance(compiled.backend, CompiledBackend) and compiled.backend.name == "onnxruntime"
    assert compiled.backend.parts[Component.TRANSFORMER].buffers.batch == 4


def test_one_stream_on_parts_built_for_four_runs_its_own_rows_and_equals_parts_built_for_one(
        demo_model_dir: Path, engine_cache: Path):
    """Issue 27: the sessions see one stream's batch (1 row, then 2 once the pipe holds two frames), never the 8
    rows the transformer was built for, and the frames equal those of parts built for one stream."""
    built = {streams: StreamEngine.from_pretrained(demo_model_dir, StreamConfig(backend="onnxruntime", **CONFIG),
                                                   compile_options=CompileOptions(streams=streams,
                                                                                  cache_dir=engine_cache))
             for streams in (4, 1)}
    four = built[4].backend.parts
    assert four[Component.TRANSFORMER].buffers.batch == 8 and four[Component.DECODER].buffers.batch == 4
    for k in range(4):
        ours, alone = (built[n].process({"default": camera_frame(k)})["default"] for n in (4, 1))
        assert ours.kind is alone.kind and np.array_equal(ours.image, alone.image), k
    for engine in built.values():
        parts = engine.backend.parts
        assert parts[Component.TRANSFORMER].runs == {1: 1, 2: 3}  # the warm-up call, then both slots
        assert parts[Component.ENCODER].runs == {1: 4} and parts[Component.DECODER].runs == {1: 3}
    # what ONNX Runtime itself computed: outputs of one stream's rows
    velocity = four[Component.TRANSFORMER].binding(2).get_outputs()[0]
    images = four[Component.DECODER].binding(1).get_outputs()[0]
    assert velocity.shape() == [2, 32, 2, 2] and images.shape() == [1, 3, 64, 64]


def test_rows_are_the_streams_filled_slots_plus_their_negative_passes(demo_model_dir: Path, engine_cache: Path):
    """cfg ``onetime`` (one negative row per stream) on parts built for 2 streams (at most (2 + 1) x 2 rows): a
    stream warming up runs 1 slot + 1 negative, a full one 2 + 1, and a second stream joins with its own warm-up;
    every call runs exactly those rows and matches eager torch."""
    config = {**CONFIG, "cfg_type": "onetime", "cfg_scale": 1.5}
    compiled = StreamEngine.from_pretrained(demo_model_dir, StreamConfig(backend="onnxruntime", **config),
                                            compile_options=CompileOptions(streams=2, cache_dir=engine_cache))
    eager = StreamEngine.from_pretrained(demo_model_dir, StreamConfig(**config))
    assert compiled.backend.parts[Component.TRANSFORMER].buffers.batch == 6
    for k in range(4):
        if k == 2:
            for engine in (compiled, eager):
                engine.add_stream("b", prompt=LONG, seed=5)
        frames = {"default": camera_frame(k), **({"b": camera_frame(k + 9)} if k >= 2 else {})}
        for sid, (ours, theirs) in run_both((compiled, eager), frames).items():
            assert ours.kind is theirs.kind and mean_abs_diff(ours.image, theirs.image) <= 1.0, (k, sid)
    assert compiled.backend.parts[Component.TRANSFORMER].runs == {2: 1, 3: 1, 5: 1, 6: 1}
    assert compiled.backend.parts[Component.ENCODER].runs == {1: 2, 2: 2}


def test_parts_refuse_a_row_count_outside_their_range(engines):
    part = engines[0].backend.parts[Component.ENCODER]
    for rows in (0, 3, 1.0):
        with pytest.raises(ValueError, match=r"rows must be an integer in \[1, 2\]"):
            part.execute(rows)


def test_streams_warmup_and_prompts_of_different_lengths_match_torch(engines):
    compiled = engines[0]
    for engine in engines:
        engine.add_stream("long", prompt=LONG, seed=9)
    assert compiled.backend.prompt_kv(compiled.prompt_encoder.encode(LONG)).length > \
        compiled.backend.prompt_kv(compiled.prompt_encoder.encode(SHORT)).length
    # the default stream fills its pipe alone (batch 1, then 2 of 4), then a third stream joins mid-way
    kinds = []
    for k in range(6):
        frames = {"default": camera_frame(k), "long": camera_frame(k + 7)}
        if k == 3:
            for engine in engines:
                engine.add_stream("late", prompt="an oil painting", seed=1)
        if k >= 3:
            frames["late"] = camera_frame(k + 2)  # 3 streams on an engine built for 2: chunks of 4 rows
        for sid, (ours, theirs) in run_both(engines, frames).items():
            assert ours.kind is theirs.kind and ours.tag == theirs.tag
            kinds.append(ours.kind)
            assert mean_abs_diff(ours.image, theirs.image) <= 1.0, (k, sid)
    assert FrameKind.WARMUP in kinds and FrameKind.GENERATED in kinds


def test_prompt_change_refills_kv(engines):
    for engine in engines:
        engine.set_prompt("neon cyberpunk city", stream="default")
    for k in range(3):
        for ours, theirs in run_both(engines, {"default": camera_frame(20 + k)}).values():
            assert mean_abs_diff(ours.image, theirs.image) <= 1.0


def test_buffers_keep_their_addresses(engines):
    compiled, _ = engines
    buffers = compiled.backend.parts[Component.TRANSFORMER].buffers
    before = buffers.addresses()
    compiled.process({"default": camera_frame(30)})
    assert buffers.addresses() == before


def test_more_rows_than_built_run_in_chunks_noted_once(engines, caplog):
    """On a CPU, chunks cost what a batch costs (serve builds CPU parts for one stream): noted, not warned."""
    compiled, _ = engines
    backend = compiled.backend
    backend._warned_chunks.clear()
    import torch

    images = torch.zeros(5, 3, 64, 64)
    with caplog.at_level(logging.INFO, logger="engines.compiled_backend"):
        latents = backend.encode(images)
        backend.encode(images)
    assert latents.shape[0] == 5
    notes = [r for r in caplog.records if "running it in 3 calls" in r.message]
    assert len(notes) == 1 and notes[0].levelno == logging.INFO and "on a CPU" in notes[0].message


def test_cpu_sessions_do_not_spin_between_ops(engines):
    """Spinning pool threads would take every idle cycle from the server's event loop and encoders."""
    compiled, _ = engines
    for engine in compiled.backend.parts.values():
        options = engine.session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_onnxruntime_on_cuda_without_its_provider_is_an_error():
    import onnxruntime as ort
    import torch

    from engines.exceptions import BackendUnavailableError
    from engines.onnxruntime_backend import providers_for

    assert providers_for(torch.device("cpu")) == ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    with pytest.raises(BackendUnavailableError, match="CUDAExecutionProvider"):
        providers_for(torch.device("cuda"))


def test_unknown_backend_is_rejected_naming_the_field():
    with pytest.raises(ValueError, match="backend must be one of torch, onnxruntime, tensorrt, torch-compile"):
        StreamConfig(backend="tvm")


def test_shorter_kv_length_matches_torch_and_refuses_longer_prompts(demo_model_dir: Path, engine_cache: Path):
    options = CompileOptions(streams=2, cache_dir=engine_cache, kv_length=16)
    compiled = StreamEngine.from_pretrained(demo_model_dir, StreamConfig(backend="onnxruntime", **CONFIG),
                                            compile_options=options)
    eager = StreamEngine.from_pretrained(demo_model_dir, StreamConfig(**CONFIG))
    assert eager.backend.prompt_kv(eager.prompt_encoder.encode(LONG)).length > 16
    for k in range(3):
        ours, theirs = (e.process({"default": camera_frame(40 + k)})["default"] for e in (compiled, eager))
        assert ours.kind is theirs.kind and mean_abs_diff(ours.image, theirs.image) <= 1.0
    with pytest.raises(ValueError, match="built for at most 16"):
        compiled.set_prompt(LONG)
    assert compiled.settings().prompt == SHORT  # the old prompt stays


# ---- ControlNets ------------------------------------------------------------------------------------------


def test_controlnet_matches_torch_and_scale_zero_equals_the_engine_without_it(demo_model_dir: Path,
                                                                              engine_cache: Path):
    """The model's trained-like ControlNet on onnxruntime against torch; scale 0 then gives exactly the frames of
    an engine without ControlNets, which runs the same transformer engine (one cache entry)."""
    options = CompileOptions(streams=2, cache_dir=engine_cache)
    nets = (ControlNetConfig(str(demo_model_dir / CONTROLNET_DIR), "canny", 1.0),)
    plain = StreamEngine.from_pretrained(demo_model_dir, StreamConfig(backend="onnxruntime", **CONFIG),
                                         compile_options=options)
    controlled = StreamEngine.from_pretrained(demo_model_dir, StreamConfig(backend="onnxruntime", controlnets=nets,
                                                                           **CONFIG), compile_options=options)
    eager = StreamEngine.from_pretrained(demo_model_dir, StreamConfig(controlnets=nets, **CONFIG))
    parts = controlled.backend.parts
    assert set(parts) == {*Component, ControlNetPart(0)}
    assert parts[Component.TRANSFORMER].path == plain.backend.parts[Component.TRANSFORMER].path
    for k in range(3):
        frame = {"default": camera_frame(k)}
        ours, theirs, off = (e.process(frame)["default"] for e in (controlled, eager, plain))
        assert ours.kind is theirs.kind and mean_abs_diff(ours.image, theirs.image) <= 1.0, k
        if ours.kind is FrameKind.GENERATED:
            assert mean_abs_diff(ours.image, off.image) > 1.0, k  # the net acts
    controlled.update(control_scales=(0.0,))
    for k in range(3, 6):  # from call 4 on, both steps of the frame ran at scale 0
        frame = {"default": camera_frame(k)}
        ours, off = (e.process(frame)["default"] for e in (controlled, plain))
        assert k == 3 or np.array_equal(ours.image, off.image), k


@pytest.fixture(scope="module")
def deep_backends(demo_model_dir: Path, engine_cache: Path) -> tuple[TorchBackend, CompiledBackend]:
    """A three-block transformer (two residual inputs) with two trained-like ControlNets: one of three blocks
    (its third residual is never used, as in diffusers) and one of a single block (it leaves ``control_1`` zero).
    The autoencoder parts come from the shared cache."""
    pipe = SanaSprintPipeline.from_pretrained(demo_model_dir)
    torch.manual_seed(7)
    transformer = SanaTransformer2DModel.from_config({**pipe.transformer.config, "num_layers": 3})
    nets = [demo_controlnet(transformer, num_layers=3, seed=8), demo_controlnet(transformer, num_layers=1, seed=9)]
    eager = TorchBackend(transformer, pipe.vae, controlnets=nets)
    build = BuildSpec(width=64, height=64, steps=2, streams=2, kv_length=16)
    compiled = compile_backend(eager, build, CompileOptions(cache_dir=engine_cache), BackendName.ONNXRUNTIME).backend
    return eager, compiled


def relative_error(ours: Tensor, theirs: Tensor) -> float:
    return float((ours - theirs).abs().max() / theirs.abs().max())


def velocity_inputs(eager: TorchBackend, rows: int) -> tuple[Tensor, Tensor, Tensor, KVBatch, tuple[Tensor, ...]]:
    """x_in, flow time, guidance, K/V of two prompts of different lengths, one control latent per net."""
    generator = torch.Generator().manual_seed(3)
    caption = eager.transformer.config.caption_channels
    prompts = [eager.prompt_kv(torch.randn(length, caption, generator=generator)) for length in (7, 4)]
    kv = batch_prompt_kv([prompts[i % 2] for i in range(rows)], eager.geometry.cross_attention_heads)
    x = torch.randn(rows, 32, 2, 2, generator=generator)
    timestep = torch.rand(rows, generator=generator) * 0.9 + 0.05
    guidance = torch.full((rows,), 0.45)
    conds = tuple(torch.randn(rows, 32, 2, 2, generator=generator) for _ in eager.controlnets)
    return x, timestep, guidance, kv, conds


def test_controlnets_on_the_compiled_backend_match_torch(deep_backends):
    eager, compiled = deep_backends
    x, timestep, guidance, kv, conds = velocity_inputs(eager, rows=6)  # two chunks of the engines' 4 rows
    ones, zeros = torch.ones(6), torch.zeros(6)
    mixed = torch.tensor([1.0, 0.0, 0.5, 2.0, 0.0, 1.0])  # per batch item, some rows off
    # both nets; then only the one-block net (control_1 must be zero again); then rows off; then no control
    for scales in ((ones, 0.5 * ones), (zeros, ones), (mixed, zeros), None):
        control = None if scales is None else ControlBatch(conds, scales)
        ours = compiled.velocity(x, timestep, guidance, kv, control)
        theirs = eager.velocity(x, timestep, guidance, kv, control)
        assert relative_error(ours, theirs) < 1e-3, scales
    plain = compiled.velocity(x, timestep, guidance, kv)
    controlled = compiled.velocity(x, timestep, guidance, kv, ControlBatch(conds, (ones, ones)))
    off = compiled.velocity(x, timestep, guidance, kv, ControlBatch(conds, (zeros, zeros)))
    assert torch.equal(off, plain) and relative_error(controlled, plain) > 0.01


def test_compiled_backend_validates_the_control_batch(deep_backends):
    _, compiled = deep_backends
    x, timestep, guidance, kv, conds = velocity_inputs(deep_backends[0], rows=2)
    ones = torch.ones(2)
    with pytest.raises(ValueError, match="control has 1 entries .* for 2 ControlNets"):
        compiled.velocity(x, timestep, guidance, kv, ControlBatch(conds[:1], (ones,)))
    with pytest.raises(ValueError, match=r"control.conds\[1\] has shape \(2, 32, 4, 4\), x_in \(2, 32, 2, 2\)"):
        compiled.velocity(x, timestep, guidance, kv, ControlBatch((conds[0], torch.zeros(2, 32, 4, 4)), (ones, ones)))
    with pytest.raises(ValueError, match=r"control.scales\[0\] has shape \(3,\)"):
        compiled.velocity(x, timestep, guidance, kv, ControlBatch(conds, (torch.ones(3), ones)))
