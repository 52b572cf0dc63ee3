"""Screen and window capture on a real X server: Debian's Xvfb, real X clients (Tk windows drawn by
tests/support/x11_window.py, xclock), with and without a window manager (twm), the real xdotool and mss; and
``sana-stream camera`` with ``--source window:TITLE`` and ``--source screen:X,Y,W,H`` end to end against a
server, the window moved and resized with xdotool mid-run, and the colour key. The titles hold spaces, brackets
and non-ASCII letters."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from bridge.errors import SourceError
from bridge.sources import Region, ScreenSource, WindowSource
from bridge.sources.xdotool import XdotoolWindows
from sana_stream.cli import main
from stream.frames import fit_frame
from tests.support import ServerThread, block_diff, free_port, wait_until
from tests.support.bridge import SIZE, bridge_app, bridge_engine
from tests.support.coturn import in_ci
from tests.support.x11 import XServer, xvfb

ROOT = Path(__file__).resolve().parent.parent
MAIN = "Avatar [VTube] — Ünïcødé 猫 (main)"
SETTINGS = "Avatar [VTube] — Ünïcødé 猫 (settings)"
ASKED = "[vtube] — ÜNÏCØDÉ 猫"  # a part of both titles, in other case
# QUADRANTS of x11_window.py in RGB, clockwise from top left
QUADRANTS = ((0xE0, 0x20, 0x20), (0x20, 0x40, 0xE0), (0xF0, 0xF0, 0xF0), (0xF0, 0xC0, 0x20))
KEY_GREEN = (0, 255, 0)


@pytest.fixture(scope="module")
def x() -> Iterator[XServer]:
    with xvfb(640, 480) as server:
        yield server


@pytest.fixture
def display(x: XServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[XServer]:
    """The Xvfb as this process's display; the test's windows close after it."""
    monkeypatch.setenv("DISPLAY", x.display)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    try:
        yield x
    finally:
        x.close_clients()


def shows_quadrants(frame: np.ndarray | None) -> bool:
    """The window's four quadrants, at their centres and in the frame's very corners (so the capture is neither
    shifted onto a title bar or the screen nor cut)."""
    if frame is None:
        return False
    h, w = frame.shape[:2]
    centres = ((h // 4, w // 4), (h // 4, 3 * w // 4), (3 * h // 4, 3 * w // 4), (3 * h // 4, w // 4))
    corners = ((0, 0), (0, w - 1), (h - 1, w - 1), (h - 1, 0))
    return all(tuple(int(c) for c in frame[y, x]) == colour for points in (centres, corners)
               for (y, x), colour in zip(points, QUADRANTS))


def test_window_lookup_chooses_follows_and_survives_a_closed_window(display, caplog):
    main_id = display.window(MAIN, 200, 150, 40, 30)
    display.window(SETTINGS, 100, 80, 520, 360)
    display.xclock("ClockAvatar", "100x100+520+20")
    titles = {w.title for w in XdotoolWindows().visible()}
    assert {MAIN, SETTINGS, "ClockAvatar"} <= titles  # read back exactly, non-ASCII included

    with WindowSource("clockavatar") as clock:  # the case: any case, found at once
        assert clock.read().shape == (100, 100, 3)

    source = WindowSource(ASKED)
    with caplog.at_level(logging.INFO), source:
        assert source.window.title == MAIN  # two match: the larger one
        frame = source.read()
        assert frame.shape == (150, 200, 3) and shows_quadrants(frame)
        assert "2 windows match" in caplog.text

        display.xdotool("windowmove", str(main_id), "250", "150")
        wait_until(lambda: source.read() is not None and source.region == Region(250, 150, 200, 150), 10,
                   "the capture following the moved window")
        assert shows_quadrants(source.read())

        display.xdotool("windowsize", str(main_id), "260", "180")
        wait_until(lambda: shows_quadrants(frame := source.read()) and frame.shape == (180, 260, 3), 10,
                   "the capture following the resized window")

        display.xdotool("windowmove", str(main_id), "700", "500")  # off the screen: its last place is kept
        wait_until(lambda: "Position: 700,500" in display.xdotool("getwindowgeometry", str(main_id)), 10, "moved")
        assert source.read().shape == (180, 260, 3) and source.region.left == 250

        display.clients[0].terminate()  # the main window closes: its last place is captured, no failure
        display.clients[0].wait(10)
        wait_until(lambda: source.read() is not None and "closed; capturing its last place" in caplog.text, 10,
                   "the closed window noticed")
        assert source.read().shape == (180, 260, 3)

    with pytest.raises(SourceError, match=r"no visible window whose title contains 'nothing here' \(visible: .*"
                                          r"ClockAvatar"):
        WindowSource("nothing here").open()


def test_window_capture_under_a_reparenting_window_manager(monkeypatch):
    """twm puts a frame and a title bar around each client: the capture is the client's own area."""
    with xvfb(640, 480) as managed:
        monkeypatch.setenv("DISPLAY", managed.display)
        managed.window_manager()
        window = managed.window(MAIN, 200, 150, 40, 30)
        with WindowSource(ASKED) as source:
            assert shows_quadrants(frame := source.read()) and frame.shape == (150, 200, 3)
            managed.xdotool("windowmove", str(window), "250", "150")
            wait_until(lambda: source.read() is not None and source.region.left == 250, 10, "the move followed")
            assert shows_quadrants(source.read())


