"""Errors of the camera bridge. Each message is one line meant for the user as it is: what failed and what
to do about it. The command logs it and exits 1."""

from __future__ import annotations


class BridgeError(RuntimeError):
    """A failure the bridge cannot recover from (unreachable server, refused offer, missing device)."""


class SourceError(BridgeError):
    """The capture source cannot be opened or stopped delivering frames."""


class SinkError(BridgeError):
    """The output (virtual camera, preview window, recording directory) cannot be opened or written."""


class SinkClosed(Exception):
    """The user closed the output (the preview window): the bridge stops normally."""
