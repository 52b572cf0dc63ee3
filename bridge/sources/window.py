"""window:TITLE: the screen region of a window found by its title (xdotool on X11, the Win32 API on Windows)."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bridge.errors import SourceError
from bridge.sources.screen import Region, ScreenSource

logger = logging.getLogger(__name__)


class WindowSource(ScreenSource):
    """The screen region of a window found by title (a substring, case-insensitive), re-located once a second
    so a moved window is followed. It grabs the screen there: another window on top of it is captured too."""

    RELOCATE_EVERY = 1.0

    def __init__(self, title: str, platform: str | None = None) -> None:
        super().__init__(None)
        self.title = title
        self.platform = platform or sys.platform
        self._located_at = 0.0

    def describe(self) -> str:
        return f"window {self.title!r}"

    def open(self) -> None:
        region = self.locate()  # the platform check first: it names what is missing
        super().open()
        self.region = region
        self._located_at = time.monotonic()

    def locate(self) -> Region:
        if self.platform.startswith("linux"):
            return _locate_x11(self.title)
        if self.platform == "win32":
            return _locate_win32(self.title)
        raise SourceError(f"window capture is not supported on {self.platform}: use screen:X,Y,W,H over the "
                          "window, or capture the window in OBS and pick OBS's virtual camera as camera:N")

    def read(self) -> np.ndarray | None:
        now = time.monotonic()
        if now - self._located_at >= self.RELOCATE_EVERY:
            self._located_at = now
            try:
                self.region = self.locate()
            except SourceError as exc:  # closed or minimised for a moment: keep the last place
                logger.warning("%s; capturing the last known place", exc)
        return super().read()


def _locate_x11(title: str) -> Region:
    xdotool = shutil.which("xdotool")
    if xdotool is None:
        raise SourceError("window capture on Linux needs xdotool and an X11 session (sudo apt install xdotool); "
                          "or use screen:X,Y,W,H")
    if not os.environ.get("DISPLAY"):
        raise SourceError("window capture needs an X11 display (DISPLAY is not set)")
    pattern = "(?i)" + re.escape(title)
    found = _run([xdotool, "search", "--onlyvisible", "--name", pattern])
    ids = [line for line in found.split() if line.isdigit()]
    if not ids:
        raise SourceError(f"no visible window whose title contains {title!r}")
    shell = _run([xdotool, "getwindowgeometry", "--shell", ids[0]])
    values = dict(line.split("=", 1) for line in shell.splitlines() if "=" in line)
    try:
        region = Region(int(values["X"]), int(values["Y"]), int(values["WIDTH"]), int(values["HEIGHT"]))
    except (KeyError, ValueError):
        raise SourceError(f"xdotool gave no geometry for the window {title!r}: {shell.strip()!r}") from None
    if region.width < 1 or region.height < 1:
        raise SourceError(f"the window {title!r} has no area (minimised?)")
    return region


def _run(command: list[str]) -> str:
    try:
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SourceError(f"{Path(command[0]).name} failed: {exc}") from None
    return done.stdout  # xdotool search exits 1 when nothing matches: the empty output says that


def _locate_win32(title: str) -> Region:  # pragma: no cover - Windows only
    import ctypes
    from ctypes import wintypes

    user32 = ctypes.windll.user32  # type: ignore[attr-defined]
    try:
        user32.SetProcessDPIAware()  # window rectangles in physical pixels, as mss grabs them
    except AttributeError:
        pass
    wanted = title.lower()
    found: list[int] = []

    @ctypes.WINFUNCTYPE(wintypes.BOOL, wintypes.HWND, wintypes.LPARAM)
    def visit(hwnd: int, _: int) -> bool:
        if not user32.IsWindowVisible(hwnd) or user32.IsIconic(hwnd):
            return True
        length = user32.GetWindowTextLengthW(hwnd)
        if length == 0:
            return True
        buffer = ctypes.create_unicode_buffer(length + 1)
        user32.GetWindowTextW(hwnd, buffer, length + 1)
        if wanted in buffer.value.lower():
            found.append(hwnd)
            return False
        return True

    user32.EnumWindows(visit, 0)
    if not found:
        raise SourceError(f"no visible window whose title contains {title!r}")
    rect = wintypes.RECT()
    user32.GetWindowRect(found[0], ctypes.byref(rect))
    return Region(rect.left, rect.top, rect.right - rect.left, rect.bottom - rect.top)
