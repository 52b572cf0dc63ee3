"""A real aiortc client for the server tests: sends a synthetic camera, receives the restyled video and the
server's per-frame announcements, and keeps what it sent so outputs can be matched to inputs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable

import av
import httpx
import numpy as np
import uvicorn
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from aiortc.mediastreams import MediaStreamError

from tests.conftest import camera_frame

FRAME_PTS = 3000  # aiortc's VideoStreamTrack: 90 kHz clock at 30 fps
PALETTE = [(250, 20, 20), (20, 250, 20), (20, 20, 250), (240, 240, 30), (30, 230, 230), (230, 30, 230), (10, 10, 10)]


class SyntheticCamera(VideoStreamTrack):
    """A moving pattern at 30 fps; frame k has pts k * 3000 and is ``pattern(k)``."""

    def __init__(self, size: tuple[int, int], offset: int = 0) -> None:
        super().__init__()
        self.size, self.offset = size, offset
        self.sent: dict[int, float] = {}  # pts -> monotonic send time
        self.paused = False

    def pattern(self, k: int) -> np.ndarray:
        """A moving square over a gradient whose tint cycles through PALETTE: consecutive frames differ in
        their coarse colour, which survives VP8, so an output can be traced to its input."""
        frame = camera_frame(k + self.offset, height=self.size[0], width=self.size[1]).astype(np.int16)
        tint = np.array(PALETTE[(k + self.offset) % len(PALETTE)], np.int16)
        return ((frame + tint * 2) // 3).astype(np.uint8)

    async def recv(self) -> av.VideoFrame:
        while self.paused:
            await asyncio.sleep(0.05)
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame.from_ndarray(self.pattern(pts // FRAME_PTS), format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        self.sent[pts] = time.monotonic()
        return frame


@dataclass
class Received:
    image: np.ndarray
    at: float
    pts: int  # the server starts its output clock at 0, so this is the server's own pts


@dataclass
class Client:
    pc: RTCPeerConnection
    camera: SyntheticCamera
    stream: str = ""
    frames: list[Received] = field(default_factory=list)
    announcements: dict[int, dict] = field(default_factory=dict)  # server pts -> {source_pts, kind}
    _reader: asyncio.Task | None = None

    async def read(self, track) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.frames.append(Received(frame.to_ndarray(format="rgb24"), time.monotonic(), frame.pts))

    def source(self, frame: Received) -> tuple[int | None, str]:
        """The input frame index an output shows and its kind, from the server's announcement (if any)."""
        # time-base conversions on both sides may move a pts by a tick
        near = [note for pts, note in self.announcements.items() if abs(pts - frame.pts) <= 2]
        note = near[0] if near else {}
        source_pts = note.get("source_pts")
        return (None if source_pts is None else round(source_pts / FRAME_PTS)), note.get("kind", "unannounced")

    def announce(self, note: dict) -> None:
        self.announcements[note["pts"]] = note

    async def wait_frames(self, count: int, timeout: float = 20.0) -> list[Received]:
        start = len(self.frames)
        deadline = time.monotonic() + timeout
        while len(self.frames) < start + count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"received {len(self.frames) - start} of {count} frames")
            await asyncio.sleep(0.02)
        return self.frames[start:]

    async def close(self) -> None:
        if self._reader:
            self._reader.cancel()
        await self.pc.close()


async def connect(base: str, size: tuple[int, int] = (128, 128), offset: int = 0,
                  headers: dict[str, str] | None = None, **offer_extra) -> Client:
    """POST /offer with a camera and a data channel; starts reading the returned video."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    client = Client(pc, SyntheticCamera(size, offset))
    channel = pc.createDataChannel("sana-stream")
    channel.on("message", lambda message: client.announce(json.loads(message)))
    pc.addTrack(client.camera)

    @pc.on("track")
    def on_track(track) -> None:
        client._reader = asyncio.ensure_future(client.read(track))

    await pc.setLocalDescription(await pc.createOffer())
    async with httpx.AsyncClient(base_url=base) as http:
        r = await http.post("/offer", json={"sdp": pc.localDescription.sdp, "type": "offer", **offer_extra},
                            headers=headers or {})
    if r.status_code != 200:
        await pc.close()
        raise httpx.HTTPStatusError(f"{r.status_code} {r.text}", request=r.request, response=r)
    body = r.json()
    client.stream = body["stream"]
    await pc.setRemoteDescription(RTCSessionDescription(body["sdp"], body["type"]))
    return client


@contextlib.asynccontextmanager
async def running(app) -> AsyncIterator[str]:
    """Runs ``app`` with uvicorn on a free loopback port inside the current event loop."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def eventually(check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(0.05)
