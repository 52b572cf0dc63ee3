"""``--source`` values: parsed into a SourceSpec, which builds the source."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.sources.base import FrameSource
from bridge.sources.camera import CameraSource
from bridge.sources.screen import Region, ScreenSource
from bridge.sources.video_file import VideoFileSource
from bridge.sources.window import WindowSource


@dataclass(frozen=True)
class SourceSpec:
    """A parsed ``--source`` value."""

    kind: str  # camera, file, screen, window
    value: str = ""
    region: Region | None = None

    def build(self, loop: bool = False, width: int | None = None, height: int | None = None) -> FrameSource:
        if self.kind == "camera":
            device: int | str = int(self.value) if self.value.isdigit() else self.value
            return CameraSource(device, width, height)
        if self.kind == "file":
            return VideoFileSource(self.value, loop=loop)
        if self.kind == "screen":
            return ScreenSource(self.region)
        if self.kind == "window":
            return WindowSource(self.value)
        raise ValueError(f"unknown source kind {self.kind!r}")


SOURCE_FORMS = "camera:INDEX, camera:/dev/videoN, file:PATH, screen, screen:X,Y,W,H or window:TITLE"


def parse_source(text: str) -> SourceSpec:
    """Parses ``--source``; raises ValueError naming the accepted forms."""
    kind, _, value = text.partition(":")
    kind = kind.strip().lower()
    if kind == "camera":
        value = value.strip() or "0"
        return SourceSpec("camera", value)
    if kind == "file" and value:
        return SourceSpec("file", value)
    if kind == "screen":
        if not value.strip():
            return SourceSpec("screen")
        parts = [p.strip() for p in value.split(",")]
        try:
            x, y, w, h = (int(p) for p in parts)
        except ValueError:
            raise ValueError(f"screen region must be X,Y,W,H in pixels, got {value!r}") from None
        if w < 1 or h < 1:
            raise ValueError(f"screen region width and height must be positive, got {w}x{h}")
        return SourceSpec("screen", value, Region(x, y, w, h))
    if kind == "window" and value.strip():
        return SourceSpec("window", value.strip())
    raise ValueError(f"--source must be one of {SOURCE_FORMS}; got {text!r}")
