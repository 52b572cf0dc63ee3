"""Outputs of the camera bridge: a virtual camera (pyvirtualcam), a preview window (OpenCV) or a recording
(frames kept in memory and/or PNG files). ``open``, ``send`` and ``close`` are called on one thread: a worker
thread of the sink's own, or the event loop's thread for an ``inline`` sink; see ``SinkWorker``."""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bridge.errors import SinkClosed, SinkError
from engines.install_hint import install_hint

logger = logging.getLogger(__name__)


class FrameSink(ABC):
    """Where restyled frames go."""

    inline = False  # True: called on the event loop's thread (macOS wants GUI calls on the main thread)

    @abstractmethod
    def open(self, width: int, height: int, fps: float) -> None:
        """Prepares for frames of this size; raises ``SinkError`` with a clear message when it cannot."""

    @abstractmethod
    def send(self, image: np.ndarray, alpha: np.ndarray | None = None) -> None:
        """One (H, W, 3) uint8 RGB frame; ``alpha`` (H, W) uint8 where the background was keyed. May raise
        ``SinkClosed`` when the user closed the output."""

    def close(self) -> None:
        """Releases the output; safe to call twice."""

    @abstractmethod
    def describe(self) -> str:
        ...


def virtual_camera_driver_hint(platform: str | None = None) -> str:
    """What to install for pyvirtualcam to find a virtual camera on this platform."""
    platform = platform or sys.platform
    if platform.startswith("linux"):
        return ("install and load v4l2loopback: sudo apt install v4l2loopback-dkms && sudo modprobe v4l2loopback "
                "devices=1 exclusive_caps=1 card_label=sana-stream")
    if platform == "darwin":
        return ("install OBS Studio 28 or newer and start its virtual camera once (Start Virtual Camera, then Stop; "
                "on macOS 13+ allow the OBS camera extension in System Settings)")
    return ("install OBS Studio 26 or newer and start its virtual camera once (Start Virtual Camera, then Stop), "
            "or install Unity Capture")


# the backends pyvirtualcam has on each platform (its camera.py registers only these there)
CAMERA_BACKENDS = {"linux": ("v4l2loopback",), "win32": ("obs", "unitycapture"), "darwin": ("obs",)}
ALL_CAMERA_BACKENDS = tuple(sorted({name for names in CAMERA_BACKENDS.values() for name in names}))


def check_camera_backend(backend: str | None, platform: str | None = None) -> None:
    """Raises ValueError, one line naming what this OS offers, for a backend pyvirtualcam lacks here (it would
    end in its own KeyError)."""
    platform = platform or sys.platform
    offered = next((names for prefix, names in CAMERA_BACKENDS.items() if platform.startswith(prefix)), ())
    if backend is not None and backend not in offered:
        here = " or ".join(offered) if offered else "none"
        raise ValueError(f"--camera-backend {backend} is not available on {platform}: pyvirtualcam offers {here} "
                         "there")


class VirtualCameraSink(FrameSink):
    """pyvirtualcam: OBS Virtual Camera on Windows and macOS, v4l2loopback on Linux (``device`` picks one of
    several, e.g. /dev/video10; ``backend`` forces obs, unitycapture or v4l2loopback)."""

    def __init__(self, device: str | None = None, backend: str | None = None) -> None:
        check_camera_backend(backend)
        self.device, self.backend = device, backend
        self._cam: Any = None
        self._size = (0, 0)

    def describe(self) -> str:
        return f"virtual camera {self._cam.device}" if self._cam is not None else "virtual camera"

    def open(self, width: int, height: int, fps: float) -> None:
        try:
            import pyvirtualcam
        except ImportError:
            raise SinkError("the virtual camera needs the pyvirtualcam package: pip install pyvirtualcam (or "
                            f"{install_hint('bridge')}), and a driver: {virtual_camera_driver_hint()}") from None
        try:
            self._cam = pyvirtualcam.Camera(width, height, fps, fmt=pyvirtualcam.PixelFormat.RGB,
                                            device=self.device, backend=self.backend)
        except (RuntimeError, ValueError, OSError) as exc:
            raise SinkError(f"no virtual camera available: {virtual_camera_driver_hint()} "
                            f"(pyvirtualcam said: {exc})") from None
        self._size = (width, height)
        logger.info("writing to virtual camera %s (%dx%d at %g fps)", self._cam.device, width, height, fps)

    def send(self, image: np.ndarray, alpha: np.ndarray | None = None) -> None:
        if self._cam is None:
            raise SinkError("the virtual camera is not open")
        width, height = self._size
        if image.shape[:2] != (height, width):  # the server changed size after a restart
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        self._cam.send(np.ascontiguousarray(image))

    def close(self) -> None:
        if self._cam is not None:
            self._cam.close()
            self._cam = None


