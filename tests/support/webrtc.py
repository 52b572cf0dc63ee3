"""A real aiortc client for the server tests (server.client plus a synthetic camera): sends a synthetic camera,
receives the restyled video and the server's per-frame announcements, and keeps what it sent so outputs can be
matched to inputs."""

from __future__ import annotations

import asyncio
import time
from fractions import Fraction

import av
import numpy as np
from aiortc import VideoStreamTrack
from aiortc.mediastreams import VIDEO_TIME_BASE

from benchmarks.frames import camera_frame
from server.client import OfferRejected, Received, StreamClient  # noqa: F401 - re-exported for tests
from server.client import connect as stream_connect

FRAME_PTS = 3000  # aiortc's VideoStreamTrack: 90 kHz clock at 30 fps
PALETTE = [(250, 20, 20), (20, 250, 20), (20, 20, 250), (240, 240, 30), (30, 230, 230), (230, 30, 230), (10, 10, 10)]


class SyntheticCamera(VideoStreamTrack):
    """A moving pattern at 30 fps, or one frame every ``interval`` seconds; frame k has pts k * 3000 and is
    ``pattern(k)``."""

    def __init__(self, size: tuple[int, int], offset: int = 0, interval: float | None = None) -> None:
        super().__init__()
        self.size, self.offset, self.interval = size, offset, interval
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
        pts, time_base = await self._next_pts()
        frame = av.VideoFrame.from_ndarray(self.pattern(pts // FRAME_PTS), format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        self.sent[pts] = time.monotonic()
        return frame

    async def _next_pts(self) -> tuple[int, Fraction]:
        if self.interval is None:
            return await self.next_timestamp()  # aiortc's 30 fps pacing
        if self.sent:
            await asyncio.sleep(self.interval)
        return len(self.sent) * FRAME_PTS, VIDEO_TIME_BASE


class Client:
    """A ``StreamClient`` plus the synthetic camera it sends, so outputs can be traced to inputs."""

    def __init__(self, inner: StreamClient, camera: SyntheticCamera) -> None:
        self.inner, self.camera, self.pc, self.stream = inner, camera, inner.pc, inner.stream

    @property
    def frames(self) -> list[Received]:
        return self.inner.frames

    def source(self, frame: Received) -> tuple[int | None, str]:
        """The input frame index an output shows and its kind, from the server's announcement (if any)."""
        note = self.inner.note(frame)
        source_pts = note.get("source_pts")
        return (None if source_pts is None else round(source_pts / FRAME_PTS)), note.get("kind", "unannounced")

    async def wait_frames(self, count: int, timeout: float = 20.0) -> list[Received]:
        return await self.inner.wait_frames(count, timeout)

    async def close(self) -> None:
        await self.inner.close()


async def connect(base: str, size: tuple[int, int] = (128, 128), offset: int = 0,
                  headers: dict[str, str] | None = None, stream: str | None = None, paused: bool = False,
                  camera: SyntheticCamera | None = None, marker_assembly: bool = True, relay: bool = False) -> Client:
    """POST /offer with a synthetic camera (``camera``, or a new one sending nothing until unpaused when ``paused``);
    raises ``OfferRejected`` when the server refuses. ``relay``: media through the server's TURN server only."""
    if camera is None:
        camera = SyntheticCamera(size, offset)
        camera.paused = paused
    inner = await stream_connect(base, camera, headers, stream=stream, marker_assembly=marker_assembly, relay=relay)
    return Client(inner, camera)
