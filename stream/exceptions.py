"""Errors of the stream engine. Each carries the data that explains it."""

from __future__ import annotations

# raised by the loaders below us; named here for callers
from engines.exceptions import IncompatibleWeightsError, ModelNotFoundError

__all__ = ["IncompatibleWeightsError", "ModelNotFoundError", "UnknownStreamError"]


class UnknownStreamError(KeyError):
    """No stream with this id is registered on the engine."""

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        super().__init__(stream_id)

    def __str__(self) -> str:
        return f"unknown stream {self.stream_id!r}"


class StreamExistsError(ValueError):
    """A stream with this id is already registered (``FramePipeline.open_stream``)."""

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        super().__init__(stream_id)

    def __str__(self) -> str:
        return f"stream {self.stream_id!r} is already registered"

