"""The windows a ``window:TITLE`` source picks from, and how it picks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from bridge.sources.screen import Region


@dataclass(frozen=True)
class Window:
    id: int
    title: str
    region: Region  # the window's content on the virtual screen, in pixels

    @property
    def area(self) -> int:
        return self.region.width * self.region.height


class WindowList(Protocol):
    """The desktop's visible windows (xdotool on X11, the Win32 API on Windows)."""

    def visible(self) -> list[Window]:
        """Every visible (mapped, not minimised) window that has a title."""

    def region_of(self, window_id: int) -> Region | None:
        """Where the window is now; None when it no longer exists."""


def choose_window(title: str, windows: Sequence[Window]) -> Window | None:
    """The window ``window:TITLE`` means: among the windows with an area whose title contains TITLE (ignoring
    case), one titled exactly TITLE first, then the largest, then the lowest id (stable from one lookup to the
    next). The largest wins over the most recently active because X11 without a window manager has no notion
    of active, and an avatar app's main window is its largest."""
    wanted = title.casefold()
    matches = [w for w in windows if wanted in w.title.casefold() and w.area > 0]
    if not matches:
        return None
    return min(matches, key=lambda w: (w.title.casefold() != wanted, -w.area, w.id))
