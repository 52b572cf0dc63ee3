"""The camera bridge: ``sana-stream camera`` captures a local source (camera, screen region, window, video
file), sends it to a sana-stream server over WebRTC and writes the restyled frames to a virtual camera, a
preview window or PNG files.

``bridge.sources`` (one module per kind of source) and ``bridge.sinks`` are light (numpy, OpenCV, PyAV). The
WebRTC side (aiortc, httpx) is imported only by the command itself: ``bridge.bridge`` (the reconnect loop),
``bridge.pump`` (the source's reader thread), ``bridge.track`` (the video track sent) and ``bridge.server_api``
(the HTTP calls and the server's refusals); ``bridge.background`` keeps a colour-keyed background.
"""

from bridge.errors import BridgeError, SinkClosed, SinkError, SourceError

__all__ = ["BridgeError", "SinkClosed", "SinkError", "SourceError"]
