"""The camera bridge (``sana-stream camera``) against a real server over loopback: a video-file source, a
recording sink (pyvirtualcam's own backends cannot run here), live prompt changes, a server restart on the
same port, and the clear errors of the command."""

from __future__ import annotations

import asyncio
import io
import logging
import socket
import sys
import threading
import time
import types
from pathlib import Path
from typing import ClassVar

import av
import cv2
import httpx
import numpy as np
import pytest
import uvicorn

from bridge.background import ColorKey, parse_background
from bridge.bridge import Bridge, BridgeOptions, describe_rejection
from bridge.errors import SinkClosed, SinkError, SourceError
from bridge.prompts import parse_prompt_line, read_stdin, watch_file
from bridge.sinks import PreviewSink, RecordingSink, SinkWorker, VirtualCameraSink, virtual_camera_driver_hint
from bridge.sources import Region, ScreenSource, VideoFileSource, WindowSource, parse_source
from rtc.client import OfferRejected
from rtc.ice import include_loopback_candidates
from sana_stream.cli import main
from server.app import ModelInfo, create_app
from server.settings import ServerSettings
from stream import StreamConfig, StreamEngine

SIZE = 128
TOKEN = "bridge-test-token"
OLD, NEW = ("a watercolor painting", 0), ("neon cyberpunk city", 5)


