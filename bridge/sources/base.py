"""The interface every capture source of the camera bridge implements."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class FrameSource(ABC):
    """A local source of RGB frames."""

    native_fps: float | None = None  # the source's own frame rate where it has one (video files, cameras)

    def open(self) -> None:
        """Acquires the device or file; raises ``SourceError`` with a clear message when it cannot."""

    @abstractmethod
    def read(self) -> np.ndarray | None:
        """The next frame, (H, W, 3) uint8 RGB; None when the source has ended (a file without loop)."""

    def close(self) -> None:
        """Releases the device or file; safe to call twice."""

    @abstractmethod
    def describe(self) -> str:
        """A short name for messages: 'camera 0', 'file clip.mp4', 'screen 0,0 640x480'."""

    def __enter__(self) -> FrameSource:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
