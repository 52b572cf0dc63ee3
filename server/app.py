"""The FastAPI application: WebRTC offers, WHIP ingest and WHEP egress (server.wish_routes), receive-only viewers,
live prompts, health, metrics, and the web pages."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, AsyncIterator

from fastapi import Depends, FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from engines import batching_pays
from server.api_docs import install_api_docs
from server.auth import Scope, authorizer, sees_details
from server.body_limit import BodyLimitMiddleware
from server.dtls_ciphers import allow_rsa_senders
from server.errors import ApiError, install_error_handlers
from server.hosts import HostCheckMiddleware
from server.ice_routes import add_ice_routes
from server.keyed_locks import KeyedLocks
from server.metrics import StreamCollector, StreamReport, exposition
from server.ndi_outputs import NdiOutputs
from server.openapi import document_api
from server.pages import find_pages, mount_pages
from server.peers import PeerKind, PeerManager
from server.reports import health_rates, stream_reports
from server.schemas import (
    Answer,
    Health,
    Liveness,
    Offer,
    PromptState,
    PromptUpdate,
    ServerConfig,
    StreamSettingsOut,
    ViewAnswer,
    ViewOffer,
    ViewToken,
)
from server.security_headers import SecurityHeadersMiddleware
from server.settings import BODY_MAX_BYTES, ServerSettings
from server.tracks import to_video_frame
from server.turn_status import ServerIce
from server.viewers import ViewerManager
from server.wish_routes import add_wish_routes
from stream.engine import StreamEngine
from stream.pipeline import FramePipeline, PipelineConfig
from stream.state import StreamSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    demo: bool  # the built-in demo model (server.serve.choose_model): its output is not a real style
    backend: str
    demo_label: str | None = None  # what the demo model is, for the page's badge (server.serve.demo_label)


def _settings_out(s: StreamSettings) -> StreamSettingsOut:
    return StreamSettingsOut(prompt=s.prompt, negative_prompt=s.negative_prompt, seed=s.seed, t_list=list(s.t_list),
                             strength=s.t_list[0], guidance_scale=s.guidance_scale, cfg_scale=s.cfg_scale,
                             delta=s.delta, control_scales=list(s.control_scales))


def streams_per_call(engine: StreamEngine) -> int | None:
    """PipelineConfig.max_batch for the server: every stream in one call where batching pays (a GPU,
    ``engines.batching_pays``), else one, the streams taking turns: the rate per stream is the same, but each
    output comes one call after its camera frame instead of after the whole batch (with four peers, ~1 call
    instead of ~4: benchmarks/README.md#server)."""
    return None if batching_pays(engine.backend.geometry.device) else 1


def install_http_guards(app: FastAPI, settings: ServerSettings) -> None:
    """The Host check, CORS, the body cap, the JSON error format and the security headers (docs/server.md), for the
    server and the cluster front alike. Added innermost first: the headers go on every answer, then the Host check
    runs before everything else, then CORS, then the cap."""
    app.add_middleware(BodyLimitMiddleware, max_bytes=BODY_MAX_BYTES, timeout=settings.request_timeout)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["*"],
                           allow_headers=["Authorization", "Content-Type"], expose_headers=["Location", "Link"])
    if "*" not in settings.allowed_hosts:
        app.add_middleware(HostCheckMiddleware, allowed_hosts=settings.trusted_hosts)
    install_error_handlers(app)
    app.add_middleware(SecurityHeadersMiddleware)  # outermost: on every answer, the guards' refusals included