def scene() -> np.ndarray:
    """The clip's picture: a gradient with a red square on a green key background at the left."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    frame = np.stack([x * 255 // SIZE, y * 255 // SIZE, np.full_like(x, 96)], axis=-1).astype(np.uint8)
    frame[:, :32] = (0, 255, 0)
    frame[40:90, 50:100] = (230, 40, 40)
    return frame


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1 s MPEG-4 clip of the same picture: the output for a given prompt is then one known image."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = SIZE, SIZE, "yuv420p"
        stream.bit_rate = 4_000_000
        for _ in range(30):
            for packet in stream.encode(av.VideoFrame.from_ndarray(scene(), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def make_engine(demo_model_dir):
    include_loopback_candidates()

    def make(prompt: str = OLD[0], seed: int = OLD[1]) -> StreamEngine:
        return StreamEngine.from_pretrained(
            demo_model_dir, StreamConfig(width=SIZE, height=SIZE, t_list=(1.0,), prompt=prompt, seed=seed))

    return make


class ServerThread:
    """A real server (uvicorn + the app + a tiny engine) on 127.0.0.1 in its own thread and event loop, so the
    bridge (and the command's own asyncio.run) can talk to it; it can be stopped and started again on the
    same port."""

    def __init__(self, make_engine, port: int = 0, token: str | None = TOKEN) -> None:
        config = StreamConfig(width=SIZE, height=SIZE, t_list=(1.0,), prompt=OLD[0])
        app = create_app(ServerSettings(stream=config, token=token, idle_timeout=5.0), make_engine(),
                         ModelInfo("tiny", True, "torch"))
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    @property
    def port(self) -> int:
        return self.server.servers[0].sockets[0].getsockname()[1]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(20)


def block_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Mean level difference of 16x16 block averages (what survives two lossy codecs)."""
    small = [cv2.resize(x, (16, 16), interpolation=cv2.INTER_AREA).astype(np.float32) for x in (a, b)]
    return float(np.abs(small[0] - small[1]).mean())


async def until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(0.05)


def first_frame(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


def test_frames_flow_prompt_changes_and_a_server_restart_is_survived(clip, make_engine):
    sink = RecordingSink(keep=16)
    options = BridgeOptions(server="http://127.0.0.1:1", token=TOKEN, fps=15, stall_timeout=2.0,
                            backoff_initial=0.2, backoff_max=1.0, key=parse_background("key:#00ff00"))
    seen: dict[str, object] = {}

    async def scenario(first: ServerThread) -> None:
        options.server = first.base
        bridge = Bridge(VideoFileSource(clip, loop=True), sink, options)
        task = asyncio.create_task(bridge.run())
        await until(lambda: sink.count >= 6 or task.done(), 30, "6 restyled frames")
        assert not task.done(), task.result()
        seen["before"] = sink.snapshot()[-1]

        state = await bridge.set_prompt(prompt=NEW[0], seed=NEW[1])
        assert state is not None and state["prompt"] == NEW[0] and state["seed"] == NEW[1]
        async with httpx.AsyncClient(base_url=first.base) as http:
            shown = (await http.get("/prompt", params={"stream": bridge.stream_id})).json()["streams"]
        assert shown[bridge.stream_id]["prompt"] == NEW[0]
        count = sink.count
        await until(lambda: sink.count >= count + 8, 20, "8 frames after the prompt change")
        seen["after"] = sink.snapshot()[-1]
        seen["alpha"] = sink.alphas[-1]
        seen["stream"] = bridge.stream_id

        # the server goes away and a new one comes up on the same port
        port = first.port
        await asyncio.to_thread(first.__exit__, None, None, None)
        await until(lambda: not bridge.connected.is_set(), 15, "the bridge noticing the server is gone")
        second = await asyncio.to_thread(lambda: ServerThread(make_engine, port=port).__enter__())
        try:
            count = sink.count
            await until(lambda: sink.count >= count + 6 or task.done(), 30, "frames after the restart")
            assert not task.done(), task.result()
            assert bridge.connections == 2 and bridge.stream_id == seen["stream"]  # same stream id asked for
            async with httpx.AsyncClient(base_url=second.base) as http:
                shown = (await http.get("/prompt", params={"stream": bridge.stream_id})).json()["streams"]
            assert shown[bridge.stream_id]["prompt"] == NEW[0]  # the bridge re-applied its settings
            seen["restarted"] = sink.snapshot()[-1]
            bridge.stop()
            await asyncio.wait_for(task, 10)
        finally:
            await asyncio.to_thread(second.__exit__, None, None, None)

    first = ServerThread(make_engine).__enter__()
    try:
        asyncio.run(scenario(first))
    finally:
        first.__exit__(None, None, None)

    source = first_frame(clip)
    old, new = make_engine(*OLD)(source), make_engine(*NEW)(source)
    assert block_diff(old, new) > 8  # the two prompts give clearly different pictures
    key = ColorKey((0, 255, 0))
    for name, expected, other in (("before", old, new), ("after", new, old), ("restarted", new, old)):
        frame = seen[name]
        assert frame.shape == (SIZE, SIZE, 3)
        body = (slice(None), slice(40, None))  # compare away from the keyed strip
        close, far = block_diff(frame[body], expected[body]), block_diff(frame[body], other[body])
        assert close < 3.5 and close < 0.5 * far, (name, close, far)
    # the keyed strip of the source is painted back in the key colour and transparent in the alpha plane
    after, alpha = seen["after"], seen["alpha"]
    assert alpha is not None and (alpha[:, 2:30] == 0).mean() > 0.95 and (alpha[:, 40:] == 255).mean() > 0.95
    assert np.all(after[alpha == 0] == key.color)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_is_one_clear_line_and_exit_1(clip, tmp_path, caplog):
    url = f"http://127.0.0.1:{closed_port()}"
    with caplog.at_level(logging.ERROR):
        code = main(["camera", "--server", url, "--source", f"file:{clip}", "--record", str(tmp_path), "--no-stdin"])
    assert code == 1
    assert f"cannot reach the server at {url}" in caplog.text


def test_missing_camera_is_a_clear_message_and_exit_1(tmp_path, caplog):
    with caplog.at_level(logging.ERROR):
        code = main(["camera", "--source", "camera:7", "--record", str(tmp_path), "--no-stdin"])
    assert code == 1
    assert "no camera 7" in caplog.text


def test_missing_video_file_and_bad_options(tmp_path, caplog):
    with caplog.at_level(logging.ERROR):
        assert main(["camera", "--source", f"file:{tmp_path / 'nope.mp4'}", "--record", str(tmp_path),
                     "--no-stdin"]) == 1
    assert "no video file at" in caplog.text
    for bad in (["--source", "webcam"], ["--source", "screen:1,2,3"], ["--fps", "0"], ["--preview", "--record", "x"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["camera", *bad])
        assert exit_info.value.code == 2
    with caplog.at_level(logging.ERROR):
        assert main(["camera", "--keep-background", "key:green-ish", "--no-stdin"]) == 2
    assert "#RRGGBB" in caplog.text


def test_the_command_records_frames_refuses_a_wrong_token_and_names_the_virtual_camera_driver(
        clip, make_engine, tmp_path, caplog, monkeypatch):
    with ServerThread(make_engine) as server:
        once = ["camera", "--server", server.base, "--source", f"file:{clip}", "--no-stdin"]
        common = [*once, "--loop"]
        out = tmp_path / "frames"
        assert main([*common, "--token", TOKEN, "--record", str(out), "--max-frames", "5", "--fps", "15"]) == 0
        written = sorted(out.glob("frame_*.png"))
        assert len(written) == 5 and cv2.imread(str(written[-1])).shape == (SIZE, SIZE, 3)

        with caplog.at_level(logging.INFO):  # without --loop the command ends with the file
            assert main([*once, "--token", TOKEN, "--record", str(tmp_path / "once")]) == 0
        assert "ended" in caplog.text

        with caplog.at_level(logging.ERROR):
            assert main([*common, "--token", "wrong-token-123", "--record", str(out)]) == 1
        assert "refused the token (HTTP 401)" in caplog.text

        with caplog.at_level(logging.ERROR):
            assert main([*common, "--token", TOKEN, "--record", str(out), "--strength", "2"]) == 1
        assert "refused the prompt settings" in caplog.text

        caplog.clear()
        with caplog.at_level(logging.ERROR):  # pyvirtualcam is installed here, but no driver is
            assert main([*common, "--token", TOKEN, "--virtual-camera"]) == 1
        assert virtual_camera_driver_hint() in caplog.text


def test_virtual_camera_messages_name_the_driver(monkeypatch):
    for platform, driver in (("linux", "v4l2loopback"), ("win32", "OBS Studio"), ("darwin", "OBS Studio")):
        assert driver in virtual_camera_driver_hint(platform)
    monkeypatch.setitem(sys.modules, "pyvirtualcam", None)  # not installed
    with pytest.raises(SinkError, match="pip install pyvirtualcam.*" + virtual_camera_driver_hint().split(":")[0]):
        VirtualCameraSink().open(SIZE, SIZE, 30)


def test_preview_without_gui_support_or_a_display_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "  GUI:                           NONE\n")
    with pytest.raises(SinkError, match="needs OpenCV with GUI support.*pip install opencv-python"):
        PreviewSink().open(SIZE, SIZE, 30)
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "  GUI:                           GTK3\n")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    with pytest.raises(SinkError, match="needs a display"):
        PreviewSink().open(SIZE, SIZE, 30)


def test_recording_sink_writes_transparent_background(tmp_path):
    sink = RecordingSink(tmp_path)
    sink.open(4, 2, 30)
    image = np.full((2, 4, 3), 100, np.uint8)
    alpha = np.array([[0, 255, 255, 255], [0, 0, 255, 255]], np.uint8)
    sink.send(image, alpha)
    png = cv2.imread(str(tmp_path / "frame_000001.png"), cv2.IMREAD_UNCHANGED)
    assert png.shape == (2, 4, 4) and np.array_equal(png[..., 3], alpha)


def test_color_key_marks_and_paints_the_background():
    key = parse_background("key:#00ff00", tolerance=60)
    frame = scene()
    mask = key.mask(frame)
    assert mask[:, :32].all() and not mask[:, 40:].any()
    out, alpha = key.apply(np.zeros((64, 64, 3), np.uint8), mask)  # a mask of another size is fitted
    assert (out[:, :16] == (0, 255, 0)).all() and (alpha[:, :16] == 0).all() and (alpha[:, 20:] == 255).all()
    wide = np.zeros((128, 256), bool)
    wide[:, :96] = True  # the left 96 of 256 columns; the server keeps the centre 128 of them
    _, alpha = key.apply(np.zeros((64, 64, 3), np.uint8), wide)
    assert (alpha[:, :15] == 0).all() and (alpha[:, 17:] == 255).all()
    assert parse_background("key:magenta").color == (255, 0, 255)
    with pytest.raises(ValueError):
        parse_background("alpha")


def test_source_specs():
    assert parse_source("camera:2").value == "2" and parse_source("camera").value == "0"
    assert parse_source("file:/tmp/a:b.mp4").value == "/tmp/a:b.mp4"
    assert parse_source("screen:10,20,300,200").region == Region(10, 20, 300, 200)
    assert parse_source("screen").region is None
    assert parse_source("window:VSeeFace").value == "VSeeFace"
    for bad in ("webcam", "file:", "screen:0,0,0,10", "window:"):
        with pytest.raises(ValueError):
            parse_source(bad)


def test_video_file_source_loops(clip):
    source = VideoFileSource(clip, loop=True)
    with source:
        frames = [source.read() for _ in range(45)]  # 30 in the file
    assert all(f is not None and f.shape == (SIZE, SIZE, 3) for f in frames)
    assert source.native_fps == pytest.approx(30)
    with VideoFileSource(clip) as once:
        count = 0
        while once.read() is not None:
            count += 1
    assert count == 30


class FakeShot:
    def __init__(self, region: dict) -> None:
        self.region = region
        bgra = np.zeros((region["height"], region["width"], 4), np.uint8)
        bgra[..., 0], bgra[..., 2] = 200, 10  # blue in BGRA
        self.array = bgra

    def __array__(self, dtype=None, copy=None):
        return self.array


class FakeMSS:
    """Stands in for ``mss.MSS()``: one 800x600 monitor; remembers what was grabbed."""

    grabbed: ClassVar[list[dict]] = []

    def __init__(self) -> None:
        screen = {"left": 0, "top": 0, "width": 800, "height": 600}
        self.monitors = [screen, screen]

    def grab(self, region: dict) -> FakeShot:
        self.grabbed.append(region)
        return FakeShot(region)

    def close(self) -> None:
        pass


def test_screen_and_window_sources_with_a_fake_mss_and_xdotool(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "mss", types.SimpleNamespace(MSS=FakeMSS))
    with ScreenSource(Region(700, 500, 200, 200)) as screen:  # clipped to the 800x600 screen
        frame = screen.read()
    assert frame.shape == (100, 100, 3) and tuple(frame[0, 0]) == (10, 0, 200)

    xdotool = tmp_path / "xdotool"
    xdotool.write_text("#!/bin/sh\n"
                       'if [ "$1" = search ]; then echo 4242; exit 0; fi\n'
                       'printf "WINDOW=4242\\nX=30\\nY=40\\nWIDTH=160\\nHEIGHT=120\\n"\n')
    xdotool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.setenv("DISPLAY", ":99")
    with WindowSource("VSeeFace", platform="linux") as window:
        frame = window.read()
    assert frame.shape == (120, 160, 3) and FakeMSS.grabbed[-1] == {"left": 30, "top": 40, "width": 160,
                                                                       "height": 120}


def test_screen_and_window_capture_say_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "mss", None)
    with pytest.raises(SourceError, match="need the mss package: pip install mss"):
        ScreenSource().open()
    monkeypatch.setenv("PATH", str(tmp_path))  # no xdotool
    with pytest.raises(SourceError, match="needs xdotool"):
        WindowSource("VSeeFace", platform="linux").open()
    with pytest.raises(SourceError, match="not supported on darwin"):
        WindowSource("VSeeFace", platform="darwin").open()


