"""ASGI middleware that caps request bodies by size and by time: FastAPI has neither, and SDP offers are small.

The whole body (at most ``max_bytes``) is read before the app runs and handed to it in one message, so a body
over the cap is refused the same way on every endpoint, declared or chunked: FastAPI would turn an error raised
while it reads the body into a 400.
"""

from __future__ import annotations

import asyncio
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import error_body


class BodyLimitMiddleware:
    """Answers 413 when a body exceeds ``max_bytes`` (by Content-Length or while it arrives) and 408 when it
    does not arrive within ``timeout`` seconds, both as ``{"error", "detail"}``."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._reject(send, 413, "body_too_large", f"request bodies are limited to {self.max_bytes} bytes")
            return
        try:
            body, disconnected = await asyncio.wait_for(self._read(receive), self.timeout)
        except asyncio.TimeoutError:
            await self._reject(send, 408, "request_timeout",
                               f"the request body did not arrive within {self.timeout:g} s")
            return
        if body is None:
            await self._reject(send, 413, "body_too_large", f"request bodies are limited to {self.max_bytes} bytes")
            return
        if disconnected:
            return  # the client left before its body was complete: nobody to answer
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: http.disconnect, when it comes

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive) -> tuple[bytes | None, bool]:
        """The whole body, or None once it passes the cap; and whether the client disconnected first."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"".join(chunks), True
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return None, False
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), False

    @staticmethod
    async def _reject(send: Send, status: int, reason: str, detail: str) -> None:
        body = json.dumps(error_body(status, reason, detail)).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
