"""screen / screen:X,Y,W,H: a region of the screen grabbed with mss."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bridge.errors import SourceError
from bridge.sources.base import FrameSource
from engines.install_hint import install_hint

MSS_HINT = f"pip install mss (or {install_hint('bridge')})"


@dataclass(frozen=True)
class Region:
    left: int
    top: int
    width: int
    height: int

    def as_mss(self) -> dict[str, int]:
        return {"left": self.left, "top": self.top, "width": self.width, "height": self.height}

    def clip(self, bounds: Region) -> Region | None:
        """The part of this region inside ``bounds`` (None when nothing is)."""
        left, top = max(self.left, bounds.left), max(self.top, bounds.top)
        right = min(self.left + self.width, bounds.left + bounds.width)
        bottom = min(self.top + self.height, bounds.top + bounds.height)
        if right <= left or bottom <= top:
            return None
        return Region(left, top, right - left, bottom - top)


def import_mss() -> Any:
    try:
        import mss
    except ImportError:
        raise SourceError(f"screen and window capture need the mss package: {MSS_HINT}") from None
    return mss


class ScreenSource(FrameSource):
    """A region of the screen grabbed with mss (X11, Windows, macOS; not Wayland). ``region=None``: the
    primary monitor."""

    def __init__(self, region: Region | None = None) -> None:
        self.region = region
        self._sct: Any = None
        self._bounds: Region | None = None

    def describe(self) -> str:
        r = self.region
        return "screen" if r is None else f"screen {r.left},{r.top} {r.width}x{r.height}"

    def open(self) -> None:
        mss = import_mss()
        factory = getattr(mss, "MSS", None) or mss.mss  # mss 10 renamed the factory
        try:
            self._sct = factory()
            monitors = self._sct.monitors
        except Exception as exc:  # noqa: BLE001 - mss raises its own ScreenShotError/XError types
            self.close()
            raise SourceError(f"screen capture is not available: {exc} (mss needs an X11, Windows or macOS "
                              "desktop session; Wayland is not supported)") from None
        whole = monitors[0]
        self._bounds = Region(whole["left"], whole["top"], whole["width"], whole["height"])
        if self.region is None:
            primary = monitors[1] if len(monitors) > 1 else whole
            self.region = Region(primary["left"], primary["top"], primary["width"], primary["height"])
        elif self.region.clip(self._bounds) is None:
            raise SourceError(f"the region {self.describe()} lies outside the screen "
                              f"({self._bounds.width}x{self._bounds.height} at {self._bounds.left},{self._bounds.top})")

    def grab(self, region: Region) -> np.ndarray:
        assert self._sct is not None and self._bounds is not None
        visible = region.clip(self._bounds)
        if visible is None:
            raise SourceError(f"the region {region} lies outside the screen")
        try:
            shot = self._sct.grab(visible.as_mss())
        except Exception as exc:  # noqa: BLE001 - as above
            raise SourceError(f"screen capture failed: {exc}") from None
        bgra = np.asarray(shot, dtype=np.uint8).reshape(visible.height, visible.width, 4)
        return np.ascontiguousarray(bgra[..., 2::-1])  # BGRA -> RGB

    def read(self) -> np.ndarray | None:
        if self._sct is None or self.region is None:
            raise SourceError(f"{self.describe()} is not open")
        return self.grab(self.region)

    def close(self) -> None:
        if self._sct is not None:
            close = getattr(self._sct, "close", None)
            if close is not None:
                close()
            self._sct = None
