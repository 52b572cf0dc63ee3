"""``python -m sana_stream serve`` as a real process on a fixed loopback port, started, stopped and started again
there: for the tests and benchmarks of what clients do while the server restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from benchmarks.loopback import HOST


class ServeProcess:
    """``sana-stream serve`` with ``args`` on ``port``; its output goes to ``log`` (appended, one file for all its
    starts). ``start`` returns the wall-clock time (``time.time()``) at which it first answered ``/health``."""

    def __init__(self, port: int, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.port, self.args, self.log, self.env = port, args, log, env or {}
        self.base = f"http://{HOST}:{port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, extra: list[str] | None = None, timeout: float = 180.0) -> float:
        assert self.process is None, "already running"
        command = [sys.executable, "-m", "sana_stream", "serve", "--host", HOST, "--port", str(self.port),
                   *self.args, *(extra or [])]
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                            env={**os.environ, **self.env})
        return self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> float:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited with {self.process.returncode}; its log: {self.log}")
            try:
                if httpx.get(f"{self.base}/health", timeout=2).status_code == 200:
                    return time.time()
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"serve did not answer /health within {timeout} s; its log: {self.log}")

    def stop(self, how: signal.Signals = signal.SIGTERM, timeout: float = 60.0) -> float:
        """Sends ``how`` (SIGTERM: a clean stop; SIGKILL: a crash) and waits for the exit; returns the wall-clock
        time the signal was sent."""
        assert self.process is not None
        sent = time.time()
        self.process.send_signal(how)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
        finally:
            self.process = None
        return sent

    def close(self) -> None:
        if self.process is not None:
            self.stop(signal.SIGKILL)
