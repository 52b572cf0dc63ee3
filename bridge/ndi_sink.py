"""The camera bridge's NDI output (``sana-stream camera --ndi NAME``): the restyled frames as the NDI source NAME,
transparent where ``--keep-background`` keyed the background (``rtc.ndi``). The source is opened once, at the
stream's size and frame rate, and stays up across reconnects to the server, so a receiver (OBS) keeps it."""

from __future__ import annotations

import numpy as np

from bridge.errors import SinkError
from bridge.sinks import FrameSink
from rtc.ndi import NdiSender, NdiUnavailable


class NdiSink(FrameSink):
    def __init__(self, name: str) -> None:
        self.name = name
        self._sender: NdiSender | None = None

    def describe(self) -> str:
        return f"NDI source {self.name!r}"

    def open(self, width: int, height: int, fps: float) -> None:
        try:
            self._sender = NdiSender(self.name, width, height, fps)
        except NdiUnavailable as exc:
            raise SinkError(str(exc)) from None

    def send(self, image: np.ndarray, alpha: np.ndarray | None = None) -> None:
        if self._sender is None:
            raise SinkError("the NDI source is not open")
        self._sender.send(image, alpha)

    def close(self) -> None:
        if self._sender is not None:
            self._sender.close()
            self._sender = None
