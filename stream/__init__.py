"""The stream engine: Sana-Sprint img2img for live video (pure math and state; no HTTP, no threads).

The names below load on first use, so that torch-free modules (``stream.config``, ``stream.live_settings``) can be
imported by the command line and the camera bridge without loading torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stream.config import CfgType, StreamConfig
    from stream.engine import DEFAULT_STREAM, FrameKind, FrameResult, StreamEngine
    from stream.exceptions import ModelNotFoundError, UnknownStreamError
    from stream.state import StreamSettings

_HOMES = {
    "DEFAULT_STREAM": "stream.engine",
    "CfgType": "stream.config",
    "FrameKind": "stream.engine",
    "FrameResult": "stream.engine",
    "ModelNotFoundError": "stream.exceptions",
    "StreamConfig": "stream.config",
    "StreamEngine": "stream.engine",
    "StreamSettings": "stream.state",
    "UnknownStreamError": "stream.exceptions",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'stream' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
