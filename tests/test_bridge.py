"""The camera bridge (``sana-stream camera``) against a real server over loopback: a video-file source, a
recording sink (pyvirtualcam's own backends cannot run here), live prompt changes, a server restart on the
same port, and the clear errors of the command."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from benchmarks.serve_process import ServeProcess
from bridge.background import ColorKey, parse_background
from bridge.bridge import Bridge, BridgeOptions
from bridge.server_api import describe_rejection
from bridge.sinks import CAMERA_BACKENDS, RecordingSink, virtual_camera_driver_hint
from bridge.sources import VideoFileSource
from sana_stream.cli import main
from rtc.client import OfferRejected
from tests.support import ServerThread, block_diff, eventually, free_port, wait_until
from tests.support.bridge import NEW, OLD, SIZE, TOKEN, bridge_app, bridge_engine, first_frame, write_clip

ROOT = Path(__file__).resolve().parent.parent

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4")


@pytest.fixture(scope="module")
def make_engine(demo_model_dir):
    return lambda prompt=OLD[0], seed=OLD[1]: bridge_engine(demo_model_dir, prompt, seed)


def test_frames_flow_prompt_changes_and_a_server_restart_is_survived(clip, make_engine):
    sink = RecordingSink(keep=16)
    options = BridgeOptions(server="http://127.0.0.1:1", token=TOKEN, fps=15, stall_timeout=2.0, stream="bridge-cam",
                            backoff_initial=0.2, backoff_max=1.0, key=parse_background("key:#00ff00"))
    seen: dict[str, object] = {}

    async def scenario(first: ServerThread) -> None:
        options.server = first.base
        bridge = Bridge(VideoFileSource(clip, loop=True), sink, options)
        task = asyncio.create_task(bridge.run())
        await eventually(lambda: sink.count >= 6 or task.done(), 30, "6 restyled frames")
        assert not task.done(), task.result()
        seen["before"] = sink.snapshot()[-1]

        state = await bridge.set_prompt(prompt=NEW[0], seed=NEW[1])
        assert state is not None and state["prompt"] == NEW[0] and state["seed"] == NEW[1]
        async with httpx.AsyncClient(base_url=first.base) as http:
            shown = (await http.get("/prompt", params={"stream": bridge.stream_id}, headers=AUTH)).json()["streams"]
        assert shown[bridge.stream_id]["prompt"] == NEW[0]
        count = sink.count
        await eventually(lambda: sink.count >= count + 8, 20, "8 frames after the prompt change")
        seen["after"] = sink.snapshot()[-1]
        seen["alpha"] = sink.alphas[-1]
        seen["stream"] = bridge.stream_id
        assert bridge.stream_id == "bridge-cam"  # the stream id asked for

        # the server goes away and a new one comes up on the same port
        port = first.port
        await asyncio.to_thread(first.__exit__, None, None, None)
        await eventually(lambda: not bridge.connected.is_set(), 15, "the bridge noticing the server is gone")
        second = await asyncio.to_thread(lambda: ServerThread(bridge_app(make_engine()), port=port).__enter__())
        try:
            count = sink.count
            await eventually(lambda: sink.count >= count + 6 or task.done(), 30, "frames after the restart")
            assert not task.done(), task.result()
            assert bridge.connections == 2 and bridge.stream_id == seen["stream"]  # same stream id asked for
            async with httpx.AsyncClient(base_url=second.base) as http:
                shown = (await http.get("/prompt", params={"stream": bridge.stream_id}, headers=AUTH)).json()["streams"]
            assert shown[bridge.stream_id]["prompt"] == NEW[0]  # the bridge re-applied its settings
            seen["restarted"] = sink.snapshot()[-1]
            bridge.stop()
            await asyncio.wait_for(task, 10)
        finally:
            await asyncio.to_thread(second.__exit__, None, None, None)

    first = ServerThread(bridge_app(make_engine())).__enter__()
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


@pytest.mark.slow
def test_the_command_rides_out_a_server_restart_on_its_port_keeping_its_stream_id(clip, demo_model_dir, tmp_path):
    """``sana-stream camera --stream ID`` against a ``sana-stream serve`` process that is stopped (SIGTERM) and
    started again on the same port a few seconds later: the command keeps running, reconnects by itself as
    stream ID and re-applies its --prompt and --seed on the new server."""
    server = ServeProcess(free_port(), ["--model", str(demo_model_dir), "--backend", "torch", "--width", str(SIZE),
                                        "--height", str(SIZE), "--token", TOKEN], tmp_path / "serve.log",
                          env={"SANA_STREAM_CACHE": str(tmp_path / "cache")})
    frames, log = tmp_path / "frames", tmp_path / "camera.log"
    server.start()
    with open(log, "wb") as out:
        camera = subprocess.Popen([sys.executable, "-m", "sana_stream", "camera", "--server", server.base, "--token",
                                   TOKEN, "--source", f"file:{clip}", "--loop", "--fps", "15", "--record", str(frames),
                                   "--no-stdin", "--stream", "vtuber", "--prompt", NEW[0], "--seed", str(NEW[1])],
                                  stdout=out, stderr=subprocess.STDOUT)
    written = lambda: len(list(frames.glob("frame_*.png")))  # noqa: E731
    try:
        wait_until(lambda: written() >= 5 or camera.poll() is not None, 60, "5 recorded frames")
        assert camera.poll() is None, log.read_text()
        stopped = server.stop()
        wait_until(lambda: "reconnecting" in log.read_text(), 15, "the command noticing the server is gone")
        time.sleep(max(0.0, stopped + 3 - time.time()))  # a 3 s outage, plus the server's start
        before = written()
        server.start()
        wait_until(lambda: written() >= before + 5 or camera.poll() is not None, 60, "frames after the restart")
        assert camera.poll() is None, log.read_text()
        shown = httpx.get(f"{server.base}/prompt", params={"stream": "vtuber"}, headers=AUTH).json()["streams"]["vtuber"]
        assert (shown["prompt"], shown["seed"]) == NEW  # re-applied on the new server
        assert httpx.get(f"{server.base}/health", headers=AUTH).json()["peers"] == 1
        camera.send_signal(signal.SIGTERM)
        assert camera.wait(30) == 0, log.read_text()
    finally:
        if camera.poll() is None:
            camera.kill()
            camera.wait(30)
        server.close()


def test_unreachable_server_is_one_clear_line_and_exit_1(clip, tmp_path, caplog):
    url = f"http://127.0.0.1:{free_port()}"
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
    with ServerThread(bridge_app(make_engine())) as server:
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


def test_refusals_are_explained():
    assert "refused the token (HTTP 401)" in describe_rejection(OfferRejected(401, {"error": "unauthorized"}), "U")
    full = describe_rejection(OfferRejected(503, {"error": "busy", "detail": "4 peers already"}), "U")
    assert "is full" in full and "4 peers already" in full and "--max-peers" in full
    assert "HTTP 400" in describe_rejection(OfferRejected(400, "bad sdp"), "U")


@pytest.mark.parametrize("backend", ["obs", "unitycapture", "v4l2loopback"])
def test_each_camera_backend_is_used_here_or_refused_in_one_line(backend, clip, make_engine):
    """In a process of its own, so what pyvirtualcam leaves on stderr (an ignored exception in its Camera.__del__)
    would show."""
    supported = backend in CAMERA_BACKENDS["linux"]
    with ServerThread(bridge_app(make_engine(), token=None)) as server:
        done = subprocess.run([sys.executable, "-m", "sana_stream.cli", "camera", "--server", server.base, "--source",
                               f"file:{clip}", "--no-stdin", "--virtual-camera", "--camera-backend", backend],
                              capture_output=True, text=True, timeout=120, check=False, cwd=ROOT)
    output = done.stdout + done.stderr
    assert "Traceback" not in output and "Exception ignored" not in output, output
    errors = [line for line in output.splitlines() if "ERROR" in line]
    if supported:  # v4l2loopback reaches pyvirtualcam, which finds no loopback device here
        assert done.returncode == 1 and len(errors) == 1 and virtual_camera_driver_hint() in errors[0], output
    else:
        assert done.returncode == 2 and len(errors) == 1, output
        assert f"--camera-backend {backend} is not available on linux: pyvirtualcam offers v4l2loopback" in errors[0]
