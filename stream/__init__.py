"""The stream engine: Sana-Sprint img2img for live video (pure math and state; no HTTP, no threads)."""

from stream.config import CfgType, StreamConfig
from stream.engine import DEFAULT_STREAM, FrameKind, FrameResult, StreamEngine
from stream.exceptions import ModelNotFoundError, UnknownStreamError
from stream.state import StreamSettings

__all__ = [
    "DEFAULT_STREAM",
    "CfgType",
    "FrameKind",
    "FrameResult",
    "ModelNotFoundError",
    "StreamConfig",
    "StreamEngine",
    "StreamSettings",
    "UnknownStreamError",
]