class PreviewSink(FrameSink):
    """An OpenCV window; q or Esc (or closing the window) stops the bridge. Runs on the main thread (Cocoa on
    macOS refuses windows from other threads; imshow + waitKey(1) take a few milliseconds)."""

    inline = True

    def __init__(self, title: str = "sana-stream") -> None:
        self.title = title
        self._open = False

    def describe(self) -> str:
        return f"preview window {self.title!r}"

    def open(self, width: int, height: int, fps: float) -> None:
        if re.search(r"^\s*GUI:\s*NONE\s*$", cv2.getBuildInformation(), re.MULTILINE):
            raise SinkError("the preview window needs OpenCV with GUI support, and this one has none "
                            "(opencv-python-headless): pip uninstall -y opencv-python-headless && "
                            "pip install opencv-python; or use --record DIR or --virtual-camera")
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise SinkError("the preview window needs a display (DISPLAY is not set); use --record DIR or "
                            "--virtual-camera")
        try:
            cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)
            cv2.resizeWindow(self.title, width, height)
        except cv2.error as exc:
            raise SinkError(f"cannot open the preview window: {str(exc).strip().splitlines()[-1]}") from None
        self._open = True

    def send(self, image: np.ndarray, alpha: np.ndarray | None = None) -> None:
        cv2.imshow(self.title, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27):
            raise SinkClosed("preview closed with the keyboard")
        try:
            if cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
                raise SinkClosed("preview window closed")
        except cv2.error:
            raise SinkClosed("preview window closed") from None

    def close(self) -> None:
        if self._open:
            self._open = False
            try:
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)
            except cv2.error:
                pass


class RecordingSink(FrameSink):
    """Keeps the newest ``keep`` frames in ``frames`` (for tests and scripts) and, with a ``directory``, writes
    each as frame_000001.png, ... (RGBA with a transparent background where one was keyed)."""

    def __init__(self, directory: str | Path | None = None, keep: int = 64) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.keep = keep
        self.frames: list[np.ndarray] = []
        self.alphas: list[np.ndarray | None] = []
        self.count = 0
        self.size: tuple[int, int] | None = None
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"recording in {self.directory}" if self.directory else "recording in memory"

    def open(self, width: int, height: int, fps: float) -> None:
        self.size = (width, height)
        if self.directory is not None:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise SinkError(f"cannot create the recording directory {self.directory}: {exc}") from None

    def send(self, image: np.ndarray, alpha: np.ndarray | None = None) -> None:
        with self._lock:
            self.count += 1
            index = self.count
            self.frames.append(image)
            self.alphas.append(alpha)
            del self.frames[:-self.keep], self.alphas[:-self.keep]
        if self.directory is not None:
            bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
            if alpha is not None:
                bgr = np.dstack([bgr, alpha])
            path = self.directory / f"frame_{index:06d}.png"
            if not cv2.imwrite(str(path), bgr):
                raise SinkError(f"cannot write {path}")

    def snapshot(self) -> list[np.ndarray]:
        with self._lock:
            return list(self.frames)


class SinkWorker:
    """Runs a sink on its own thread: ``open`` waits for the result, ``put`` never blocks (the newest frame
    wins when the sink is slower than the stream). An error of the sink is kept in ``error``."""

    def __init__(self, sink: FrameSink) -> None:
        self.sink = sink
        self.error: BaseException | None = None
        self.sent = 0
        self._cond = threading.Condition()
        self._pending: tuple[np.ndarray, np.ndarray | None] | None = None
        self._opened = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None

    def start(self, width: int, height: int, fps: float) -> None:
        """Opens the sink on the worker thread (an ``inline`` sink: here); raises what ``open`` raised."""
        if self.sink.inline:
            self.sink.open(width, height, fps)
            return
        self._thread = threading.Thread(target=self._run, args=(width, height, fps), name="bridge-sink", daemon=True)
        self._thread.start()
        self._opened.wait()
        if self.error is not None:
            self._thread.join()
            raise self.error

    def put(self, image: np.ndarray, alpha: np.ndarray | None = None) -> None:
        if self.sink.inline:
            if self.error is None:
                try:
                    self.sink.send(image, alpha)
                    self.sent += 1
                except BaseException as exc:  # noqa: BLE001 - read by the bridge
                    self.error = exc
            return
        with self._cond:
            self._pending = (image, alpha)
            self._cond.notify()

    def _run(self, width: int, height: int, fps: float) -> None:
        try:
            self.sink.open(width, height, fps)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller of start()
            self.error = exc
            self._opened.set()
            return
        self._opened.set()
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._pending is not None or self._closing)
                    if self._pending is None:
                        return
                    image, alpha = self._pending
                    self._pending = None
                self.sink.send(image, alpha)
                self.sent += 1
        except BaseException as exc:  # noqa: BLE001 - read by the bridge
            self.error = exc
        finally:
            self.sink.close()

    def close(self, timeout: float = 5.0) -> None:
        if self.sink.inline:
            self.sink.close()
            return
        with self._cond:  # a frame still pending is sent first
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
