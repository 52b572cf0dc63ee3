"""Capture sources for the camera bridge. Each yields RGB uint8 frames of shape (H, W, 3).

    camera:0            an OpenCV camera device by index (or camera:/dev/video2 by path)
    file:clip.mp4       a video file, decoded with PyAV (``loop=True`` starts it over at the end)
    screen              the primary monitor; screen:X,Y,W,H a region of the virtual screen (needs ``mss``)
    window:TITLE        the screen region of a visible window whose title contains TITLE, followed as it moves
                        (needs ``mss``; on Linux/X11 also ``xdotool``, on Windows nothing else; not on macOS)

Sources do no pacing of their own except a camera's natural blocking read: the bridge's reader thread calls
``read()`` once per tick of the target frame rate. ``open``, ``read`` and ``close`` are called on that one
thread (mss handles are bound to the thread that made them).
"""

from bridge.sources.base import FrameSource
from bridge.sources.camera import CameraSource
from bridge.sources.screen import MSS_HINT, Region, ScreenSource, import_mss
from bridge.sources.spec import SOURCE_FORMS, SourceSpec, parse_source
from bridge.sources.video_file import VideoFileSource
from bridge.sources.window import WindowSource

__all__ = ["MSS_HINT", "SOURCE_FORMS", "CameraSource", "FrameSource", "Region", "ScreenSource", "SourceSpec",
           "VideoFileSource", "WindowSource", "import_mss", "parse_source"]
