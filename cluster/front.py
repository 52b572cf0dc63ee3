"""The HTTP front of a cluster: the single server's public API, served by placing each stream on a worker and
forwarding its SDP exchange there. It holds no media: the answers it relays carry the workers' ICE candidates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from cluster.aggregate import ClusterHealth, cluster_health, merge_metrics
from cluster.forward import WorkerClient, relay
from cluster.placement import NoCapacity
from cluster.supervisor import Supervisor, WorkerSlot, WorkerState
from server.app import ModelInfo, install_http_guards
from server.errors import ApiError
from server.api_docs import install_api_docs
from server.auth import Scope, authorizer, sees_details
from server.ice_routes import add_token_routes
from server.openapi import document_api
from server.pages import find_pages, mount_pages
from server.schemas import STREAM_ID_PATTERN, Answer, Liveness, Offer, PromptState, PromptUpdate, ServerConfig, \
    ViewAnswer, ViewOffer
from server.settings import ServerSettings

logger = logging.getLogger(__name__)
METRICS_TIMEOUT_S = 2.0  # a worker slower than this to report is left out of one /metrics answer


@dataclass
class _Placing:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0  # offers holding or waiting for the lock; the last one removes it


@dataclass
class Front:
    """What the front runs on: the supervisor of the workers, the HTTP client to them, and how to stop them."""

    supervisor: Supervisor
    workers: WorkerClient
    stop_workers: Callable[[], Awaitable[None]]
    prompt_defaults: dict[str, Any] = field(default_factory=dict)  # every /prompt without a stream, merged
    _placing: dict[str, _Placing] = field(default_factory=dict)

    async def bring_up_to_date(self, slot: WorkerSlot) -> None:
        """A (re)started worker gets the prompt changes every worker got before it joins (Supervisor.on_ready)."""
        if self.prompt_defaults and slot.status and slot.status.url:
            response = await self.workers.request(slot.status.url, "POST", "/prompt", json=self.prompt_defaults)
            response.raise_for_status()

    @contextlib.asynccontextmanager
    async def placing(self, stream_id: str | None) -> AsyncIterator[None]:
        """One offer at a time for a requested stream id, so two of them cannot land on two workers."""
        if stream_id is None:
            yield
            return
        placing = self._placing.setdefault(stream_id, _Placing())
        placing.users += 1
        try:
            async with placing.lock:
                yield
        finally:
            placing.users -= 1
            if not placing.users:
                del self._placing[stream_id]

    async def offer(self, stream_id: str | None, path: str, **request: Any) -> tuple[WorkerSlot, httpx.Response]:
        """Places a new stream and forwards its offer to the chosen worker."""
        try:
            slot = self.supervisor.place(stream_id)
        except NoCapacity as exc:
            raise ApiError(503, "server_full" if exc.ready else "no_workers", str(exc), {"Retry-After": "5"}) from None
        try:
            url = slot.status.url if slot.status else None
            if url is None:  # place() picks ready workers only, and a ready worker has reported its url
                raise ApiError(503, "worker_unavailable", "the chosen worker has no address yet; try again",
                               {"Retry-After": "2"})
            return slot, await self.workers.request(url, "POST", path, **request)
        finally:
            slot.pending -= 1

    def owner_url(self, stream_id: str, reason: str, detail: str) -> str:
        slot = self.supervisor.owner(stream_id, usable=True)
        if slot is None or slot.status is None or slot.status.url is None:
            raise ApiError(404, reason, detail)
        return slot.status.url

    def ready_urls(self) -> list[str]:
        urls = [s.status.url for s in self.supervisor.ready() if s.status and s.status.url]
        if not urls:
            raise ApiError(503, "no_workers", "no worker is ready yet; try again", {"Retry-After": "5"})
        return urls

    async def each_ready(self, method: str, path: str, **request: Any) -> list[httpx.Response]:
        return list(await asyncio.gather(*(self.workers.request(url, method, path, **request)
                                           for url in self.ready_urls())))

    async def prompt_everywhere(self, payload: dict[str, Any]) -> Response:
        """A change for every stream: the first worker validates it (they all would alike, and none changes
        anything before validating), then the others get it, and so does every worker that joins later."""
        first_url, *others = self.ready_urls()
        first = await self.workers.request(first_url, "POST", "/prompt", json=payload)
        if first.status_code != 200:
            return relay(first)
        self.prompt_defaults.update(payload)
        rest = await asyncio.gather(*(self.workers.request(url, "POST", "/prompt", json=payload) for url in others))
        return JSONResponse(_merged_streams([first, *rest]))


def _unknown_stream(stream_id: str) -> str:
    return f"unknown stream {stream_id!r}"


def create_front_app(settings: ServerSettings, model: ModelInfo, front: Front) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        front.supervisor.start()
        try:
            await front.supervisor.wait_started()
            yield
        finally:
            await front.supervisor.close()
            await front.stop_workers()
            await front.workers.close()

    app = FastAPI(title="sana-stream", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Real-time Sana-Sprint img2img over WebRTC on several engine workers. "
                              "Errors are JSON: {error, detail}.")
    install_http_guards(app, settings)
    supervisor = front.supervisor
    supervisor.on_ready = front.bring_up_to_date

    authorize = authorizer(settings.token, settings.view_token_in_force, Scope.FULL)
    authorize_view = authorizer(settings.token, settings.view_token_in_force, Scope.VIEW)

    @app.post("/offer", response_model=Answer, dependencies=[Depends(authorize)])
    async def offer(body: Offer) -> Response:
        """Placed on the least loaded worker (a reconnecting stream id: back on its worker); the answer is the
        worker's, so the video goes between the client and that worker."""
        async with front.placing(body.stream):
            slot, response = await front.offer(body.stream, "/offer", json=body.model_dump())
            if response.status_code == 200:
                supervisor.record(response.json()["stream"], slot)
        return relay(response)

    @app.post("/whip", status_code=201, dependencies=[Depends(authorize)],
              responses={201: {"content": {"application/sdp": {}}}})
    async def whip(request: Request, stream: str | None = Query(default=None, pattern=STREAM_ID_PATTERN)) -> Response:
        """WHIP ingest (RFC 9725), placed like /offer; Location is the front's /whip/ID."""
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/sdp":
            raise ApiError(415, "unsupported_media_type", "WHIP offers must be sent as application/sdp")
        body = await request.body()
        async with front.placing(stream):
            slot, response = await front.offer(stream, "/whip", content=body, params={"stream": stream} if stream
                                               else {}, headers={"Content-Type": "application/sdp"})
            if response.status_code == 201 and response.headers.get("x-stream-id"):
                supervisor.record(response.headers["x-stream-id"], slot)
        return relay(response)

    @app.delete("/whip/{peer_id}", dependencies=[Depends(authorize)])
    async def whip_delete(peer_id: str) -> Response:
        url = front.owner_url(peer_id, "unknown_session", f"no WHIP session {peer_id!r}")
        response = await front.workers.request(url, "DELETE", f"/whip/{peer_id}")
        if response.status_code == 200:
            supervisor.forget(peer_id)
        return relay(response)

    @app.post("/view/offer", response_model=ViewAnswer, dependencies=[Depends(authorize_view)])
    async def view_offer(body: ViewOffer) -> Response:
        """A viewer of a stream connects to the worker holding it."""
        url = front.owner_url(body.stream, "unknown_stream", f"no stream {body.stream!r} is live (streams are "
                              "created by POST /offer or /whip)")
        return relay(await front.workers.request(url, "POST", "/view/offer", json=body.model_dump()))

    @app.post("/whep", status_code=201, dependencies=[Depends(authorize_view)],
              responses={201: {"content": {"application/sdp": {}}}})
    async def whep(request: Request, stream: str = Query(pattern=STREAM_ID_PATTERN),
                   repeat: bool = Query(default=True)) -> Response:
        """WHEP egress (the /view page, WHEP players): sent to the worker holding the stream."""
        url = front.owner_url(stream, "unknown_stream", f"no stream {stream!r} is live (streams are created by "
                              "POST /offer or /whip)")
        headers = {"Content-Type": request.headers.get("content-type", "")}
        return relay(await front.workers.request(url, "POST", "/whep", content=await request.body(), headers=headers,
                                                 params={"stream": stream, "repeat": str(repeat).lower()}))

    @app.options("/whip", dependencies=[Depends(authorize)])
    @app.options("/whep", dependencies=[Depends(authorize_view)])
    async def ice_options(request: Request) -> Response:
        """The Link headers a WHIP or WHEP POST would carry (every worker has the same ICE servers): a worker's."""
        (url, *_) = front.ready_urls()
        return relay(await front.workers.request(url, "OPTIONS", request.url.path,
                                                 params=dict(request.query_params)))

    @app.delete("/whep/{stream}/{viewer_id}", dependencies=[Depends(authorize_view)])
    async def whep_delete(stream: str, viewer_id: str) -> Response:
        url = front.owner_url(stream, "unknown_session", f"no WHEP session {viewer_id!r} of stream {stream!r}")
        return relay(await front.workers.request(url, "DELETE", f"/whep/{stream}/{viewer_id}"))

    @app.get("/config", response_model=ServerConfig)
    async def config() -> ServerConfig:
        (first, *_) = await front.each_ready("GET", "/config")
        ready = [s.status for s in supervisor.ready() if s.status]
        peers = sum(s.max_peers for s in ready)
        return ServerConfig(**{**first.json(), "token_required": settings.token is not None, "max_peers": peers,
                               "max_viewers": len(ready) * settings.viewer_cap})

    @app.post("/prompt", response_model=PromptState, dependencies=[Depends(authorize)])
    async def set_prompt(body: PromptUpdate) -> Response:
        """With ``stream``: the worker holding it. Without: every worker, and every worker that joins later."""
        payload = body.model_dump(exclude_none=True)
        if body.stream is not None:
            url = front.owner_url(body.stream, "unknown_stream", _unknown_stream(body.stream))
            return relay(await front.workers.request(url, "POST", "/prompt", json=payload))
        return await front.prompt_everywhere(payload)

    @app.get("/prompt", response_model=PromptState, dependencies=[Depends(authorize)])
    async def get_prompt(stream: str | None = None) -> Response:
        if stream is not None:
            url = front.owner_url(stream, "unknown_stream", _unknown_stream(stream))
            return relay(await front.workers.request(url, "GET", "/prompt", params={"stream": stream}))
        return JSONResponse(_merged_streams(await front.each_ready("GET", "/prompt")))

    @app.get("/health", response_model=ClusterHealth | Liveness)
    async def health(request: Request) -> ClusterHealth | Liveness:
        """Every worker's state, node, device and streams; ``status`` is ok, degraded or unavailable. With
        ``--token`` and no Authorization header, only the status (a liveness probe: no worker addresses)."""
        summary = cluster_health(supervisor.slots, model.name, model.demo, model.backend)
        if not sees_details(settings.token, settings.view_token_in_force, request.headers.get("authorization", "")):
            return Liveness(status=summary.status)
        return summary

    @app.get("/metrics", response_class=PlainTextResponse, dependencies=[Depends(authorize)])
    async def metrics() -> PlainTextResponse:
        texts = await _worker_metrics(front)
        states = {f'state="{state.value}"': float(sum(s.state is state for s in supervisor.slots))
                  for state in WorkerState}
        restarts = {f'worker="{s.index}"': float(s.restarts) for s in supervisor.slots}
        text = merge_metrics(texts, {"workers": states, "worker_restarts": restarts})
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    add_token_routes(app, settings)
    install_api_docs(app)

    @app.get("/debug/connections", dependencies=[Depends(authorize)])
    async def connections() -> JSONResponse:
        """Every worker's connections: state and candidate types (relayed or direct) per peer and viewer."""
        merged: dict[str, dict[str, Any]] = {"peers": {}, "viewers": {}}
        for response in await front.each_ready("GET", "/debug/connections"):
            for kind in merged:
                merged[kind].update(response.json()[kind])
        return JSONResponse(merged)

    document_api(app, token_required=settings.token is not None)
    if settings.pages:
        mount_pages(app, find_pages())
    app.state.front = front
    return app


def _merged_streams(responses: list[httpx.Response]) -> dict[str, Any]:
    streams: dict[str, Any] = {}
    for response in responses:
        streams.update(response.json()["streams"])
    return {"streams": streams}


async def _worker_metrics(front: Front) -> dict[int, str]:
    live = [(s, s.status.url) for s in front.supervisor.slots
            if s.state in (WorkerState.READY, WorkerState.UNRESPONSIVE) and s.status and s.status.url]

    async def fetch(slot: WorkerSlot, url: str) -> tuple[int, str | None]:
        try:
            response = await asyncio.wait_for(front.workers.request(url, "GET", "/metrics"), METRICS_TIMEOUT_S)
        except (ApiError, TimeoutError):
            return slot.index, None  # a worker that cannot report is left out; /health says why
        return slot.index, response.text

    return {index: text for index, text in await asyncio.gather(*(fetch(s, url) for s, url in live)) if text is not None}
