"""aiortc glue: read a camera track into the pipeline, and send a stream's outputs as a video track."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import av
from aiortc import MediaStreamTrack, RTCDataChannel
from aiortc.mediastreams import VIDEO_CLOCK_RATE, VIDEO_TIME_BASE, MediaStreamError, convert_timebase

from server.metrics import StreamMeter
from stream.pipeline import FramePipeline, OutputFrame
from stream.prepare_schedule import smooth

logger = logging.getLogger(__name__)
REPEAT = "repeat"  # the announced kind of a repeated output (StreamOutputTrack)
REPEAT_AFTER_S = 0.1  # send a new output again when no newer one came this soon ...
SLOW_REPEAT_AFTER_S = 0.0  # ... or at once, when the stream's outputs average SLOW_OUTPUT_S or more apart
SLOW_OUTPUT_S = 0.25


@dataclass(frozen=True)
class InputStamp:
    """What the server knows of an input frame: when it arrived and its pts in 90 kHz units."""

    received: float  # time.monotonic()
    pts: int | None


async def read_camera(track: MediaStreamTrack, pipeline: FramePipeline, stream_id: str,
                      on_frame: Callable[[], None]) -> None:
    """Consumes every frame of ``track`` (aiortc's own queues are unbounded) and submits it unconverted: the
    pipeline keeps only the newest and converts just the frames it prepares. Returns when the track ends."""
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        assert isinstance(frame, av.VideoFrame)
        pts = convert_timebase(frame.pts, frame.time_base, VIDEO_TIME_BASE) if frame.pts is not None else None
        pipeline.submit(stream_id, frame, InputStamp(time.monotonic(), pts))
        on_frame()


async def drain(track: MediaStreamTrack) -> None:
    """Reads and discards a track we do not use (audio), so its frames do not pile up."""
    while True:
        try:
            await track.recv()
        except MediaStreamError:
            return


class StreamOutputTrack(MediaStreamTrack):
    """Sends each new output of one pipeline stream once, with pts from a 90 kHz clock started at the first
    frame. When a data channel is attached, each frame is announced on it first as JSON
    ``{"pts", "source_pts", "kind"}`` so a client can tell which input frame it shows (latency, tests).

    A new output that no newer one follows soon is sent once more (kind ``repeat``), unless ``repeat=False``:
    aiortc's own receiver completes a frame only when the next one starts arriving (docs/design.md#the-output-repeat).
    Only one track may send the pipeline's shared yuv420p frame of an output, since each track stamps its own pts on
    it; further tracks of the same stream (viewers) pass ``own_frames=True``."""

    kind = "video"

    def __init__(self, pipeline: FramePipeline, stream_id: str, meter: StreamMeter, own_frames: bool = False,
                 repeat: bool = True) -> None:
        super().__init__()
        self._own_frames = own_frames
        self._repeat = repeat
        self._pipeline = pipeline
        self._stream_id = stream_id
        self._meter = meter
        self._frames = pipeline.frames(stream_id)
        self._next: asyncio.Future[OutputFrame] | None = None  # the pending __anext__, kept across a repeat
        self._to_repeat: OutputFrame | None = None
        self._last_output: float | None = None  # when the last new output arrived
        self._output_interval: float | None = None  # moving average of the time between new outputs
        self._start: float | None = None
        self._last_pts = -1
        self._sent: av.VideoFrame | None = None  # the frame object recv() returned last
        self.channel: RTCDataChannel | None = None

    async def recv(self) -> av.VideoFrame:
        out, repeat = await self._next_output()
        now = time.monotonic()
        if self._start is None:
            self._start = now
        pts = max(self._last_pts + 1, int((now - self._start) * VIDEO_CLOCK_RATE))
        self._last_pts = pts
        frame = self._frame_for(out, repeat)
        frame.pts, frame.time_base = pts, VIDEO_TIME_BASE
        stamp: InputStamp | Any = out.timestamp
        if isinstance(stamp, InputStamp):
            if not repeat:
                self._meter.record(now, now - stamp.received, out.kind.value)
            self._announce(pts, stamp.pts, REPEAT if repeat else out.kind.value)
        return frame

    def _frame_for(self, out: OutputFrame, repeat: bool) -> av.VideoFrame:
        """The frame to send: a repeat resends this track's last frame object. aiortc's sender calls recv() only
        after encoding the previous frame, so the object is free again; an encoder sets ``pict_type`` to ask
        for a keyframe, which must not carry over to the repeat."""
        if repeat and self._sent is not None:
            self._sent.pict_type = av.video.frame.PictureType.NONE
            return self._sent
        shared = out.converted if not self._own_frames else None
        self._sent = shared if shared is not None else to_video_frame(out.image)
        return self._sent

    async def _next_output(self) -> tuple[OutputFrame, bool]:
        """The stream's next output, or (after ``repeat_after`` without one) the last output again, once."""
        if self._next is None:
            self._next = asyncio.ensure_future(self._frames.__anext__())
        # asyncio.wait, not await: cancelling recv() must not cancel the pending __anext__ (it would end the iterator)
        timeout = repeat_after(self._output_interval) if self._to_repeat is not None else None
        done, _ = await asyncio.wait({self._next}, timeout=timeout)
        if not done:
            out, self._to_repeat = self._to_repeat, None
            return out, True
        try:
            out = self._next.result()
        except (StopAsyncIteration, KeyError, asyncio.CancelledError):  # the stream closed, or stop() cancelled it
            self.stop()
            raise MediaStreamError from None
        self._next = None
        self._to_repeat = out if self._repeat else None
        self._measure_interval(time.monotonic())
        return out, False

    def _measure_interval(self, now: float) -> None:
        if self._last_output is not None:
            self._output_interval = smooth(self._output_interval, now - self._last_output)
        self._last_output = now

    def _announce(self, pts: int, source_pts: int | None, kind: str) -> None:
        if self.channel is not None and self.channel.readyState == "open":
            self.channel.send(json.dumps({"pts": pts, "source_pts": source_pts, "kind": kind}))

    def stop(self) -> None:
        super().stop()
        if self._next is not None and not self._next.done():
            self._next.cancel()  # ends the pipeline iterator it awaits
        elif not self._frames.ag_running:
            asyncio.ensure_future(self._frames.aclose())


def repeat_after(output_interval: float | None) -> float:
    """Seconds without a newer output before the last one is repeated, for outputs ``output_interval`` apart."""
    slow = output_interval is not None and output_interval >= SLOW_OUTPUT_S
    return SLOW_REPEAT_AFTER_S if slow else REPEAT_AFTER_S


def to_video_frame(image: Any) -> av.VideoFrame:
    """uint8 (H, W, 3) RGB -> a yuv420p VideoFrame, on the pipeline's postprocess thread (PipelineConfig.convert):
    what aiortc's encoders take, so they do not convert on every send, a repeat included."""
    return av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