def test_xdotool_errors_reach_the_user_apart_from_no_such_window(display, monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("DISPLAY", f":{free_port() % 1000 + 5000}")  # no X server there
    with pytest.raises(SourceError, match=r"xdotool search failed with exit status 1 on DISPLAY=:\d+: "
                                          r"Error: Can't open display") as failure:
        WindowSource("ClockAvatar").open()
    assert "no visible window" not in str(failure.value)
    with caplog.at_level(logging.ERROR):  # the command: that one line, exit status 1
        assert main(["camera", "--source", "window:ClockAvatar", "--record", str(tmp_path), "--no-stdin"]) == 1
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [str(failure.value)]

    monkeypatch.delenv("DISPLAY")
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    with pytest.raises(SourceError, match="DISPLAY is not set \\(a Wayland session without XWayland\\)"):
        WindowSource("ClockAvatar").open()
    monkeypatch.setenv("DISPLAY", display.display)  # Wayland with XWayland: the message says what can be found
    with pytest.raises(SourceError, match="only X11 apps running under XWayland"):
        WindowSource("a native Wayland window").open()

    monkeypatch.setenv("PATH", str(tmp_path))  # no xdotool
    with pytest.raises(SourceError, match="needs xdotool"):
        WindowSource("ClockAvatar").open()
    with pytest.raises(SourceError, match="not supported on darwin"):
        WindowSource("ClockAvatar", platform="darwin").open()


def test_screen_regions_are_grabbed_as_asked(display):
    display.window(MAIN, 200, 150, 40, 30)
    with ScreenSource(Region(40, 30, 200, 150)) as screen:
        frame = screen.read()
        assert frame.shape == (150, 200, 3) and shows_quadrants(frame)
    with ScreenSource(Region(540, 400, 200, 200)) as corner:  # clipped to the 640x480 screen
        assert corner.read().shape == (80, 100, 3)
    with pytest.raises(SourceError, match="lies outside the screen"):
        ScreenSource(Region(700, 0, 10, 10)).open()


@pytest.fixture(scope="module")
def server(demo_model_dir):
    with ServerThread(bridge_app(bridge_engine(demo_model_dir), token=None)) as running:
        # the reference: what a fresh engine like the server's makes of a frame
        running.restyled = lambda frame: bridge_engine(demo_model_dir)(fit_frame(frame, SIZE, SIZE))
        yield running


def start_camera(display: XServer, server: ServerThread, source: str, out: Path, frames: int,
                 *extra: str) -> subprocess.Popen:
    """``sana-stream camera`` in its own process on the Xvfb display, recording into ``out``."""
    argv = ["camera", "--server", server.base, "--source", source, "--record", str(out), "--max-frames",
            str(frames), "--fps", "10", "--no-stdin", *extra]
    command = ("import sys; from rtc.ice import include_loopback_candidates; include_loopback_candidates(); "
               "from sana_stream.cli import main; sys.exit(main(sys.argv[1:]))")
    env = {**display.env, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", command, *argv], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(camera: subprocess.Popen, timeout: float = 120) -> str:
    output, _ = camera.communicate(timeout=timeout)
    assert camera.returncode == 0 and "Traceback" not in output, output
    return output


def recorded(out: Path) -> list[Path]:
    return sorted(out.glob("frame_*.png"))


def test_camera_captures_a_window_and_follows_it_when_moved(display, server, tmp_path):
    window = display.window(MAIN, 200, 150, 40, 30)
    with ScreenSource(Region(40, 30, 200, 150)) as screen:
        content, old_place_empty = screen.read(), None
    out = tmp_path / "window"
    camera = start_camera(display, server, f"window:{ASKED}", out, 30)
    wait_until(lambda: len(recorded(out)) >= 8 or camera.poll() is not None, 90, "8 frames of the window")
    display.xdotool("windowmove", str(window), "380", "260")
    moved_at = len(recorded(out))
    with ScreenSource(Region(40, 30, 200, 150)) as screen:
        wait_until(lambda: not shows_quadrants(screen.read()), 10, "the old place empty")
        old_place_empty = screen.read()
    output = finish(camera)
    frames = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in recorded(out)]
    assert len(frames) == 30 and all(f.shape == (SIZE, SIZE, 3) for f in frames), output
    following, left_behind = server.restyled(content), server.restyled(old_place_empty)
    assert block_diff(following, left_behind) > 8  # the two captures give clearly different outputs
    for frame in (frames[4], *frames[moved_at + 10:]):  # before, and well after the move
        close, far = block_diff(frame, following), block_diff(frame, left_behind)
        assert close < 5.0 and close < 0.5 * far, (close, far)


def test_camera_records_a_screen_region(display, server, tmp_path):
    display.window(MAIN, 200, 150, 40, 30)
    with ScreenSource(Region(40, 30, 200, 150)) as screen:
        content = screen.read()
    out = tmp_path / "screen"
    finish(start_camera(display, server, "screen:40,30,200,150", out, 6))
    frames = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in recorded(out)]
    assert len(frames) == 6 and all(f.shape == (SIZE, SIZE, 3) for f in frames)  # the server's output size
    close, far = block_diff(frames[-1], server.restyled(content)), block_diff(frames[-1], server.restyled(
        np.zeros_like(content)))  # what an empty part of the screen would give
    assert close < 5.0 and close < 0.5 * far, (close, far)


