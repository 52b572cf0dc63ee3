"""A real NDI receiver (cyndilib's) for the NDI tests, run as its own process: cyndilib holds the GIL while it
waits for a frame, which would stall a sender in the same process.

    python -m tests.support.ndi_receiver --name NAME --frames N --timeout S --idle S --out DIR

Finds the source whose stream name is NAME, receives RGBA frames and prints one JSON line per event on stdout:
``{"event": "found", "source": "HOST (NAME)", "stream_name": NAME}``, then per frame ``{"event": "frame",
"time": time.time(), "width", "height", "fps": "30/1", "fourcc"}``, and at the end ``{"event": "done",
"frames": n}``. The newest frame is kept in DIR/last.npy ((H, W, 4) RGBA) whenever ``--keep-every`` frames
arrived. It stops after N frames, after S seconds, or when no frame came for ``--idle`` seconds after the
first. A source that goes away and comes back is received again (NDI reconnects by name)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from cyndilib import Finder, Receiver, RecvBandwidth, RecvColorFormat, VideoRecvFrame
from cyndilib.receiver import ReceiveFrameType


def emit(**event: object) -> None:
    print(json.dumps(event), flush=True)


def find(finder: Finder, name: str, deadline: float):  # noqa: ANN201 - cyndilib's Source
    while time.monotonic() < deadline:
        finder.wait_for_sources(0.5)
        finder.update_sources()
        for source in finder.iter_sources():
            if source.stream_name == name:
                return source
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--frames", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--idle", type=float, default=30.0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--keep-every", type=int, default=1)
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.timeout
    finder = Finder()
    finder.open()
    try:
        source = find(finder, args.name, deadline)
        if source is None:
            emit(event="not_found", sources=finder.get_source_names())
            return 1
        emit(event="found", source=source.name, stream_name=source.stream_name)
        receiver = Receiver(color_format=RecvColorFormat.RGBX_RGBA, bandwidth=RecvBandwidth.highest)
        frame = VideoRecvFrame()
        receiver.set_video_frame(frame)
        receiver.set_source(source)
        count, last = 0, time.monotonic()
        while count < args.frames and time.monotonic() < deadline:
            if not receiver.receive(ReceiveFrameType.recv_video, 100) & ReceiveFrameType.recv_video:
                if count and time.monotonic() - last > args.idle:
                    break
                continue
            last = time.monotonic()
            data = np.empty(frame.get_data_size(), np.uint8)
            frame.fill_p_data(data)
            width, height = frame.get_resolution()
            count += 1
            emit(event="frame", time=time.time(), width=width, height=height, fps=str(frame.get_frame_rate()),
                 fourcc=frame.get_fourcc().name)
            if count % args.keep_every == 0:
                np.save(args.out / "last.npy", data.reshape(height, width, 4))
        emit(event="done", frames=count)
        receiver.disconnect()
        return 0
    finally:
        finder.close()


if __name__ == "__main__":
    sys.exit(main())