def test_prompt_lines_and_the_watched_prompt_file(tmp_path):
    assert parse_prompt_line("a fox, watercolor\n") == {"prompt": "a fox, watercolor"}
    assert parse_prompt_line("/seed 7") == {"seed": 7}
    assert parse_prompt_line("/strength 0.8") == {"strength": 0.8}
    assert parse_prompt_line("/negative blurry") == {"negative_prompt": "blurry"}
    assert parse_prompt_line("/control 0.6, 0.8") == {"control_scales": [0.6, 0.8]}
    assert parse_prompt_line("   ") is None
    for bad in ("/seed x", "/bogus 1", "/control a"):
        with pytest.raises(ValueError):
            parse_prompt_line(bad)

    applied: list[dict] = []

    async def set_prompt(**changes):
        applied.append(changes)

    async def scenario() -> None:
        path = tmp_path / "prompt.txt"
        path.write_text("pencil sketch\n")
        task = asyncio.create_task(watch_file(set_prompt, path, interval=0.02))
        await until(lambda: len(applied) == 1, 5, "the first prompt")
        path.write_text("oil painting,\n  dramatic light\n")
        await until(lambda: len(applied) == 2, 5, "the changed prompt")
        task.cancel()

    asyncio.run(scenario())
    assert applied == [{"prompt": "pencil sketch"}, {"prompt": "oil painting, dramatic light"}]


