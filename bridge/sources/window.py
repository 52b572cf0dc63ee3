"""window:TITLE: the screen region of a window found by its title (xdotool on X11, the Win32 API on Windows)."""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import numpy as np

from bridge.errors import SourceError
from bridge.sources.screen import Region, ScreenSource
from bridge.sources.window_list import Window, WindowList, choose_window

logger = logging.getLogger(__name__)


class WindowSource(ScreenSource):
    """The screen region of a window found by title (see ``choose_window``). Before every frame it reads where
    that window is now, so a window moved or resized between two frames is followed; a window that closed is
    looked for again by title once a second, capturing its last place meanwhile. It grabs the screen there:
    another window on top of it is captured too."""

    LOOK_AGAIN_EVERY = 1.0  # seconds between lookups by title while the window is gone

    def __init__(self, title: str, platform: str | None = None, windows: WindowList | None = None) -> None:
        super().__init__(None)
        self.title = title
        self.platform = platform or sys.platform
        self.window: Window | None = None
        self._windows = windows
        self._lost_since: float | None = None

    def describe(self) -> str:
        return f"window {self.title!r}"

    def open(self) -> None:
        if self._windows is None:
            self._windows = window_list(self.platform)  # first: it names what is missing
        self.window = self.find()
        super().open()
        self.region = self.window.region

    def find(self) -> Window:
        assert self._windows is not None
        windows = self._windows.visible()
        window = choose_window(self.title, windows)
        if window is None:
            raise SourceError(f"no visible window whose title contains {self.title!r}{_listing_hint(windows)}")
        others = [w.title for w in windows if w is not window and self.title.casefold() in w.title.casefold()]
        if others:
            logger.info("%d windows match %r: capturing %r (%dx%d), not %s", len(others) + 1, self.title,
                        window.title, window.region.width, window.region.height, others)
        return window

    def read(self) -> np.ndarray | None:
        self._follow()
        return super().read()

    def _follow(self) -> None:
        assert self._windows is not None and self.window is not None and self._bounds is not None
        if self._lost_since is None:
            region = self._windows.region_of(self.window.id)
            if region is not None:
                if region.clip(self._bounds) is not None and region.width > 0 and region.height > 0:
                    self.region = region
                return
            self._lost_since = time.monotonic()
            logger.warning("the window %r closed; capturing its last place and looking for it again",
                           self.window.title)
        if time.monotonic() - self._lost_since >= self.LOOK_AGAIN_EVERY:
            try:
                self.window = self.find()
            except SourceError:
                self._lost_since = time.monotonic()
                return
            self._lost_since, self.region = None, self.window.region
            logger.info("found the window %r again", self.window.title)


def window_list(platform: str) -> WindowList:
    if platform.startswith("linux"):
        from bridge.sources.xdotool import XdotoolWindows

        return XdotoolWindows()
    if platform == "win32":
        return Win32Windows()
    raise SourceError(f"window capture is not supported on {platform}: use screen:X,Y,W,H over the window, or "
                      "capture the window in OBS and pick OBS's virtual camera as camera:N")


def _listing_hint(windows: list[Window]) -> str:
    shown = ", ".join(repr(w.title) for w in windows[:8]) + (", ..." if len(windows) > 8 else "")
    listing = f" (visible: {shown})" if windows else " (no titled window is visible)"
    if os.environ.get("WAYLAND_DISPLAY"):
        listing += ("; this is a Wayland session: only X11 apps running under XWayland can be found, use "
                    "screen:X,Y,W,H or OBS for a native Wayland window")
    return listing


class Win32Windows:
    """Top-level windows through user32 (EnumWindows, GetWindowRect in physical pixels, as mss grabs them).
    ``user32`` and ``callback`` (the ctypes WINFUNCTYPE for EnumWindows) are parameters so a test can stand in
    for Windows, which cannot run here."""

    def __init__(self, user32: Any = None, callback: Any = None) -> None:
        if user32 is None:  # pragma: no cover - Windows only
            import ctypes
            from ctypes import wintypes

            user32 = ctypes.windll.user32  # type: ignore[attr-defined]
            callback = ctypes.WINFUNCTYPE(wintypes.BOOL, wintypes.HWND, wintypes.LPARAM)  # type: ignore[attr-defined]
            try:
                user32.SetProcessDPIAware()
            except AttributeError:
                pass
        self.user32, self.callback = user32, callback

    def visible(self) -> list[Window]:
        user32, found = self.user32, []

        def visit(hwnd: int, _: int) -> bool:
            length = user32.GetWindowTextLengthW(hwnd)
            if user32.IsWindowVisible(hwnd) and not user32.IsIconic(hwnd) and length > 0:
                region = self.region_of(hwnd)
                if region is not None:
                    found.append(Window(int(hwnd), _window_text(user32, hwnd, length), region))
            return True

        user32.EnumWindows(self.callback(visit), 0)
        return found

    def region_of(self, window_id: int) -> Region | None:
        import ctypes
        from ctypes import wintypes

        rect = wintypes.RECT()
        if not self.user32.IsWindow(window_id) or not self.user32.GetWindowRect(window_id, ctypes.byref(rect)):
            return None
        return Region(rect.left, rect.top, rect.right - rect.left, rect.bottom - rect.top)


def _window_text(user32: Any, hwnd: int, length: int) -> str:
    import ctypes

    buffer = ctypes.create_unicode_buffer(length + 1)
    user32.GetWindowTextW(hwnd, buffer, length + 1)
    return buffer.value
