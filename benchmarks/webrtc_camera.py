"""The server benchmark's camera: an aiortc track sending a moving gradient, VP8-encoded before timing."""

from __future__ import annotations

import time
from fractions import Fraction

import av
import numpy as np
from aiortc import VideoStreamTrack

from benchmarks.pipeline import CAMERA_FPS, camera_loop

FRAME_PTS = round(90_000 / CAMERA_FPS)  # pts step on aiortc's 90 kHz video clock
LOOP_S = 10.0  # the camera's pre-encoded loop
CAMERA_BITRATE = 1_000_000  # bits/s; aiortc's VP8 encoder reached ~1.1 Mbit/s sending this pattern here


class Camera(VideoStreamTrack):
    """A moving gradient at 30 fps (benchmarks.pipeline.camera_loop, in the YUV 4:2:0 webcams and browsers
    deliver), VP8-encoded before timing as a camera's own machine would encode it, so the peers' process only
    packetizes and sends; it remembers when it sent each pts.

    Why pre-encoded: the peers run at idle priority on the server's 2 cores, and encoding 30 frames a second
    there waited for whatever the engine left idle, which put up to hundreds of ms of the peers' own CPU
    starvation into the measured latency. The loop is LOOP_S long with a keyframe at each start; its bitrate
    is CAMERA_BITRATE, about what aiortc's encoder settles at here."""

    def __init__(self, size: int, offset: int) -> None:
        super().__init__()
        planes = [av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p").to_ndarray()
                  for rgb in camera_loop(size)]
        self.packets = encode_vp8([planes[(k + offset) % len(planes)] for k in range(int(LOOP_S * CAMERA_FPS))], size)
        self.sent: dict[int, float] = {}

    async def recv(self) -> av.Packet:  # type: ignore[override]  # aiortc's senders take encoded packets too
        pts, time_base = await self.next_timestamp()
        packet = av.Packet(self.packets[(pts // FRAME_PTS) % len(self.packets)])
        packet.pts, packet.time_base = pts, time_base
        self.sent[pts] = time.monotonic()
        return packet


def encode_vp8(planes: list[np.ndarray], size: int) -> list[bytes]:
    """``planes`` (yuv420p) as one VP8 frame each, the first a keyframe, with aiortc's realtime settings."""
    codec = av.CodecContext.create("libvpx", "w")
    codec.width = codec.height = size
    codec.pix_fmt = "yuv420p"
    codec.time_base, codec.framerate = Fraction(1, int(CAMERA_FPS)), Fraction(int(CAMERA_FPS), 1)
    codec.bit_rate, codec.gop_size = CAMERA_BITRATE, len(planes)
    codec.options = {"deadline": "realtime", "cpu-used": "-6", "lag-in-frames": "0", "minrate": str(CAMERA_BITRATE),
                     "maxrate": str(CAMERA_BITRATE), "bufsize": str(CAMERA_BITRATE)}
    packets: list[bytes] = []
    for k, plane in enumerate(planes):
        frame = av.VideoFrame.from_ndarray(plane, format="yuv420p")
        frame.pts, frame.time_base = k, codec.time_base
        packets += [bytes(p) for p in codec.encode(frame)]
    packets += [bytes(p) for p in codec.encode(None)]
    if len(packets) != len(planes):
        raise RuntimeError(f"libvpx gave {len(packets)} packets for {len(planes)} frames")
    return packets