def create_app(settings: ServerSettings, engine: StreamEngine, model: ModelInfo) -> FastAPI:
    """Builds the app around an engine; the pipeline and peers live as long as the app's lifespan."""
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        ice = ServerIce(settings.ice)
        await ice.check()  # at most a few seconds: each TURN server that fails is a warning naming it
        pipeline = FramePipeline(engine, PipelineConfig(convert=to_video_frame, max_batch=streams_per_call(engine)))
        state["pipeline"] = pipeline
        locks = KeyedLocks()  # one per stream id, for its peer and its viewers
        state["peers"] = PeerManager(pipeline, settings.max_peers, settings.idle_timeout, ice=ice, locks=locks)
        state["viewers"] = ViewerManager(pipeline, settings.viewer_cap, ice=ice, locks=locks)
        state["peers"].on_close = state["viewers"].close_stream  # a stream's viewers go when it goes
        state["ndi"] = ndi = NdiOutputs(pipeline) if settings.ndi else None
        if ndi is not None:
            state["peers"].stream_tasks.append(ndi.publish)
        app.state.goodbye = goodbye
        try:
            yield
        finally:
            await goodbye()
            if ndi is not None:
                await ndi.close_all()
            pipeline.close()

    async def goodbye() -> None:
        """Closes every viewer's and peer's connection (an SCTP ABORT closes their data channels, then DTLS says
        close_notify), so that clients reconnect at once instead of waiting for silence; ``serve`` calls it first
        thing on SIGTERM (``server.serve.GoodbyeServer``), the lifespan's end again (by then a no-op)."""
        await state["viewers"].close_all()
        await state["peers"].close_all()

    app = FastAPI(title="sana-stream", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Real-time Sana-Sprint img2img over WebRTC. Errors are JSON: {error, detail}.")
    allow_rsa_senders()  # GStreamer webrtcbin and other senders with RSA certificates (server.dtls_ciphers)
    install_http_guards(app, settings)

    authorize = authorizer(settings.token, settings.view_token_in_force, Scope.FULL)
    authorize_view = authorizer(settings.token, settings.view_token_in_force, Scope.VIEW)

    def peers() -> PeerManager:
        return state["peers"]

    def viewers() -> ViewerManager:
        return state["viewers"]

    @app.post("/offer", response_model=Answer, dependencies=[Depends(authorize)])
    async def offer(body: Offer) -> Answer:
        """A browser or script sends its camera; the answer returns the restyled video on the same connection."""
        peer, sdp = await peers().accept(body.sdp, body.type, PeerKind.CAMERA, body.stream, body.repeat)
        return Answer(sdp=sdp, type="answer", stream=peer.id)

    @app.post("/view/offer", response_model=ViewAnswer, dependencies=[Depends(authorize_view)])
    async def view_offer(body: ViewOffer) -> ViewAnswer:
        """A receive-only viewer of one stream (the /view page, an OBS Browser Source): its offer receives video
        and sends nothing. 404 for an unknown stream; viewers have their own cap, apart from max_peers."""
        viewer, sdp = await viewers().accept(body.sdp, body.type, body.stream, body.repeat)
        return ViewAnswer(sdp=sdp, type="answer", viewer=viewer.id)

    @app.get("/config", response_model=ServerConfig)
    async def config() -> ServerConfig:
        """What the pages need first: the output size (to ask the camera for it) and whether a token is needed."""
        return ServerConfig(width=engine.config.width, height=engine.config.height,
                            token_required=settings.token is not None, max_peers=settings.max_peers,
                            max_viewers=settings.viewer_cap, model=model.name, demo_model=model.demo,
                            demo_label=model.demo_label, defaults=_settings_out(engine.settings()))

    @app.post("/prompt", response_model=PromptState, dependencies=[Depends(authorize)])
    async def set_prompt(body: PromptUpdate) -> PromptState:
        """Changes live settings on the next frames; answers with the settings now in force."""
        changes = body.model_dump(exclude_none=True, exclude={"stream"})
        applied = await run_in_threadpool(engine.update, body.stream, **changes)
        return PromptState(streams={sid: _settings_out(s) for sid, s in applied.items()})

    @app.get("/prompt", response_model=PromptState, dependencies=[Depends(authorize)])
    async def get_prompt(stream: str | None = None) -> PromptState:
        ids = [stream] if stream is not None else engine.stream_ids()
        return PromptState(streams={sid: _settings_out(engine.settings(sid)) for sid in ids})

    def reports() -> list[StreamReport]:
        return stream_reports(peers(), viewers(), state["pipeline"])

    collector = StreamCollector(
        reports, lambda: {"peers": ("Camera and WHIP peers.", float(len(peers().peers))),
                          "viewers": ("Receive-only viewers.", float(len(viewers().viewers)))},
        lambda: state["pipeline"].batch_errors)

    @app.get("/health", response_model=Health | Liveness)
    async def health(request: Request) -> Health | Liveness:
        """Model and device, the peers, viewers and streams, and each stream's frame rates; with ``--token`` and
        no Authorization header, only ``{"status": "ok"}`` (a liveness probe)."""
        if not sees_details(settings.token, settings.view_token_in_force, request.headers.get("authorization", "")):
            return Liveness(status="ok")
        geo = engine.backend.geometry
        rates = health_rates(reports())
        return Health(status="ok", model=model.name, demo_model=model.demo, backend=model.backend,
                      device=str(geo.device), dtype=str(geo.dtype).removeprefix("torch."),
                      streams=len(state["pipeline"].stream_ids()), peers=len(peers().peers),
                      viewers=len(viewers().viewers), fps={sid: r.generated_fps for sid, r in rates.items()},
                      rates=rates)

    @app.get("/metrics", dependencies=[Depends(authorize)])
    async def metrics() -> Response:
        """Prometheus text: per stream (labels stream, kind) frames received, generated and sent, their rates,
        drops, skips, engine errors and the latency histogram; peers, viewers and failed engine calls."""
        return Response(exposition(collector), media_type=CONTENT_TYPE_LATEST)

    add_ice_routes(app, settings, peers, viewers)
    add_wish_routes(app, settings.ice, authorize, authorize_view, peers, viewers)
    install_api_docs(app)
    document_api(app, token_required=settings.token is not None)

    if settings.pages:
        mount_pages(app, find_pages())
    else:
        logger.warning("--no-pages: serving the API only; / and /view answer 404")
    app.state.peers = peers
    app.state.viewers = viewers
    app.state.runtime = state
    return app
