"""Defaults from the environment: every option of ``serve`` and the camera's server, token and source can come
from a ``SANA_STREAM_<OPTION>`` variable (``--max-peers`` from ``SANA_STREAM_MAX_PEERS``)."""

from __future__ import annotations

import os

PREFIX = "SANA_STREAM_"


def env(name: str, default: str | None = None) -> str | None:
    """The value of ``SANA_STREAM_<NAME>`` (upper case, ``-`` as ``_``), else ``default``."""
    return os.environ.get(f"{PREFIX}{name.upper().replace('-', '_')}", default)