def test_colour_key_makes_the_recorded_background_transparent(display, server, tmp_path):
    display.window(MAIN, 200, 150, 40, 30, mode="key")
    out = tmp_path / "key"
    finish(start_camera(display, server, f"window:{ASKED}", out, 12, "--keep-background", "key:#00ff00"))
    pngs = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in recorded(out)]
    assert len(pngs) == 12 and all(p.shape == (SIZE, SIZE, 4) for p in pngs)
    # the window is 200x150, fitted to 128x128 (cover, centre crop): the 40 px subject becomes a 34 px square at
    # rows 17..51, cut at the left and right edges
    subject_columns = set()
    for png in pngs:
        alpha = png[..., 3]
        opaque = np.argwhere(alpha == 255)
        assert (alpha == 0).mean() > 0.85, "the green background is transparent"
        assert np.all(png[alpha == 0][:, 2::-1] == KEY_GREEN)  # and painted in the key colour
        (top, left), (bottom, right) = opaque.min(axis=0), opaque.max(axis=0)
        assert 14 <= top <= 20 and 48 <= bottom <= 54 and right - left <= 38, (top, bottom, left, right)
        subject_columns.add(int(left + right))
    assert len(subject_columns) >= 3, "the subject moved between the recorded frames"


GUI_OPENCV = ROOT / ".venv-gui-cv2"  # opencv-python with its Qt GUI, put there by scripts/ensure_xvfb.sh
PREVIEW_TITLE = "sana-stream preview [test] ✓"
SHOW_PREVIEW = f"""
import numpy as np
from bridge.errors import SinkClosed
from bridge.sinks import PreviewSink

sink = PreviewSink({PREVIEW_TITLE!r})
sink.open(160, 120, 30)
image = np.zeros((120, 160, 3), np.uint8)
image[:, :80], image[:, 80:] = {QUADRANTS[0]!r}, {QUADRANTS[1]!r}
print("open", flush=True)
try:
    while True:
        sink.send(image)
except SinkClosed as exc:
    print("closed:", exc, flush=True)
sink.close()
"""


def test_preview_with_the_headless_opencv_is_a_clear_message_on_a_display(display):
    from bridge.errors import SinkError
    from bridge.sinks import PreviewSink

    headless = re.search(r"^\s*GUI:\s*NONE\s*$", cv2.getBuildInformation(), re.MULTILINE)
    assert headless, "the project installs opencv-python-headless; this OpenCV has a GUI"
    with pytest.raises(SinkError, match="needs OpenCV with GUI support.*pip install opencv-python"):
        PreviewSink().open(SIZE, SIZE, 30)


def test_preview_window_shows_frames_and_closes_with_q_where_opencv_has_a_gui(display):
    if not (GUI_OPENCV / "cv2").is_dir():
        reason = "no GUI OpenCV in .venv-gui-cv2 (the project installs the headless one)"
        if in_ci():
            pytest.fail(f"{reason} (CI=true: `make test` installs it with scripts/ensure_xvfb.sh)")
        pytest.skip(f"{reason}: `make test` puts opencv-python there (scripts/ensure_xvfb.sh, from PyPI)")
    env = {**display.env, "PYTHONPATH": os.pathsep.join((str(GUI_OPENCV), str(ROOT)))}
    preview = subprocess.Popen([sys.executable, "-c", SHOW_PREVIEW], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert preview.stdout is not None and preview.stdout.readline().strip() == "open", preview.stderr.read()
        window = WindowSource("preview [TEST] ✓")
        with window:
            wait_until(lambda: _shows_red_then_blue(window.read()), 20, "the preview window showing the frame")
        display.xdotool("windowfocus", "--sync", str(window.window.id))
        display.xdotool("key", "q")
        output, errors = preview.communicate(timeout=20)
    finally:
        preview.kill()
    assert preview.returncode == 0 and "closed: preview closed with the keyboard" in output, errors


def _shows_red_then_blue(frame: np.ndarray | None) -> bool:
    """The frame's left half red and right half blue somewhere in the window (which adds a toolbar)."""
    if frame is None:
        return False
    red = np.all(np.abs(frame.astype(int) - QUADRANTS[0]) < 24, axis=-1)
    blue = np.all(np.abs(frame.astype(int) - QUADRANTS[1]) < 24, axis=-1)
    if red.sum() < 1000 or blue.sum() < 1000:
        return False
    return np.argwhere(red)[:, 1].mean() < np.argwhere(blue)[:, 1].mean()
