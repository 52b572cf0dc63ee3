"""The camera bridge's capture sources: ``--source`` specs, a video file, how ``window:TITLE`` picks among windows,
and the Windows window list with a stand-in user32 (Windows cannot run here). Screen and window capture on X11
run on a real X server in test_bridge_x11.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bridge.errors import SourceError
from bridge.sources import Region, ScreenSource, VideoFileSource, WindowSource, parse_source
from bridge.sources.window import Win32Windows
from bridge.sources.window_list import Window, choose_window
from tests.support.bridge import SIZE, write_clip


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4")


def test_source_specs():
    assert parse_source("camera:2").value == "2" and parse_source("camera").value == "0"
    assert parse_source("file:/tmp/a:b.mp4").value == "/tmp/a:b.mp4"
    assert parse_source("screen:10,20,300,200").region == Region(10, 20, 300, 200)
    assert parse_source("screen").region is None
    assert parse_source("window:VSeeFace").value == "VSeeFace"
    for bad in ("webcam", "file:", "screen:0,0,0,10", "window:"):
        with pytest.raises(ValueError):
            parse_source(bad)


def test_video_file_source_loops(clip):
    source = VideoFileSource(clip, loop=True)
    with source:
        frames = [source.read() for _ in range(45)]  # 30 in the file
    assert all(f is not None and f.shape == (SIZE, SIZE, 3) for f in frames)
    assert source.native_fps == pytest.approx(30)
    with VideoFileSource(clip) as once:
        count = 0
        while once.read() is not None:
            count += 1
    assert count == 30


def test_a_title_means_an_exact_title_first_then_the_largest_window():
    def window(id_: int, title: str, width: int, height: int) -> Window:
        return Window(id_, title, Region(0, 0, width, height))

    small, large = window(3, "VSeeFace", 100, 100), window(2, "VSeeFace - Settings", 300, 300)
    assert choose_window("vseeface", [large, small]) is small  # an exact title first
    assert choose_window("vsee", [small, large]) is large  # else the largest
    twin = window(1, "VSeeFace - Settings", 300, 300)
    assert choose_window("settings", [large, twin]) is twin  # then the lowest id
    assert choose_window("VSeeFace", [window(4, "VSeeFace", 0, 0)]) is None  # no area: not a window to capture
    assert choose_window("Warudo", [small, large]) is None


class FakeUser32:
    """Stands in for Windows' user32 (this suite runs on Linux, where the Win32 path cannot run; the X11 path is
    tested on a real X server in test_bridge_x11.py): three top-level windows, one minimised."""

    windows = {11: ("VTube Studio", (10, 20, 650, 500), False), 12: ("VTube Studio", (0, 0, 90, 90), True),
               13: ("Notepad", (5, 5, 50, 50), False)}

    def EnumWindows(self, visit, _):
        for hwnd in self.windows:
            if not visit(hwnd, 0):
                break

    def IsWindowVisible(self, hwnd):
        return True

    def IsIconic(self, hwnd):
        return self.windows[hwnd][2]

    def IsWindow(self, hwnd):
        return hwnd in self.windows

    def GetWindowTextLengthW(self, hwnd):
        return len(self.windows[hwnd][0])

    def GetWindowTextW(self, hwnd, buffer, size):
        buffer.value = self.windows[hwnd][0][:size - 1]

    def GetWindowRect(self, hwnd, rect_ref):
        rect = rect_ref._obj
        rect.left, rect.top, rect.right, rect.bottom = self.windows[hwnd][1]
        return True


def test_the_windows_path_lists_visible_windows_with_a_stand_in_user32():
    windows = Win32Windows(FakeUser32(), callback=lambda visit: visit)
    assert [(w.id, w.title, w.region) for w in windows.visible()] == [
        (11, "VTube Studio", Region(10, 20, 640, 480)), (13, "Notepad", Region(5, 5, 45, 45))]
    assert windows.region_of(99) is None
    source = WindowSource("vtube", platform="win32", windows=windows)
    assert source.find().id == 11


def test_screen_capture_without_mss_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mss", None)
    with pytest.raises(SourceError, match="need the mss package: pip install mss"):
        ScreenSource().open()
