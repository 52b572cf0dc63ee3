"""A real X server for the capture tests: Debian's Xvfb on a free display (it picks the number itself with
-displayfd) with real X clients on it (xclock, Tk windows drawn by ``x11_window.py``), moved and resized with
xdotool. Without those tools the tests skip with the reason, except under CI=true, where they fail:
`make test` installs them when it runs as root (scripts/ensure_xvfb.sh)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.coturn import in_ci

SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, with python3-tk
WINDOW_CLIENT = Path(__file__).with_name("x11_window.py")
TOOLS = ("Xvfb", "xdotool", "xclock", "twm")


def require_x11() -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    has_tk = Path(SYSTEM_PYTHON).exists() and subprocess.run(
        [SYSTEM_PYTHON, "-c", "import tkinter"], capture_output=True, check=False).returncode == 0
    if not has_tk:
        missing.append("python3-tk")
    if missing:
        reason = f"no {', '.join(missing)}"
        if in_ci():
            pytest.fail(f"{reason} (CI=true: the X11 capture tests must run)")
        pytest.skip(f"{reason}: the X11 capture tests need Debian's xvfb, xdotool, x11-apps, twm and python3-tk; "
                    "`make test` as root installs them (scripts/ensure_xvfb.sh)")


@dataclass
class XServer:
    display: str
    width: int
    height: int
    clients: list[subprocess.Popen] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("WAYLAND_DISPLAY", "XAUTHORITY")}
        return {**env, "DISPLAY": self.display}

    def xdotool(self, *args: str) -> str:
        done = subprocess.run(["xdotool", *args], capture_output=True, text=True, env=self.env, timeout=10,
                              check=False)
        assert done.returncode == 0, f"xdotool {args}: {done.returncode} {done.stderr}"
        return done.stdout

    def window(self, title: str, width: int, height: int, x: int, y: int, mode: str = "quadrants") -> int:
        """Starts a Tk window and returns its X window id once it is mapped and drawn."""
        client = subprocess.Popen([SYSTEM_PYTHON, str(WINDOW_CLIENT), title, f"{width}x{height}+{x}+{y}", mode],
                                  stdout=subprocess.PIPE, text=True, env=self.env)
        self.clients.append(client)
        assert client.stdout is not None and client.stdout.readline().strip() == "ready", "the Tk window failed"
        return self.window_id(title)

    def xclock(self, title: str, geometry: str) -> int:
        self.clients.append(subprocess.Popen(["xclock", "-title", title, "-geometry", geometry], env=self.env,
                                             stderr=subprocess.DEVNULL))
        return self.window_id(title)

    def window_id(self, title: str, timeout: float = 20) -> int:
        """The id of the visible window titled exactly ``title`` (xdotool's own ERE search, anchored)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", "."], capture_output=True,
                                   env=self.env, timeout=10, check=False).stdout.split()
            for text in found:
                name = subprocess.run(["xdotool", "getwindowname", text], capture_output=True, env=self.env,
                                      timeout=10, check=False).stdout.decode("utf-8", "replace").rstrip("\n")
                if name == title:
                    return int(text)
            time.sleep(0.1)
        raise AssertionError(f"no window {title!r} appeared")

    def window_manager(self) -> None:
        """Starts twm, a reparenting window manager (title bars, frames around the clients)."""
        self.clients.append(subprocess.Popen(["twm"], env=self.env, stderr=subprocess.DEVNULL))

    def close_clients(self) -> None:
        for client in self.clients:
            client.terminate()
        for client in self.clients:
            client.wait(10)
            if client.stdout is not None:
                client.stdout.close()
        self.clients.clear()


@contextmanager
def xvfb(width: int = 640, height: int = 480) -> Iterator[XServer]:
    """Xvfb on a free display with a black root window; stopped (with its clients) on exit."""
    require_x11()
    read, write = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", f"{width}x{height}x24", "-br",
                               "-nolisten", "tcp", "-noreset"], pass_fds=(write,), stderr=subprocess.DEVNULL)
    os.close(write)
    try:
        with os.fdopen(read) as announced:
            number = announced.readline().strip()
        assert number.isdigit(), f"Xvfb did not start (exit status {server.poll()})"
        x = XServer(f":{number}", width, height)
        try:
            yield x
        finally:
            x.close_clients()
    finally:
        server.terminate()
        server.wait(10)
