"""Publishing restyled frames as an NDI source (cyndilib, the ``ndi`` extra), for the camera bridge's ``--ndi`` and
the server's ``serve --ndi``. cyndilib's wheels carry the NDI runtime (libndi), so nothing else is installed; it is
imported only when a sender is made. Frames go out as BGRA: the alpha plane is 0 where the bridge keyed the
background and 255 elsewhere (receivers such as OBS's NDI source then show the background transparent).

NDI finds sources by mDNS multicast. Where there is none, an ``ndi-config.v1.json`` in ``NDI_CONFIG_DIR`` can
point discovery elsewhere (docs/bridge.md#ndi); the runtime reads it when it loads."""

from __future__ import annotations

import logging
import threading
from fractions import Fraction
from types import ModuleType

import cv2
import numpy as np

from engines.install_hint import install_hint

logger = logging.getLogger(__name__)



class NdiUnavailable(RuntimeError):
    """The NDI runtime cannot be loaded here."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"NDI output is not available: {reason}; install it with {install_hint('ndi')}")
        self.reason = reason


def load_ndi() -> ModuleType:
    """cyndilib with its NDI runtime loaded; raises NdiUnavailable saying why not."""
    try:
        import cyndilib
    except (ImportError, OSError) as exc:  # not installed, or libndi would not load (a wheel for another platform)
        raise NdiUnavailable(f"cyndilib cannot be imported ({exc})") from None
    return cyndilib


def frame_rate(fps: float) -> Fraction:
    """``fps`` as the fraction NDI announces: 30 -> 30/1, 29.97 -> 30000/1001."""
    if not 0 < fps <= 240:
        raise ValueError(f"fps must lie in (0, 240], got {fps}")
    ntsc = round(fps * 1.001)  # 29.97 -> 30: the NTSC rates are N * 1000/1001
    if abs(fps - round(fps)) > 1e-6 and abs(fps - ntsc * 1000 / 1001) < 0.005:
        return Fraction(ntsc * 1000, 1001)
    return Fraction(fps).limit_denominator(1000)


def to_bgra(image: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """(H, W, 3) RGB and an optional (H, W) alpha -> (H, W, 4) BGRA, opaque where ``alpha`` is None."""
    bgra = cv2.cvtColor(image, cv2.COLOR_RGB2BGRA)
    if alpha is not None:
        bgra[..., 3] = alpha
    return bgra


class NdiSender:
    """One NDI source called ``name`` (receivers list it as ``HOST (name)``), announcing ``width`` x ``height`` at
    ``fps``. ``send`` takes RGB frames as they come (the stream sets the pace; NDI does not clock them) and fits a
    frame of another size to the announced one, so receivers never see the source change."""

    def __init__(self, name: str, width: int, height: int, fps: float) -> None:
        if not name.strip():
            raise ValueError("the NDI source name must not be empty")
        if width < 1 or height < 1:
            raise ValueError(f"the NDI frame size must be positive, got {width}x{height}")
        cyndilib = load_ndi()
        self.name, self.size, self.fps = name, (width, height), fps
        self.sent = 0
        self._lock = threading.Lock()
        frame = cyndilib.VideoSendFrame()
        frame.set_resolution(width, height)
        frame.set_frame_rate(frame_rate(fps))
        frame.set_fourcc(cyndilib.FourCC.BGRA)
        self._sender = cyndilib.Sender(name, clock_video=False)
        self._sender.set_video_frame(frame)
        try:
            self._sender.open()
        except MemoryError:  # cyndilib's word for NDIlib_send_create returning NULL
            raise NdiUnavailable("the NDI runtime could not create a sender (NDIlib_send_create failed)") from None
        logger.info("publishing NDI source %r (%dx%d at %g fps)", name, width, height, fps)

    def send(self, image: np.ndarray, alpha: np.ndarray | None = None) -> None:
        width, height = self.size
        if image.shape[:2] != (height, width):  # the server changed size after a restart
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
            if alpha is not None:
                alpha = cv2.resize(alpha, (width, height), interpolation=cv2.INTER_NEAREST)
        with self._lock:
            if self._sender is None:
                raise RuntimeError(f"the NDI source {self.name!r} is closed")
            self._sender.write_video(to_bgra(image, alpha).ravel())
            self.sent += 1

    def close(self) -> None:
        """Takes the source off the network; safe to call twice."""
        with self._lock:
            sender, self._sender = self._sender, None
        if sender is not None:
            sender.close()
            logger.info("NDI source %r closed after %d frames", self.name, self.sent)
