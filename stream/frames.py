"""Camera frames (uint8 RGB arrays): checks and fitting to the output size. numpy and OpenCV only, so that the
camera bridge can fit frames the way the server does without torch (tensors: ``stream.image_tensors``)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import cv2
import numpy as np


@runtime_checkable
class DecodedFrame(Protocol):
    """A decoded video frame that converts to RGB on demand (PyAV's ``av.VideoFrame`` is one). The pipeline
    accepts these so that only the frames it prepares get converted, not every frame a 30 fps camera sends."""

    def to_ndarray(self, format: str) -> np.ndarray: ...


def validate_frame(frame: object, name: str = "frame") -> np.ndarray:
    """A frame is a numpy uint8 array of shape (H, W, 3), RGB, with H, W >= 1."""
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise ValueError(f"{name} must have dtype uint8, got {frame.dtype}")
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"{name} must have shape (H, W, 3), got {frame.shape}")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {frame.shape}")
    return frame


def to_rgb(frame: np.ndarray | DecodedFrame) -> np.ndarray:
    """``frame`` as an RGB array: a DecodedFrame converted, an array as it is (neither validated here)."""
    return frame.to_ndarray(format="rgb24") if isinstance(frame, DecodedFrame) else frame


def fit_frame(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resizes so the frame covers (height, width), then crops the centre: no stretching, no borders."""
    h, w = frame.shape[:2]
    if (h, w) == (height, width):
        return frame
    scale = max(width / w, height / h)
    new_w, new_h = max(width, round(w * scale)), max(height, round(h * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(frame, (new_w, new_h), interpolation=interpolation)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return np.ascontiguousarray(resized[top:top + height, left:left + width])
