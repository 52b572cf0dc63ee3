"""Visible X11 windows, their titles and places, read with Debian's xdotool.

Titles are matched in Python, not by xdotool: its ``--name`` takes a POSIX extended regular expression, and a
title such as ``Avatar [VTube] (1)`` would have to be escaped for ERE, whose case-insensitive matching of
non-ASCII letters depends on the C library's locale. So the lookup lists every visible titled window once
(``search --onlyvisible --name .``), reads each one's title and geometry, and ``choose_window`` picks; after that
only the chosen window's geometry is read, one short xdotool run per frame.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from bridge.errors import SourceError
from bridge.sources.screen import Region
from bridge.sources.window_list import Window

NO_X11_HINT = "or use screen:X,Y,W,H"


class XdotoolWindows:
    """The visible windows of the X server at $DISPLAY, through the xdotool command."""

    def __init__(self) -> None:
        xdotool = shutil.which("xdotool")
        if xdotool is None:
            raise SourceError("window capture on Linux needs xdotool and an X11 session (sudo apt install xdotool); "
                              f"{NO_X11_HINT}")
        if not os.environ.get("DISPLAY"):
            wayland = " (a Wayland session without XWayland)" if os.environ.get("WAYLAND_DISPLAY") else ""
            raise SourceError(f"window capture needs an X11 display and DISPLAY is not set{wayland}; {NO_X11_HINT}")
        self.xdotool = xdotool

    def visible(self) -> list[Window]:
        """Every mapped window with a title (xdotool's --onlyvisible: mapped, and so not minimised)."""
        found = self._run("search", "--onlyvisible", "--name", ".")
        if found is None:  # nothing matched: exit status 1 and nothing on stderr
            return []
        windows = []
        for text in found.split():
            described = self._run("getwindowname", text, "getwindowgeometry", "--shell", text)
            if described is not None:  # None: it closed since the search
                windows.append(_parse_window(described))
        return windows

    def region_of(self, window_id: int) -> Region | None:
        """Where the window is now; None when it no longer exists."""
        shell = self._run("getwindowgeometry", "--shell", str(window_id))
        return None if shell is None else _parse_window(shell).region

    def _run(self, *args: str) -> str | None:
        """xdotool's standard output; None for "nothing found" or a window that no longer exists (exit status 1
        with nothing or only BadWindow on stderr). Any other failure is a SourceError with xdotool's own words."""
        try:
            done = subprocess.run([self.xdotool, *args], check=False, capture_output=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SourceError(f"xdotool {args[0]} failed: {exc}") from None
        stdout, stderr = (stream.decode("utf-8", "replace") for stream in (done.stdout, done.stderr))
        if done.returncode == 0:
            return stdout
        if done.returncode == 1 and (not stderr.strip() or "BadWindow" in stderr):
            return None
        said = "; ".join(line.strip() for line in stderr.splitlines() if line.strip()) or "nothing on stderr"
        raise SourceError(f"xdotool {args[0]} failed with exit status {done.returncode} on DISPLAY="
                          f"{os.environ.get('DISPLAY')}: {said}")


def _parse_window(text: str) -> Window:
    """``getwindowname`` lines (a title may hold newlines) followed by ``getwindowgeometry --shell``."""
    lines = text.rstrip("\n").split("\n")
    start = max((i for i, line in enumerate(lines) if line.startswith("WINDOW=")), default=-1)
    values = dict(line.split("=", 1) for line in lines[start:] if "=" in line) if start >= 0 else {}
    try:
        region = Region(int(values["X"]), int(values["Y"]), int(values["WIDTH"]), int(values["HEIGHT"]))
        return Window(int(values["WINDOW"]), "\n".join(lines[:start]), region)
    except (KeyError, ValueError):
        raise SourceError(f"xdotool gave no window geometry: {text.strip()!r}") from None
