"""The camera bridge's capture sources: ``--source`` specs, a video file, and screen and window capture with a
stand-in for mss (no display here) and a stand-in xdotool script."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from bridge.errors import SourceError
from bridge.sources import Region, ScreenSource, VideoFileSource, WindowSource, parse_source
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


class FakeShot:
    def __init__(self, region: dict) -> None:
        self.region = region
        bgra = np.zeros((region["height"], region["width"], 4), np.uint8)
        bgra[..., 0], bgra[..., 2] = 200, 10  # blue in BGRA
        self.array = bgra

    def __array__(self, dtype=None, copy=None):
        return self.array


class FakeMSS:
    """Stands in for ``mss.MSS()``: one 800x600 monitor; remembers what was grabbed."""

    grabbed: ClassVar[list[dict]] = []

    def __init__(self) -> None:
        screen = {"left": 0, "top": 0, "width": 800, "height": 600}
        self.monitors = [screen, screen]

    def grab(self, region: dict) -> FakeShot:
        self.grabbed.append(region)
        return FakeShot(region)

    def close(self) -> None:
        pass


def test_screen_and_window_sources_with_a_fake_mss_and_xdotool(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "mss", types.SimpleNamespace(MSS=FakeMSS))
    with ScreenSource(Region(700, 500, 200, 200)) as screen:  # clipped to the 800x600 screen
        frame = screen.read()
    assert frame.shape == (100, 100, 3) and tuple(frame[0, 0]) == (10, 0, 200)

    xdotool = tmp_path / "xdotool"
    xdotool.write_text("#!/bin/sh\n"
                       'if [ "$1" = search ]; then echo 4242; exit 0; fi\n'
                       'printf "WINDOW=4242\\nX=30\\nY=40\\nWIDTH=160\\nHEIGHT=120\\n"\n')
    xdotool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.setenv("DISPLAY", ":99")
    with WindowSource("VSeeFace", platform="linux") as window:
        frame = window.read()
    assert frame.shape == (120, 160, 3) and FakeMSS.grabbed[-1] == {"left": 30, "top": 40, "width": 160,
                                                                       "height": 120}


def test_screen_and_window_capture_say_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "mss", None)
    with pytest.raises(SourceError, match="need the mss package: pip install mss"):
        ScreenSource().open()
    monkeypatch.setenv("PATH", str(tmp_path))  # no xdotool
    with pytest.raises(SourceError, match="needs xdotool"):
        WindowSource("VSeeFace", platform="linux").open()
    with pytest.raises(SourceError, match="not supported on darwin"):
        WindowSource("VSeeFace", platform="darwin").open()
