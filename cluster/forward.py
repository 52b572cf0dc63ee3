"""Requests from the front to a worker's HTTP server, and the worker's answer relayed unchanged.

A worker's 4xx answers (bad SDP, full, unknown stream) are the single server's own JSON errors and go back to
the client as they are. A worker that cannot be reached is a 503 with Retry-After: the front's probes will
notice it too; nothing about it is a client error, and nothing is left behind on the front.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
from fastapi import Response

from server.errors import ApiError

logger = logging.getLogger(__name__)
RELAYED_HEADERS = ("content-type", "location", "x-stream-id", "x-viewer-id", "retry-after", "www-authenticate", "link",
                   "allow", "accept-post")


class WorkerClient:
    """One HTTP client for every worker; each request carries the internal token."""

    def __init__(self, internal_token: str, timeout: float) -> None:
        self._auth = {"Authorization": f"Bearer {internal_token}"}
        self._http = httpx.AsyncClient(timeout=timeout)

    async def close(self) -> None:
        await self._http.aclose()

    async def request(self, url: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The worker's answer; raises ApiError 503 when the worker cannot be reached, 502 when it errs."""
        headers = {**kwargs.pop("headers", {}), **self._auth}
        try:
            response = await self._http.request(method, url + path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            logger.warning("worker at %s did not answer %s %s: %s", url, method, path, type(exc).__name__)
            raise ApiError(503, "worker_unavailable", f"the worker holding this request did not answer "
                           f"({type(exc).__name__}); try again", {"Retry-After": "2"}) from None
        if response.status_code >= 500:
            logger.error("worker at %s answered %s %s with %d: %s", url, method, path, response.status_code,
                         response.text[:200])
            raise ApiError(502, "worker_error", f"the worker failed this request (HTTP {response.status_code})")
        return response


def relay(response: httpx.Response) -> Response:
    """The worker's answer as the front's: status, body and the headers a client may need, each repeated header
    (Link) as its own line, since OBS reads one ICE server per Link line (server.ice_links)."""
    relayed = Response(response.content, status_code=response.status_code)
    for name, value in response.headers.multi_items():
        if name.lower() in RELAYED_HEADERS:
            relayed.headers.append(name, value)
    return relayed
