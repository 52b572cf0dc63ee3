"""A server on a loopback port, run by uvicorn with the production limits (``server.serve.uvicorn_config``) in
an event loop on its own thread, so that tests can send plain blocking requests while a real aiortc peer keeps
streaming through the same loop. Also a raw HTTP/1.1 request, for what httpx would normalise away."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar
from urllib.parse import urlsplit

import uvicorn
from fastapi import FastAPI

from server.serve import uvicorn_config
from server.settings import ServerSettings

T = TypeVar("T")


class LiveServer:
    """``start()`` serves ``app``; ``call(coro)`` runs a coroutine on the server's loop and returns its result."""

    def __init__(self, app: FastAPI, settings: ServerSettings, **uvicorn_options: Any) -> None:
        self.app, self.settings, self.options = app, settings, uvicorn_options
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="live-server", daemon=True)
        self.base = ""
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> str:
        self.thread.start()
        self.base = self.call(self._serve())
        return self.base

    def stop(self) -> None:
        self.call(self._shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()

    async def _serve(self) -> str:
        config = uvicorn_config(self.app, self.settings, port=0, log_level="warning", **self.options)
        self._server = uvicorn.Server(config)
        self._task = asyncio.ensure_future(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _shutdown(self) -> None:
        assert self._server is not None and self._task is not None
        self._server.should_exit = True
        await self._task


def raw_request(base: str, head: str, body: bytes = b"", timeout: float = 10.0) -> tuple[int, bytes]:
    """Sends ``head`` (request line and headers, without the blank line) and ``body`` as they are, with
    ``Connection: close``; returns the status and the response body (chunked bodies are not decoded)."""
    url = urlsplit(base)
    with socket.create_connection((url.hostname, url.port), timeout=timeout) as sock:
        sock.sendall(head.encode("latin-1") + b"\r\nConnection: close\r\n\r\n" + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    _, _, content = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), content
