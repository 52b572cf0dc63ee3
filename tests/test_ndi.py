"""NDI output (``camera --ndi NAME``, ``serve --ndi``) received by a real NDI receiver (cyndilib's, in its own
process) over loopback: NDI discovery is pointed at 127.0.0.1 with its configuration file, as on a machine
without multicast. Each test uses a source name of its own, so runs side by side never see each other's."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
import time
import uuid
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from bridge.bridge import Bridge, BridgeOptions
from bridge.errors import SinkError
from bridge.ndi_sink import NdiSink
from bridge.sources import VideoFileSource
from engines.install_hint import install_hint
from rtc.ice import include_loopback_candidates
from rtc.ndi import frame_rate, to_bgra
from sana_stream.cli import main
from server.app import ModelInfo, create_app
from server.settings import ServerSettings
from stream import StreamConfig, StreamEngine
from tests.support import ServerThread, eventually, wait_until
from tests.support.bridge import OLD, SIZE, TOKEN, bridge_app, write_clip
from tests.support.ndi import ReceiverProcess, arrival_rate, write_loopback_config

pytestmark = pytest.mark.slow
FPS = 15


@pytest.fixture(scope="module")
def ndi_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """NDI_CONFIG_DIR for this process (set before the NDI runtime first loads here) and the receiver's."""
    config = write_loopback_config(tmp_path_factory.mktemp("ndi-config"))
    before = os.environ.get("NDI_CONFIG_DIR")
    os.environ["NDI_CONFIG_DIR"] = str(config)
    yield {**os.environ, "NDI_CONFIG_DIR": str(config)}
    if before is None:
        os.environ.pop("NDI_CONFIG_DIR", None)
    else:
        os.environ["NDI_CONFIG_DIR"] = before


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4")


@pytest.fixture(scope="module")
def engine(demo_model_dir) -> StreamEngine:
    include_loopback_candidates()
    return StreamEngine.from_pretrained(demo_model_dir, StreamConfig(width=SIZE, height=SIZE, t_list=(1.0,),
                                                                     prompt=OLD[0], seed=OLD[1]))


def unique_name(what: str) -> str:
    return f"sana-test-{what}-{uuid.uuid4().hex[:8]}"


def camera(server: str, clip: Path, *options: str) -> list[str]:
    return ["camera", "--server", server, "--token", TOKEN, "--source", f"file:{clip}", "--loop", "--fps", str(FPS),
            "--no-stdin", *options]


def delivered(caplog: pytest.LogCaptureFixture) -> int:
    """The restyled frames the last `camera` run handed to its output (its closing log line)."""
    counts = re.findall(r"stopped after (\d+) restyled frames", caplog.text)
    assert counts, caplog.text
    return int(counts[-1])


def test_frame_rates_and_pixels_as_ndi_takes_them():
    assert frame_rate(15) == Fraction(15) and frame_rate(29.97) == Fraction(30000, 1001)
    with pytest.raises(ValueError, match="fps must lie in"):
        frame_rate(0)
    rgb = np.array([[[10, 20, 30], [40, 50, 60]]], np.uint8)
    assert to_bgra(rgb, None).tolist() == [[[30, 20, 10, 255], [60, 50, 40, 255]]]
    assert to_bgra(rgb, np.array([[0, 255]], np.uint8))[..., 3].tolist() == [[0, 255]]


def test_a_missing_ndi_runtime_is_one_clear_line(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "cyndilib", None)  # as where the ndi extra is not installed
    with pytest.raises(SinkError, match=r"NDI output is not available.*" + re.escape(install_hint("ndi"))):
        NdiSink("x").open(SIZE, SIZE, FPS)
    with caplog.at_level(logging.ERROR):
        assert main(["serve", "--ndi", "--port", "1"]) == 1  # before any model is loaded
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and install_hint("ndi") in errors[0].getMessage()


def test_camera_ndi_publishes_the_stream_with_a_transparent_keyed_background(engine, clip, ndi_env, tmp_path,
                                                                                caplog):
    name = unique_name("camera")
    receiver = ReceiverProcess(name, tmp_path / "received", ndi_env, idle=5.0)
    try:
        with ServerThread(bridge_app(engine)) as server, caplog.at_level(logging.INFO):
            assert main(camera(server.base, clip, "--keep-background", "key:#00ff00", "--ndi", name,
                               "--max-frames", "90")) == 0
        events = receiver.finish()
    finally:
        receiver.stop()
    found = next(e for e in events if e["event"] == "found")
    assert found["stream_name"] == name and found["source"].endswith(f"({name})")
    frames = [e for e in events if e["event"] == "frame"]
    sent = delivered(caplog)
    logging.getLogger(__name__).info("NDI from camera: %d of %d frames received, %.1f fps", len(frames), sent,
                                     arrival_rate(frames))
    assert len(frames) >= 20 and len(frames) >= sent // 2, (len(frames), sent)  # lenient: a loaded machine
    assert {(f["width"], f["height"], f["fps"], f["fourcc"]) for f in frames} == {(SIZE, SIZE, str(FPS), "RGBA")}
    last = receiver.last_frame()
    alpha = last[..., 3]
    # the source's key-green strip (columns 0-31) is transparent, the rest opaque (as in test_bridge.py)
    assert (alpha[:, 2:30] == 0).mean() > 0.95 and (alpha[:, 40:] == 255).mean() > 0.95
    green = last[:, 2:30, :3].reshape(-1, 3).mean(axis=0)
    assert green[1] > 200 and green[0] < 40 and green[2] < 40, green  # painted back in the key colour


