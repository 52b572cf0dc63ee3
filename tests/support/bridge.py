"""What the camera-bridge tests share: a known picture, a clip of it, and a server for the bridge to talk to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import numpy as np

from rtc.ice import include_loopback_candidates
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


def write_clip(path: Path) -> Path:
    """A 1 s MPEG-4 clip of ``scene()``: the output for a given prompt is then one known image."""
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


def first_frame(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


def bridge_app(engine: Any, token: str | None = TOKEN) -> Any:
    """The server app the bridge talks to: ``engine`` at SIZE, a short idle timeout."""
    config = StreamConfig(width=SIZE, height=SIZE, t_list=(1.0,), prompt=OLD[0])
    return create_app(ServerSettings(stream=config, token=token, idle_timeout=5.0), engine,
                      ModelInfo("tiny", True, "torch"))


def bridge_engine(model_dir: Path, prompt: str = OLD[0], seed: int = OLD[1]) -> StreamEngine:
    """A fresh engine at SIZE (the server's, or a reference for what the server makes of a frame); the server
    then offers loopback candidates, as the bridge tests' clients run on this machine."""
    include_loopback_candidates()
    return StreamEngine.from_pretrained(model_dir, StreamConfig(width=SIZE, height=SIZE, t_list=(1.0,),
                                                                prompt=prompt, seed=seed))
