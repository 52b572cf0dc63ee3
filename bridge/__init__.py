"""The camera bridge: ``sana-stream camera`` captures a local source (camera, screen region, window, video
file), sends it to a sana-stream server over WebRTC and writes the restyled frames to a virtual camera, a
preview window or PNG files.

``bridge.sources`` and ``bridge.sinks`` are light (numpy, OpenCV, PyAV); ``bridge.bridge`` holds the WebRTC
loop (aiortc, httpx) and is imported only by the command itself.
"""

from bridge.errors import BridgeError, SinkClosed, SinkError, SourceError

__all__ = ["BridgeError", "SinkClosed", "SinkError", "SourceError"]
