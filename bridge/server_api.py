"""The bridge's side of the server's HTTP API: GET /config, POST /offer (through ``server.client.connect``) and
POST /prompt for its own stream, with the server's refusals turned into messages a user can act on."""

from __future__ import annotations

from typing import Any

import httpx
from aiortc import MediaStreamTrack

from bridge.errors import BridgeError
from server.client import OfferRejected, StreamClient, connect


class NoLeakHttp:
    """Lends ``server.client.connect`` our HTTP client. A transport error is kept in ``error`` and answered with
    a stand-in 503, so that ``connect`` closes the peer connection it made (it closes it on an error status, but
    not on an exception) instead of leaking its ICE sockets; the caller raises ``error`` again."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.error: httpx.TransportError | None = None

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self._send(self.http.post, url, **kwargs)

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self._send(self.http.get, url, **kwargs)

    async def _send(self, method: Any, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return await method(url, **kwargs)
        except httpx.TransportError as exc:
            self.error = exc
            return httpx.Response(503, json={"error": "unreachable", "detail": str(exc)})


def describe_rejection(exc: OfferRejected, server: str) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    detail = body.get("detail") or body.get("error") or exc.body
    if exc.status == 401:
        return f"the server at {server} refused the token (HTTP 401): pass the server's token with --token " \
               "or SANA_STREAM_TOKEN"
    if exc.status == 503:
        return f"the server at {server} is full (HTTP 503: {detail}); try again later or raise its --max-peers"
    return f"the server at {server} refused the connection: HTTP {exc.status}: {detail}"


class PromptRejected(BridgeError):
    """POST /prompt answered with an error (a value out of range, a missing token)."""

    def __init__(self, status: int, body: Any) -> None:
        self.status, self.body = status, body
        detail = body.get("detail", body) if isinstance(body, dict) else body
        super().__init__(f"HTTP {status}: {detail}")


class ServerApi:
    """The HTTP calls the bridge makes to the server at ``server``, on one client that carries the token."""

    def __init__(self, server: str, headers: dict[str, str], timeout: float) -> None:
        self.server, self.headers = server, headers
        self.http = httpx.AsyncClient(base_url=server, timeout=timeout, headers=headers)

    async def config(self) -> dict[str, Any]:
        """GET /config; BridgeError when the server is unreachable or does not look like a sana-stream server."""
        try:
            r = await self.http.get("/config")
        except httpx.TransportError as exc:
            raise BridgeError(f"cannot reach the server at {self.server}: {reason(exc)}") from None
        if r.status_code != 200:
            raise BridgeError(f"{self.server} does not look like a sana-stream server: GET /config "
                              f"answered HTTP {r.status_code}")
        try:
            return r.json()
        except ValueError:
            raise BridgeError(f"{self.server} does not look like a sana-stream server: GET /config "
                              "is not JSON") from None

    async def connect(self, track: MediaStreamTrack, stream: str | None, relay: bool = False) -> StreamClient:
        """POST /offer with ``track``, asking for ``stream`` (``relay``: media through the server's TURN server
        only); raises httpx.TransportError, OfferRejected or RelayUnavailable."""
        http = NoLeakHttp(self.http)
        try:
            client = await connect(self.server, track, self.headers, http=http,  # type: ignore[arg-type]
                                   stream=stream, relay=relay)
        except OfferRejected:
            if http.error is not None:
                raise http.error from None
            raise
        except (KeyError, ValueError) as exc:  # an answer without our fields or with an SDP aiortc cannot use
            raise BridgeError(f"{self.server} gave an unusable answer to the offer: {reason(exc)}") from None
        return client

    async def post_prompt(self, stream: str, changes: dict[str, Any]) -> dict[str, Any]:
        """POST /prompt for ``stream``; returns the stream's settings, raises PromptRejected when refused."""
        r = await self.http.post("/prompt", json={"stream": stream, **changes})
        if r.status_code != 200:
            try:
                body: Any = r.json()
            except ValueError:
                body = r.text
            raise PromptRejected(r.status_code, body)
        return r.json()["streams"][stream]

    async def aclose(self) -> None:
        await self.http.aclose()


def reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
