"""An ASGI app under uvicorn on a free loopback port, for the benchmarks and the tests: in the caller's event loop
(``running``) or in a thread of its own (``ServerThread``, for callers that run their own ``asyncio.run``)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from typing import Any, AsyncIterator

import uvicorn

HOST = "127.0.0.1"


def free_port() -> int:
    """A loopback port nothing listens on, for TCP and UDP alike (the OS's choice, released at once): for a server
    to start on, or to find nothing at."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((HOST, 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((HOST, port))
                except OSError:
                    continue
            return port
    raise RuntimeError(f"no port free for both UDP and TCP on {HOST}")


def _base(server: uvicorn.Server) -> str:
    return f"http://{HOST}:{server.servers[0].sockets[0].getsockname()[1]}"


@contextlib.asynccontextmanager
async def running(app: Any, port: int = 0) -> AsyncIterator[str]:
    """Serves ``app`` inside the running event loop; yields its base URL, and stops it on exit."""
    server = uvicorn.Server(uvicorn.Config(app, host=HOST, port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # startup failed: raise its error
            raise RuntimeError("the server stopped before it started")
        await asyncio.sleep(0.01)
    try:
        yield _base(server)
    finally:
        server.should_exit = True
        await task


class ServerThread:
    """Serves ``app`` in a thread with its own event loop (uvicorn's choice of loop, as ``sana-stream serve``).
    A context manager; ``port`` may name the port of a stopped server, to start again where it was."""

    def __init__(self, app: Any, port: int = 0, start_timeout: float = 30.0) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host=HOST, port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)
        self.start_timeout = start_timeout

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(self.start_timeout)

    @property
    def port(self) -> int:
        return self.server.servers[0].sockets[0].getsockname()[1]

    @property
    def base(self) -> str:
        return _base(self.server)