def test_stdin_lines_are_applied_in_order():
    applied: list[dict] = []

    async def set_prompt(**changes):
        applied.append(changes)

    asyncio.run(read_stdin(set_prompt, io.StringIO("pencil sketch\n/seed 3\n/bogus\n\n/strength 0.9\n")))
    assert applied == [{"prompt": "pencil sketch"}, {"seed": 3}, {"strength": 0.9}]


class SlowSink(RecordingSink):
    def send(self, image, alpha=None):
        time.sleep(0.05)
        super().send(image, alpha)


class ClosingSink(RecordingSink):
    inline = True

    def send(self, image, alpha=None):
        super().send(image, alpha)
        if self.count == 2:
            raise SinkClosed("closed by the user")


def test_sink_worker_keeps_the_newest_frame_and_reports_a_closed_sink():
    worker = SinkWorker(SlowSink())
    worker.start(4, 4, 30)
    frames = [np.full((4, 4, 3), i, np.uint8) for i in range(10)]
    for frame in frames:
        worker.put(frame)
    worker.close()  # the frame still pending is sent before the sink closes
    sent = worker.sink.frames
    assert 1 <= len(sent) < 10 and sent[-1][0, 0, 0] == 9  # slower than the stream: older frames dropped

    inline = SinkWorker(ClosingSink())
    inline.start(4, 4, 30)
    for frame in frames[:3]:
        inline.put(frame)
    assert isinstance(inline.error, SinkClosed) and inline.sink.count == 2
    inline.close()

    failing = SinkWorker(VirtualCameraSink(device="/dev/nonexistent-video"))
    with pytest.raises(SinkError, match="no virtual camera|pyvirtualcam"):
        failing.start(4, 4, 30)


def test_refusals_are_explained():
    assert "refused the token (HTTP 401)" in describe_rejection(OfferRejected(401, {"error": "unauthorized"}), "U")
    full = describe_rejection(OfferRejected(503, {"error": "busy", "detail": "4 peers already"}), "U")
    assert "is full" in full and "4 peers already" in full and "--max-peers" in full
    assert "HTTP 400" in describe_rejection(OfferRejected(400, "bad sdp"), "U")
