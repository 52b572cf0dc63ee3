"""Keeping a keyed background (``--keep-background key:#00ff00``).

The server's pipeline is RGB only: whatever the source's background is, the model restyles it along with the
avatar. Real alpha is not available either: screen and window grabs (mss on X11, Windows, macOS) return opaque
pixels, and virtual cameras (OBS Virtual Camera, v4l2loopback) carry no alpha. So the bridge keeps a keyed
background the way streamers already do it: the avatar app renders on a solid key colour, the bridge marks the
source pixels near that colour, and after the server restyled the frame it paints those pixels back in the key
colour (and makes them transparent in ``--record`` PNGs). OBS's Chroma Key filter on the virtual camera then
removes them as usual.

The mask comes from the very input frame an output shows (the server announces its pts); without an
announcement the newest mask is used.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np

from stream.frames import fit_frame

_HEX = re.compile(r"^#?([0-9a-fA-F]{6})$")


@dataclass(frozen=True)
class ColorKey:
    color: tuple[int, int, int]  # RGB
    tolerance: float = 60.0  # Euclidean distance in RGB levels

    def mask(self, frame: np.ndarray) -> np.ndarray:
        """True where ``frame`` (H, W, 3 RGB uint8) shows the key colour (the background). A 3x3 opening drops
        single stray pixels inside the avatar."""
        diff = frame.astype(np.int16) - np.array(self.color, np.int16)
        near = (diff.astype(np.int32) ** 2).sum(axis=-1) <= self.tolerance ** 2
        opened = cv2.morphologyEx(near.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        return opened.astype(bool)

    def apply(self, output: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``output`` with the masked pixels painted in the key colour, and an alpha plane (0 there, 255 elsewhere).
        A mask of another size is fitted to the output first the way the server fits input frames (cover, then
        centre crop), so it stays aligned when --width/--height differ from the server's size."""
        if mask.shape != output.shape[:2]:
            mask = fit_frame(mask.astype(np.uint8) * 255, output.shape[1], output.shape[0]) > 127
        painted = output.copy()
        painted[mask] = self.color
        alpha = np.where(mask, 0, 255).astype(np.uint8)
        return painted, alpha


class KeyMasks:
    """The key masks of recently sent frames by pts, so an output is keyed with the mask of the very frame it
    shows: the exact pts, else the nearest within ``tolerance`` pts, else the newest mask."""

    def __init__(self, tolerance: int, keep: int = 120) -> None:
        self.tolerance, self.keep = tolerance, keep
        self._masks: OrderedDict[int, np.ndarray] = OrderedDict()

    def remember(self, pts: int, mask: np.ndarray) -> None:
        self._masks[pts] = mask
        while len(self._masks) > self.keep:
            self._masks.popitem(last=False)

    def for_pts(self, source_pts: int | None) -> np.ndarray | None:
        if not self._masks:
            return None
        if source_pts is not None:
            exact = self._masks.get(source_pts)
            if exact is not None:
                return exact
            near = min(self._masks, key=lambda pts: abs(pts - source_pts))
            if abs(near - source_pts) <= self.tolerance:
                return self._masks[near]
        return next(reversed(self._masks.values()))


def parse_background(text: str, tolerance: float = 60.0) -> ColorKey:
    """``key:#RRGGBB`` (or ``key:green`` / ``key:blue`` / ``key:magenta``) -> ColorKey; ValueError otherwise."""
    kind, _, value = text.partition(":")
    if kind.strip().lower() != "key":
        raise ValueError(f"--keep-background must be key:#RRGGBB (e.g. key:#00ff00), got {text!r}")
    named = {"green": "#00ff00", "blue": "#0000ff", "magenta": "#ff00ff"}
    value = named.get(value.strip().lower(), value.strip())
    m = _HEX.match(value)
    if m is None:
        raise ValueError(f"--keep-background colour must be #RRGGBB, got {value!r}")
    hex6 = m.group(1)
    if not 0 <= tolerance <= 442:
        raise ValueError(f"--key-tolerance must lie in 0..442, got {tolerance}")
    return ColorKey((int(hex6[0:2], 16), int(hex6[2:4], 16), int(hex6[4:6], 16)), tolerance)
