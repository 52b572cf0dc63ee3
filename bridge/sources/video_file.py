"""file:PATH: a video file decoded with PyAV."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bridge.errors import SourceError
from bridge.sources.base import FrameSource


class VideoFileSource(FrameSource):
    """A video file decoded with PyAV (any container and codec FFmpeg reads). With ``loop`` it starts over."""

    def __init__(self, path: str | Path, loop: bool = False) -> None:
        self.path, self.loop = Path(path), loop
        self._container: Any = None
        self._frames: Iterator[Any] | None = None

    def describe(self) -> str:
        return f"file {self.path}"

    def open(self) -> None:
        if not self.path.is_file():
            raise SourceError(f"no video file at {self.path}")
        self._start()
        stream = self._container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        self.native_fps = float(rate) if rate else None

    def _start(self) -> None:
        import av

        self.close()
        try:
            self._container = av.open(str(self.path))
        except (av.FFmpegError, OSError) as exc:
            raise SourceError(f"cannot read the video file {self.path}: {exc}") from None
        if not self._container.streams.video:
            self.close()
            raise SourceError(f"{self.path} has no video stream")
        self._frames = self._container.decode(video=0)

    def read(self) -> np.ndarray | None:
        import av

        if self._frames is None:
            raise SourceError(f"{self.describe()} is not open")
        for attempt in range(2):
            try:
                frame = next(self._frames)
                return frame.to_ndarray(format="rgb24")
            except StopIteration:
                if not self.loop:
                    return None
                if attempt == 0:
                    self._start()
            except av.FFmpegError as exc:
                raise SourceError(f"cannot decode {self.path}: {exc}") from None
        raise SourceError(f"{self.path} has no decodable video frames")

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
            self._frames = None
