"""The camera bridge's outputs (virtual camera, preview, recording), the worker that runs them, and the colour key."""

from __future__ import annotations

import sys
import threading

import cv2
import numpy as np
import pytest

from bridge.background import KeyMasks, parse_background
from bridge.errors import SinkClosed, SinkError
from bridge.sinks import (ALL_CAMERA_BACKENDS, CAMERA_BACKENDS, PreviewSink, RecordingSink, SinkWorker,
                          VirtualCameraSink, check_camera_backend, virtual_camera_driver_hint)
from tests.support.bridge import SIZE, scene


def test_virtual_camera_messages_name_the_driver(monkeypatch):
    for platform, driver in (("linux", "v4l2loopback"), ("win32", "OBS Studio"), ("darwin", "OBS Studio")):
        assert driver in virtual_camera_driver_hint(platform)
    monkeypatch.setitem(sys.modules, "pyvirtualcam", None)  # not installed
    with pytest.raises(SinkError, match="pip install pyvirtualcam.*" + virtual_camera_driver_hint().split(":")[0]):
        VirtualCameraSink().open(SIZE, SIZE, 30)


@pytest.mark.parametrize("backend", ALL_CAMERA_BACKENDS)
def test_each_camera_backend_is_accepted_only_where_pyvirtualcam_has_it(backend):
    for platform, offered in CAMERA_BACKENDS.items():
        if backend in offered:
            check_camera_backend(backend, platform)
            continue
        here = " or ".join(offered)
        with pytest.raises(ValueError, match=f"^--camera-backend {backend} is not available on {platform}: "
                                             f"pyvirtualcam offers {here} there$"):
            check_camera_backend(backend, platform)
    check_camera_backend(None, "linux")  # none asked for: pyvirtualcam picks


def test_the_backend_table_is_pyvirtualcams_own_on_this_platform():
    import pyvirtualcam.camera

    assert set(pyvirtualcam.camera.BACKENDS) == set(CAMERA_BACKENDS["linux"])


def test_preview_without_gui_support_or_a_display_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "  GUI:                           NONE\n")
    with pytest.raises(SinkError, match="needs OpenCV with GUI support.*pip install opencv-python"):
        PreviewSink().open(SIZE, SIZE, 30)
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "  GUI:                           GTK3\n")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    with pytest.raises(SinkError, match="needs a display"):
        PreviewSink().open(SIZE, SIZE, 30)


def test_recording_sink_writes_transparent_background(tmp_path):
    sink = RecordingSink(tmp_path)
    sink.open(4, 2, 30)
    image = np.full((2, 4, 3), 100, np.uint8)
    alpha = np.array([[0, 255, 255, 255], [0, 0, 255, 255]], np.uint8)
    sink.send(image, alpha)
    png = cv2.imread(str(tmp_path / "frame_000001.png"), cv2.IMREAD_UNCHANGED)
    assert png.shape == (2, 4, 4) and np.array_equal(png[..., 3], alpha)


def test_color_key_marks_and_paints_the_background():
    key = parse_background("key:#00ff00", tolerance=60)
    frame = scene()
    mask = key.mask(frame)
    assert mask[:, :32].all() and not mask[:, 40:].any()
    out, alpha = key.apply(np.zeros((64, 64, 3), np.uint8), mask)  # a mask of another size is fitted
    assert (out[:, :16] == (0, 255, 0)).all() and (alpha[:, :16] == 0).all() and (alpha[:, 20:] == 255).all()
    wide = np.zeros((128, 256), bool)
    wide[:, :96] = True  # the left 96 of 256 columns; the server keeps the centre 128 of them
    _, alpha = key.apply(np.zeros((64, 64, 3), np.uint8), wide)
    assert (alpha[:, :15] == 0).all() and (alpha[:, 17:] == 255).all()
    assert parse_background("key:magenta").color == (255, 0, 255)
    with pytest.raises(ValueError):
        parse_background("alpha")


class HeldSink(RecordingSink):
    """Holds its first send until ``release`` is set: a sink slower than the stream, without timing."""

    def __init__(self) -> None:
        super().__init__()
        self.sending, self.release = threading.Event(), threading.Event()

    def send(self, image, alpha=None):
        self.sending.set()
        assert self.release.wait(10)
        super().send(image, alpha)


class ClosingSink(RecordingSink):
    inline = True

    def send(self, image, alpha=None):
        super().send(image, alpha)
        if self.count == 2:
            raise SinkClosed("closed by the user")


def test_sink_worker_keeps_the_newest_frame_and_reports_a_closed_sink():
    sink = HeldSink()
    worker = SinkWorker(sink)
    worker.start(4, 4, 30)
    frames = [np.full((4, 4, 3), i, np.uint8) for i in range(10)]
    worker.put(frames[0])
    assert sink.sending.wait(10)  # the sink is busy with frame 0 while frames 1-9 arrive
    for frame in frames[1:]:
        worker.put(frame)
    sink.release.set()
    worker.close()  # the frame still pending is sent before the sink closes
    assert [f[0, 0, 0] for f in sink.frames] == [0, 9]  # slower than the stream: frames 1-8 dropped

    inline = SinkWorker(ClosingSink())
    inline.start(4, 4, 30)
    for frame in frames[:3]:
        inline.put(frame)
    assert isinstance(inline.error, SinkClosed) and inline.sink.count == 2
    inline.close()

    failing = SinkWorker(VirtualCameraSink(device="/dev/nonexistent-video"))
    with pytest.raises(SinkError, match="no virtual camera|pyvirtualcam"):
        failing.start(4, 4, 30)


def test_key_masks_are_found_by_the_pts_of_the_frame_an_output_shows():
    masks = KeyMasks(tolerance=10, keep=3)
    assert masks.for_pts(0) is None
    for pts in (0, 100, 200, 300):  # the oldest goes beyond ``keep``
        masks.remember(pts, np.full((2, 2), pts, np.int32))
    assert masks.for_pts(200)[0, 0] == 200  # exact
    assert masks.for_pts(105)[0, 0] == 100  # nearest within the tolerance
    assert masks.for_pts(0)[0, 0] == 300 and masks.for_pts(None)[0, 0] == 300  # forgotten, unknown: the newest
