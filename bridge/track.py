"""The video track the bridge sends: the pump's frames on a 90 kHz clock, with the key mask of each remembered."""

from __future__ import annotations

import time
from fractions import Fraction

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from bridge.background import KeyMasks
from bridge.pump import FramePump

VIDEO_CLOCK = 90_000


class SourceTrack(MediaStreamTrack):
    """The video track sent to the server: each new frame of the pump once, pts on a 90 kHz clock from 0 (the
    server announces each output's input pts on that clock). Remembers the key masks of recent frames by pts."""

    kind = "video"

    def __init__(self, pump: FramePump) -> None:
        super().__init__()
        self._pump = pump
        self._seq = 0
        self._start: float | None = None
        self._last_pts = -1
        self.masks = KeyMasks(VIDEO_CLOCK // 10)
        self.sent = 0

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        captured = await self._pump.next_after(self._seq)
        self._seq = captured.seq
        now = time.monotonic()
        if self._start is None:
            self._start = now
        pts = max(self._last_pts + 1, int((now - self._start) * VIDEO_CLOCK))
        self._last_pts = pts
        frame = av.VideoFrame.from_ndarray(captured.image, format="rgb24")
        frame.pts, frame.time_base = pts, Fraction(1, VIDEO_CLOCK)
        if captured.mask is not None:
            self.masks.remember(pts, captured.mask)
        self.sent += 1
        return frame
