"""Synthetic camera frames and frame differences, shared by the benchmarks and the tests (which import them through
``tests.support``; benchmarks never import tests)."""

from __future__ import annotations

import cv2
import numpy as np

SQUARE_COLOR = (240, 40, 40)


def camera_frame(index: int, height: int = 96, width: int = 128, *, square: int = 24,
                 step: tuple[int, int] = (5, 7)) -> np.ndarray:
    """A camera-like frame: a colour gradient with a ``square`` that moves by ``step`` (rows, columns) per index."""
    y, x = np.mgrid[0:height, 0:width]
    frame = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 96)], axis=-1).astype(np.uint8)
    top, left = (index * step[0]) % (height - square), (index * step[1]) % (width - square)
    frame[top:top + square, left:left + square] = SQUARE_COLOR
    return frame


def camera_frames(count: int, width: int, height: int) -> list[np.ndarray]:
    """``count`` frames for the engine benchmarks: the square a sixth of the frame, moving further per frame."""
    square = max(8, min(width, height) // 6)
    return [camera_frame(i, height, width, square=square, step=(11, 17)) for i in range(count)]


def scrolling_gradient(index: int, size: int) -> np.ndarray:
    """A square frame whose whole gradient scrolls with ``index``: every pixel changes, as in a moving camera."""
    y, x = np.mgrid[0:size, 0:size]
    frame = np.stack([(x + 3 * index) % 256, (y + 5 * index) % 256, np.full_like(x, (7 * index) % 256)], -1)
    return frame.astype(np.uint8)


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two images (uint8 or float), in grey levels."""
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def block_diff(a: np.ndarray, b: np.ndarray, blocks: int = 16) -> float:
    """Mean level difference of ``blocks`` x ``blocks`` block averages: what survives lossy video codecs, which keep
    the coarse picture, not the fine noise."""
    small = [cv2.resize(x, (blocks, blocks), interpolation=cv2.INTER_AREA).astype(np.float32) for x in (a, b)]
    return float(np.abs(small[0] - small[1]).mean())
