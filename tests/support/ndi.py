"""What the NDI tests share: NDI discovery pointed at loopback, and a real receiver run in its own process
(tests/support/ndi_receiver.py) whose events are read as they come."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tests.support.processes import terminate

ROOT = Path(__file__).resolve().parents[2]
# without multicast (a container, CI), NDI finds sources on loopback with this configuration (DESIGN.md)
LOOPBACK_CONFIG = {"ndi": {"networks": {"ips": "127.0.0.1"}, "unicast": {"enable": True}}}


def write_loopback_config(directory: Path) -> Path:
    """``directory`` holding ndi-config.v1.json for loopback discovery: the value for ``NDI_CONFIG_DIR``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ndi-config.v1.json").write_text(json.dumps(LOOPBACK_CONFIG))
    return directory


class ReceiverProcess:
    """``python -m tests.support.ndi_receiver``: receives the source called ``name`` until ``frames`` frames came,
    ``timeout`` seconds passed, or (after the first frame) none came for ``idle`` seconds."""

    def __init__(self, name: str, out: Path, env: dict[str, str], frames: int = 10_000, timeout: float = 90.0,
                 idle: float = 30.0) -> None:
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.events: list[dict] = []
        self._cond = threading.Condition()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.ndi_receiver", "--name", name, "--frames", str(frames),
             "--timeout", str(timeout), "--idle", str(idle), "--out", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                event = {"event": "output", "text": line.rstrip()}
            with self._cond:
                self.events.append(event)
                self._cond.notify_all()
        with self._cond:
            self.events.append({"event": "exited"})
            self._cond.notify_all()

    @property
    def frames(self) -> list[dict]:
        with self._cond:
            return [e for e in self.events if e["event"] == "frame"]

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                if any(e["event"] == "exited" for e in self.events):
                    raise AssertionError(f"the receiver exited before {what}: {self.events[-5:]}")
                if not self._cond.wait(deadline - time.monotonic()):
                    raise AssertionError(f"no {what} within {timeout} s: {self.events[-5:]}")

    def finish(self, timeout: float = 120.0) -> list[dict]:
        """Waits for the receiver to end on its own and returns every event."""
        try:
            self.process.wait(timeout)
        finally:
            self.stop()
        return list(self.events)

    def stop(self) -> None:
        """Ends the receiver (if still running) and its output pipe; safe to call twice."""
        terminate(self.process)
        self._reader.join(10)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def last_frame(self) -> np.ndarray:
        """The newest frame the receiver kept: (H, W, 4) RGBA."""
        return np.load(self.out / "last.npy")


def arrival_rate(frames: list[dict]) -> float:
    """Frames per second between the first and the last frame received."""
    if len(frames) < 2:
        return 0.0
    return (len(frames) - 1) / (frames[-1]["time"] - frames[0]["time"])
