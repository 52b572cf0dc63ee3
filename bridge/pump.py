"""Reads the bridge's source on a thread of its own, paced to the frame rate sent; the newest frame wins, so a
slow sender never makes the source fall behind."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

import numpy as np
from aiortc.mediastreams import MediaStreamError

from bridge.background import ColorKey
from bridge.errors import SourceError
from bridge.sources import FrameSource
from stream.frames import fit_frame


@dataclass
class Captured:
    seq: int
    image: np.ndarray
    mask: np.ndarray | None


class FramePump:
    """Reads the source on its own thread, one frame per tick of ``fps``, fitted to ``size``; the newest frame
    wins. ``open`` runs the source's ``open`` on that thread and raises what it raised."""

    def __init__(self, source: FrameSource) -> None:
        self.source = source
        self.latest: Captured | None = None
        self.ended = False
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._opened = threading.Event()
        self._go = threading.Event()
        self._stop = threading.Event()
        self._fps = 30.0
        self._size = (512, 512)
        self._key: ColorKey | None = None
        self._thread: threading.Thread | None = None

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wakeup = self._loop.create_future()
        self._thread = threading.Thread(target=self._run, name="bridge-source", daemon=True)
        self._thread.start()
        await asyncio.to_thread(self._opened.wait)
        if self.error is not None:
            raise self.error

    def start(self, fps: float, size: tuple[int, int], key: ColorKey | None) -> None:
        self._fps, self._size, self._key = fps, size, key
        self._go.set()

    def _run(self) -> None:
        try:
            self.source.open()
        except BaseException as exc:  # noqa: BLE001 - raised by open() on the loop
            self.error = exc
            self._opened.set()
            return
        self._opened.set()
        try:
            self._go.wait()
            period = 1.0 / self._fps
            next_tick = time.monotonic()
            seq = 0
            while not self._stop.is_set():
                frame = self.source.read()
                if frame is None:
                    break
                width, height = self._size
                image = fit_frame(frame, width, height)
                mask = self._key.mask(image) if self._key is not None else None
                seq += 1
                self.latest = Captured(seq, image, mask)
                self._notify()
                next_tick += period
                delay = next_tick - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
                else:
                    next_tick = time.monotonic()  # behind (a slow camera): don't try to catch up
        except BaseException as exc:  # noqa: BLE001 - read by the bridge
            self.error = exc if isinstance(exc, SourceError) else SourceError(f"{self.source.describe()}: {exc}")
        finally:
            self.ended = True
            self._notify()
            self.source.close()

    def _notify(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._wake)
            except RuntimeError:  # the loop closed in between
                pass

    def _wake(self) -> None:
        assert self._loop is not None
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)
        self._wakeup = self._loop.create_future()

    async def next_after(self, seq: int) -> Captured:
        """The newest frame later than ``seq``; raises MediaStreamError when the source has ended."""
        while True:
            latest = self.latest
            if latest is not None and latest.seq > seq:
                return latest
            if self.ended:
                raise MediaStreamError
            assert self._wakeup is not None
            await asyncio.shield(self._wakeup)

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._go.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
