"""camera:N / camera:/dev/videoN: an OpenCV capture device."""

from __future__ import annotations

import sys
from typing import Any

import cv2
import numpy as np

from bridge.errors import SourceError
from bridge.sources.base import FrameSource


class CameraSource(FrameSource):
    """An OpenCV capture device: an index (0 is the default camera) or a device path."""

    def __init__(self, device: int | str, width: int | None = None, height: int | None = None) -> None:
        self.device, self.width, self.height = device, width, height
        self._cap: Any = None

    def describe(self) -> str:
        return f"camera {self.device}"

    def open(self) -> None:
        previous = _quiet_opencv()
        try:
            cap = cv2.VideoCapture(self.device)
            opened = cap.isOpened()
        finally:
            _restore_opencv(previous)
        if not opened:
            cap.release()
            raise SourceError(f"no camera {self.device}: OpenCV could not open it (is it connected and not used by "
                              f"another program? {_camera_listing_hint()})")
        if self.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        if self.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        ok, _ = cap.read()
        if not ok:
            cap.release()
            raise SourceError(f"camera {self.device} opened but delivers no frames (is another program using it?)")
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.native_fps = float(fps) if fps and 1 <= fps <= 240 else None
        self._cap = cap

    def read(self) -> np.ndarray | None:
        if self._cap is None:
            raise SourceError(f"{self.describe()} is not open")
        ok, frame = self._cap.read()
        if not ok or frame is None:
            raise SourceError(f"{self.describe()} stopped delivering frames (unplugged?)")
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def _camera_listing_hint() -> str:
    if sys.platform.startswith("linux"):
        return "list devices with `v4l2-ctl --list-devices`"
    return "camera indices start at 0 in the order the system lists them"


def _quiet_opencv() -> Any:
    """Silences OpenCV's own warnings while probing a device (our message says what happened)."""
    try:
        previous = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        return previous
    except AttributeError:  # an OpenCV build without cv2.utils.logging
        return None


def _restore_opencv(previous: Any) -> None:
    if previous is not None:
        cv2.utils.logging.setLogLevel(previous)
