"""The frame path without host syncs (``-m gpu``; skipped without a CUDA GPU): preparing and running a frame
never waits on the device; the one wait is ``finish`` reading the finished image (``engines.transfer``).

torch's sync debug mode raises on every synchronising CUDA call (stream/device/event synchronise, ``.item()``,
pageable and blocking copies), so a single one anywhere in ``prepare`` or ``run`` fails these tests. Each engine is
warmed up first: the first calls allocate, tune and capture, which is start-up, not the frame path."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.transfer import CudaTransfer
from stream import StreamConfig, StreamEngine
from stream.control import ControlNetConfig
from stream.demo_extras import CONTROLNET_DIR
from stream.image_tensors import to_tensor, to_uint8
from tests.support import camera_frame

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module", autouse=True)
def cuda() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")


@contextlib.contextmanager
def no_host_syncs() -> Iterator[None]:
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def frames_without_syncs(engine: StreamEngine, count: int = 4) -> list[np.ndarray]:
    """Runs ``count`` frames; prepare and run under the sync debug mode, finish (the one wait) outside it."""
    for k in range(3):  # warm-up
        engine(camera_frame(k, 64, 64))
    images = []
    for k in range(count):
        with no_host_syncs():
            prepared = engine.prepare("default", camera_frame(k, 64, 64))
            pending = engine.run([prepared])
        images.append(engine.finish(pending[0]).image)
    return images


def engine_on(demo_model_dir: Path, tmp_path: Path, backend: str, **config) -> StreamEngine:
    from engines.compile_options import CompileOptions

    settings = StreamConfig(width=64, height=64, t_list=(1.0,), device="cuda", dtype="bfloat16", backend=backend,
                            **config)
    options = None if backend == "torch" else CompileOptions(cache_dir=tmp_path / "cache", builder_optimization_level=0)
    return StreamEngine.from_pretrained(demo_model_dir, settings, compile_options=options)


@pytest.mark.parametrize("backend", ["torch", "torch-compile", "tensorrt"])
def test_prepare_and_run_never_wait_on_the_device(demo_model_dir: Path, tmp_path: Path, backend: str):
    if backend == "tensorrt":
        pytest.importorskip("tensorrt")
    net = ControlNetConfig(str(demo_model_dir / CONTROLNET_DIR), "canny", 0.7)
    engine = engine_on(demo_model_dir, tmp_path, backend, controlnets=(net,))
    reference = engine_on(demo_model_dir, tmp_path, "torch", controlnets=(net,))
    ours = frames_without_syncs(engine)
    theirs = [reference(camera_frame(k, 64, 64)) for k in range(4)]  # 1 step: each image depends on its frame only
    for a, b in zip(ours, theirs, strict=True):
        assert np.abs(a.astype(np.int16) - b.astype(np.int16)).mean() <= 4.0


def test_transfers_match_the_synchronous_conversions():
    transfer = CudaTransfer(torch.device("cuda"))
    frame = camera_frame(3, 64, 64)
    with no_host_syncs():
        uploaded = transfer.upload(frame)
        pending = transfer.download(uploaded[0] * 0.5)
    assert torch.equal(uploaded.cpu(), to_tensor(frame, torch.device("cpu")))
    assert np.array_equal(pending.result(), to_uint8(to_tensor(frame, torch.device("cpu")) * 0.5)[0])
