"""The stream engine: Sana-Sprint img2img for live video (pure math and state; no HTTP, no threads).

The names below load on first use (PEP 562), so that a light module such as ``stream.frames`` imports without
torch and diffusers: the camera bridge fits frames with it on machines that have no torch.
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
    "CfgType": "stream.config",
    "StreamConfig": "stream.config",
    "DEFAULT_STREAM": "stream.engine",
    "FrameKind": "stream.engine",
    "FrameResult": "stream.engine",
    "StreamEngine": "stream.engine",
    "ModelNotFoundError": "stream.exceptions",
    "UnknownStreamError": "stream.exceptions",
    "StreamSettings": "stream.state",
}

__all__ = [  # the keys of _HOMES, spelled out for linters and readers
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


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:  # also how `from stream import trigflow` falls through to the submodule
        raise AttributeError(f"module 'stream' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
