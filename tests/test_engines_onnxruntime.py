"""The stream engine on the onnxruntime backend against the torch backend: same frames out, with several
streams, warm-up (batch padding), more streams than built (chunks) and prompts of different lengths."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from engines.compile import CompileOptions
from engines.compiled_backend import CompiledBackend
from engines.specs import Component
from stream import FrameKind, StreamConfig, StreamEngine
from tests.conftest import camera_frame

SHORT, LONG = "a cat", "a watercolor painting of a city street at night with neon lighting and a dragon"
CONFIG = {"width": 64, "height": 64, "t_list": (1.2, 0.6), "prompt": SHORT, "seed": 3}


@pytest.fixture(scope="module")
def engine_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "engine-cache"


@pytest.fixture(scope="module")
def engines(tiny_model_dir: Path, engine_cache: Path) -> tuple[StreamEngine, StreamEngine]:
    options = CompileOptions(streams=2, cache_dir=engine_cache)  # built for 2 streams: batch 4, frames 2
    compiled = StreamEngine.from_pretrained(tiny_model_dir, StreamConfig(backend="onnxruntime", **CONFIG),
                                            compile_options=options)
    eager = StreamEngine.from_pretrained(tiny_model_dir, StreamConfig(**CONFIG))
    return compiled, eager


def level_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def run_both(engines, frames: dict[str, np.ndarray]) -> dict[str, tuple]:
    a, b = (e.process(frames) for e in engines)
    return {sid: (a[sid], b[sid]) for sid in frames}


def test_backend_is_compiled_onnxruntime(engines):
    compiled, _ = engines
    assert isinstance(compiled.backend, CompiledBackend) and compiled.backend.name == "onnxruntime"
    assert compiled.backend.engines[Component.TRANSFORMER].buffers.batch == 4


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
            assert level_diff(ours.image, theirs.image) <= 1.0, (k, sid)
    assert FrameKind.WARMUP in kinds and FrameKind.GENERATED in kinds


def test_prompt_change_refills_kv(engines):
    for engine in engines:
        engine.set_prompt("neon cyberpunk city", stream="default")
    for k in range(3):
        for ours, theirs in run_both(engines, {"default": camera_frame(20 + k)}).values():
            assert level_diff(ours.image, theirs.image) <= 1.0


def test_buffers_keep_their_addresses(engines):
    compiled, _ = engines
    buffers = compiled.backend.engines[Component.TRANSFORMER].buffers
    before = buffers.addresses()
    compiled.process({"default": camera_frame(30)})
    assert buffers.addresses() == before


def test_more_rows_than_built_warns_once(engines, caplog):
    compiled, _ = engines
    backend = compiled.backend
    backend._warned_chunks.clear()
    import torch

    images = torch.zeros(5, 3, 64, 64)
    with caplog.at_level(logging.WARNING, logger="engines.compiled_backend"):
        latents = backend.encode(images)
        backend.encode(images)
    assert latents.shape[0] == 5
    assert sum("running it in 3 calls" in r.message for r in caplog.records) == 1


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
    with pytest.raises(ValueError, match="backend must be one of torch, onnxruntime, tensorrt"):
        StreamConfig(backend="tvm")


def test_shorter_kv_length_matches_torch_and_refuses_longer_prompts(tiny_model_dir: Path, engine_cache: Path):
    options = CompileOptions(streams=2, cache_dir=engine_cache, kv_length=16)
    compiled = StreamEngine.from_pretrained(tiny_model_dir, StreamConfig(backend="onnxruntime", **CONFIG),
                                            compile_options=options)
    eager = StreamEngine.from_pretrained(tiny_model_dir, StreamConfig(**CONFIG))
    assert eager.backend.prompt_kv(eager.prompt_encoder.encode(LONG)).length > 16
    for k in range(3):
        ours, theirs = (e.process({"default": camera_frame(40 + k)})["default"] for e in (compiled, eager))
        assert ours.kind is theirs.kind and level_diff(ours.image, theirs.image) <= 1.0
    with pytest.raises(ValueError, match="built for at most 16"):
        compiled.set_prompt(LONG)
    assert compiled.settings().prompt == SHORT  # the old prompt stays