def test_the_source_stays_up_across_reconnects_and_a_restarted_one_is_found_again(engine, clip, ndi_env, tmp_path,
                                                                                   caplog):
    name = unique_name("restart")
    receiver = ReceiverProcess(name, tmp_path / "received", ndi_env, idle=30.0)
    options = BridgeOptions(server="http://127.0.0.1:1", token=TOKEN, fps=FPS, stall_timeout=2.0,
                            backoff_initial=0.2, backoff_max=1.0)

    def frames_after(moment: float) -> int:
        return sum(f["time"] > moment for f in receiver.frames)

    async def across_a_server_restart(first: ServerThread) -> ServerThread:
        options.server = first.base
        bridge = Bridge(VideoFileSource(clip, loop=True), NdiSink(name), options)
        task = asyncio.create_task(bridge.run())
        await asyncio.to_thread(receiver.wait_for, lambda: len(receiver.frames) >= 5, 30, "frames")
        port = first.port
        await asyncio.to_thread(first.__exit__, None, None, None)
        await eventually(lambda: not bridge.connected.is_set(), 15, "the bridge noticing the server is gone")
        restarted = time.time()
        second = await asyncio.to_thread(lambda: ServerThread(bridge_app(engine), port=port).__enter__())
        await asyncio.to_thread(receiver.wait_for, lambda: frames_after(restarted) >= 5, 60,
                                "frames after the server restart")
        assert bridge.connections == 2 and not task.done()
        bridge.stop()
        await asyncio.wait_for(task, 10)
        return second

    try:
        with caplog.at_level(logging.INFO, logger="rtc.ndi"):
            second = asyncio.run(across_a_server_restart(ServerThread(bridge_app(engine)).__enter__()))
        try:
            assert caplog.text.count(f"publishing NDI source {name!r}") == 1  # one source, kept while reconnecting
            restarted = time.time()  # the bridge has stopped: its source has left the network
            assert main(camera(second.base, clip, "--ndi", name, "--max-frames", "45")) == 0
            receiver.wait_for(lambda: frames_after(restarted) >= 5, 60, "frames from the restarted sender")
        finally:
            second.__exit__(None, None, None)
    finally:
        receiver.stop()
    assert sum(e["event"] == "found" for e in receiver.events) == 1  # one receiver, reconnected by name


def test_serve_ndi_publishes_each_stream_as_a_source_named_after_it(engine, clip, ndi_env, tmp_path, caplog):
    stream = unique_name("serve")
    settings = ServerSettings(stream=engine.config, token=TOKEN, idle_timeout=5.0, ndi=True)
    app = create_app(settings, engine, ModelInfo("tiny", True, "torch"))
    receiver = ReceiverProcess(stream, tmp_path / "received", ndi_env, idle=5.0)
    try:
        with ServerThread(app) as server, caplog.at_level(logging.INFO):
            assert main(camera(server.base, clip, "--stream", stream, "--record", str(tmp_path / "frames"),
                               "--max-frames", "90")) == 0
            outputs = app.state.runtime["ndi"]
            wait_until(lambda: not app.state.peers().peers, 10, "the stream closing")
            assert list(outputs.senders) == [stream]  # its source lingers for a client that reconnects
        assert outputs.senders == {}  # the server stopped: every source is closed
        events = receiver.finish()
    finally:
        receiver.stop()
    found = next(e for e in events if e["event"] == "found")
    assert found["stream_name"] == stream
    frames = [e for e in events if e["event"] == "frame"]
    sent = delivered(caplog)
    logging.getLogger(__name__).info("NDI from serve: %d frames received (the bridge got %d), %.1f fps",
                                     len(frames), sent, arrival_rate(frames))
    assert len(frames) >= 20 and len(frames) >= sent // 2, (len(frames), sent)  # lenient: a loaded machine
    assert {(f["width"], f["height"], f["fps"]) for f in frames} == {(SIZE, SIZE, "30")}
    assert (receiver.last_frame()[..., 3] == 255).all()  # the server keys nothing: opaque
