"""Capture sources for the camera bridge. Each yields RGB uint8 frames of shape (H, W, 3).

    camera:0            an OpenCV camera device by index (or camera:/dev/video2 by path)
    file:clip.mp4       a video file, decoded with PyAV (``loop=True`` starts it over at the end)
    screen              the primary monitor; screen:X,Y,W,H a region of the virtual screen (needs ``mss``)
    window:TITLE        the screen region of the first visible window whose title contains TITLE (needs
                        ``mss``; on Linux/X11 also ``xdotool``, on Windows nothing else; not on macOS)

Sources do no pacing of their own except a camera's natural blocking read: the bridge's reader thread calls
``read()`` once per tick of the target frame rate. ``open``, ``read`` and ``close`` are called on that one
thread (mss handles are bound to the thread that made them).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bridge.errors import SourceError

logger = logging.getLogger(__name__)

MSS_HINT = "pip install mss (or pip install 'sana-stream[bridge]')"


class FrameSource(ABC):
    """A local source of RGB frames."""

    native_fps: float | None = None  # the source's own frame rate where it has one (video files, cameras)

    def open(self) -> None:
        """Acquires the device or file; raises ``SourceError`` with a clear message when it cannot."""

    @abstractmethod
    def read(self) -> np.ndarray | None:
        """The next frame, (H, W, 3) uint8 RGB; None when the source has ended (a file without loop)."""

    def close(self) -> None:
        """Releases the device or file; safe to call twice."""

    @abstractmethod
    def describe(self) -> str:
        """A short name for messages: 'camera 0', 'file clip.mp4', 'screen 0,0 640x480'."""

    def __enter__(self) -> FrameSource:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- camera ------------------------------------------------------------------------------------------------


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


# --- video file --------------------------------------------------------------------------------------------


class VideoFileSource(FrameSource):
    """A video file decoded with PyAV (any container and codec FFmpeg reads). With ``loop`` it starts over."""

    def __init__(self, path: str | Path, loop: bool = False) -> None:
        self.path, self.loop = Path(path), loop
        self._container: Any = None
        self._frames: Iterator[Any] | None = None

    def describe(self) -> str:
        return f"file {self.path}"

    def open(self) -> None:
        if not self.path.is_file():
            raise SourceError(f"no video file at {self.path}")
        self._start()
        stream = self._container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        self.native_fps = float(rate) if rate else None

    def _start(self) -> None:
        import av

        self.close()
        try:
            self._container = av.open(str(self.path))
        except (av.FFmpegError, OSError) as exc:
            raise SourceError(f"cannot read the video file {self.path}: {exc}") from None
        if not self._container.streams.video:
            self.close()
            raise SourceError(f"{self.path} has no video stream")
        self._frames = self._container.decode(video=0)

    def read(self) -> np.ndarray | None:
        import av

        if self._frames is None:
            raise SourceError(f"{self.describe()} is not open")
        for attempt in range(2):
            try:
                frame = next(self._frames)
                return frame.to_ndarray(format="rgb24")
            except StopIteration:
                if not self.loop:
                    return None
                if attempt == 0:
                    self._start()
            except av.FFmpegError as exc:
                raise SourceError(f"cannot decode {self.path}: {exc}") from None
        raise SourceError(f"{self.path} has no decodable video frames")

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
            self._frames = None


# --- screen region and window ------------------------------------------------------------------------------


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


# --- source specs ------------------------------------------------------------------------------------------


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

