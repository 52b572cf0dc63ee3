"""A real NDI receiver (cyndilib's, through NDI's frame synchroniser, as video mixers receive) for the NDI tests,
run as its own process: cyndilib holds the GIL while it waits in NDI, which would stall a sender in the same
process. (Its plain ``Receiver.receive`` returned only about one frame in five here, though NDI's own counters
showed every frame arriving; the frame synchroniser hands over each one.)

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
from cyndilib import Finder, Receiver, RecvBandwidth, RecvColorFormat, VideoFrameSync

POLL_S = 0.004  # well under a frame interval, so no frame is replaced before it is seen


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
        frame = VideoFrameSync()
        receiver.frame_sync.set_video_frame(frame)
        receiver.set_source(source)
        count, last, seen = 0, time.monotonic(), 0.0
        while count < args.frames and time.monotonic() < deadline:
            receiver.frame_sync.capture_video()  # the newest frame: a new one has a new timestamp
            stamp = frame.get_timestamp_posix()
            if frame.xres == 0 or stamp == seen:
                if count and time.monotonic() - last > args.idle:
                    break
                time.sleep(POLL_S)
                continue
            seen, last = stamp, time.monotonic()
            width, height = frame.get_resolution()
            count += 1
            emit(event="frame", time=time.time(), width=width, height=height, fps=str(frame.get_frame_rate()),
                 fourcc=frame.get_fourcc().name)
            if count % args.keep_every == 0:
                np.save(args.out / "last.npy", frame.get_array().reshape(height, width, 4))
        emit(event="done", frames=count, performance=str(receiver.get_performance_data()))
        receiver.disconnect()
        return 0
    finally:
        finder.close()


if __name__ == "__main__":
    sys.exit(main())
