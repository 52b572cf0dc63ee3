"""An engine worker: the single-process server (engine, pipeline, aiortc peers, viewers) on its own port, inside
a Ray actor process. Its media sockets are its own, so clients exchange video with it directly.

The actor's ``__init__`` only starts a thread that builds the engine and serves; Ray calls ``status`` (and
``stop``) on the actor's own threads meanwhile, so the front sees the worker starting, ready, or failed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cluster.node_cache import build_key, node_lock, once_per_node
from cluster.secrets import internal_token, worker_ice
from cluster.status import INPUT_RECENT_S, EngineSource, ProgressWatch, StreamReport, WorkerPhase, WorkerStatus
from rtc.ice_config import DEFAULT_TURN_TTL_S, IceConfig
from server.reports import health_rates, stream_reports
from server.settings import ServerSettings

logger = logging.getLogger(__name__)
TICK_S = 0.5  # how often the server loop proves it runs (WorkerStatus.loop_lag_s)
RATE_PROBE_S = 1.0  # seconds of engine calls timed at start (at least three calls, at most RATE_PROBE_CALLS)
RATE_PROBE_CALLS = 10


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs, sent to its actor by Ray (so: picklable), and no secret: Ray keeps actor specs
    in its GCS. The worker derives the front's token from Ray's (``cluster.secrets``) and reads the TURN secret
    or credential from its environment."""

    index: int
    model: str
    demo: bool  # the tiny random demo model, written on the worker's node when missing there
    model_name: str  # as /health and /config show it
    settings: ServerSettings  # ``for_workers(front's settings)``: no token, no ICE servers (``ice_urls``)
    bind_loopback: bool  # a local cluster serving this machine: bind 127.0.0.1 and offer loopback candidates
    run: str = ""  # names this run of the front: the worker's token is derived from it and Ray's token
    ice_urls: tuple[str, ...] = ()
    turn_username: str | None = None  # static TURN credentials' user (its password comes from the environment)
    turn_ttl: float = DEFAULT_TURN_TTL_S
    cpus: float = 1.0  # its Ray CPU reservation: the engine's CPU threads (torch and onnxruntime) keep to it
    precision: str | None = None
    log_level: str = "INFO"


def for_workers(settings: ServerSettings) -> ServerSettings:
    """The front's settings as its workers get them: no secret (``WorkerSpec``), no TLS, no CORS, no pages; each
    binds its own address and a free port (``EngineWorker``; loopback until then)."""
    return dataclasses.replace(settings, host="127.0.0.1", token=None, view_token=None, ice=IceConfig(),
                               cors_origins=(), ssl_certfile=None, ssl_keyfile=None, allow_public_without_token=False,
                               pages=False)


def worker_settings(spec: WorkerSpec) -> ServerSettings:
    """What a worker serves with: the spec's settings, the token only the front has (derived from Ray's), and the
    ICE servers with the TURN secret from this node's environment. ValueError when one of those is missing."""
    return dataclasses.replace(spec.settings, token=internal_token(spec.run),
                               ice=worker_ice(spec.ice_urls, spec.turn_username, spec.turn_ttl))


def measure_rate(engine: Any, width: int, height: int) -> float:
    """Frames a second the engine gives one stream alone, from its fastest call on fresh noise (so a similarity
    filter skips none; the first, cold call not counted): other processes starting beside it (the other workers,
    on a shared machine) only ever slow a call down, so the fastest is the one that tells the hardware."""
    rng = np.random.default_rng(0)
    frame = lambda: rng.integers(0, 256, (height, width, 3), dtype=np.uint8)  # noqa: E731
    engine(frame())
    calls: list[float] = []
    started = time.perf_counter()
    while len(calls) < 3 or (len(calls) < RATE_PROBE_CALLS and time.perf_counter() - started < RATE_PROBE_S):
        begun = time.perf_counter()
        engine(frame())
        calls.append(time.perf_counter() - begun)
    return 1.0 / min(calls)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:  # the loop `sana-stream serve` gets from uvicorn when uvloop is installed
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class EngineWorker:
    """The actor class (``cluster.runtime`` wraps it with ``ray.remote``)."""

    def __init__(self, spec: WorkerSpec) -> None:
        logging.basicConfig(level=spec.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.spec = spec
        self.settings = spec.settings  # worker_settings(spec) once the serving thread runs: status() says why not
        self.incarnation = uuid.uuid4().hex[:8]
        self._host = "127.0.0.1" if spec.bind_loopback else _node_address()
        self._phase, self._error, self._url = WorkerPhase.STARTING, None, None
        self._engine_source: EngineSource | None = None
        self._rate: float | None = None
        self._device, self._dtype = "", ""
        self._app: Any = None
        self._server: Any = None
        self._tick = time.monotonic()
        self._watch = ProgressWatch()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"sana-worker-{spec.index}", daemon=True)
        self._thread.start()

    # ---- Ray methods ---------------------------------------------------------------------------------------

    def status(self) -> WorkerStatus:
        now = time.monotonic()
        common = dict(incarnation=self.incarnation, pid=os.getpid(), node=self._host, phase=self._phase,
                      url=self._url, device=self._device, dtype=self._dtype, engine=self._engine_source,
                      rate_fps=self._rate, max_peers=self.spec.settings.max_peers, error=self._error)
        if self._phase is not WorkerPhase.READY:
            return WorkerStatus(**common)
        peers = dict(self._app.state.peers().peers)
        pipeline = self._app.state.runtime["pipeline"]
        streams = []
        for peer_id, peer in peers.items():
            try:
                generated = pipeline.stats(peer_id).generated
            except KeyError:  # closed between the two reads
                continue
            streams.append(StreamReport(peer_id, peer.meter.fps(now), generated))
        arriving = any(p.has_input and now - p.last_input < INPUT_RECENT_S for p in peers.values())
        with self._lock:
            stalled = self._watch.observe(pipeline.batches, arriving, now)
        rates = health_rates(stream_reports(self._app.state.peers(), self._app.state.viewers(), pipeline))
        return WorkerStatus(**common, streams=tuple(streams), rates=rates,
                            viewers=len(self._app.state.viewers().viewers),
                            loop_lag_s=max(0.0, now - self._tick), stalled_s=stalled)

    def stop(self, timeout: float = 10.0) -> None:
        """Closes every peer (clients see the connection close at once) and the engine's threads."""
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join(timeout)

    # ---- the serving thread --------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._app = self._build_app()
            loop = _new_loop()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve())
            finally:
                loop.close()
        except Exception as exc:  # reported through status(): the front logs it and places nothing here
            logger.exception("worker %d failed", self.spec.index)
            self._phase, self._error = WorkerPhase.FAILED, f"{type(exc).__name__}: {exc}"

    def _build_app(self) -> Any:
        import torch

        from rtc.ice import include_loopback_candidates
        from server.app import ModelInfo, create_app
        from server.serve import compile_options, demo_label
        from stream import StreamEngine

        spec = self.spec
        settings = self.settings = worker_settings(spec)  # a missing secret fails the worker, with the reason
        stream = settings.stream
        model = self._model_path()
        threads = max(1, int(spec.cpus))  # Ray reserves CPUs but pins nothing: left alone, each would use all
        torch.set_num_threads(threads)
        options = compile_options(stream, settings.max_peers, precision=spec.precision, threads=threads)

        def build() -> StreamEngine:
            return StreamEngine.from_pretrained(model, stream, compile_options=options)

        if options is None:
            engine, self._engine_source = build(), EngineSource.UNCOMPILED
        else:
            key = build_key(model, stream, options, _device_name())
            engine, self._engine_source = once_per_node(Path(options.cache_dir), key, build)
        geometry = engine.backend.geometry
        self._device, self._dtype = str(geometry.device), str(geometry.dtype).removeprefix("torch.")
        self._rate = measure_rate(engine, stream.width, stream.height)
        logger.info("worker %d: engine ready on %s (%s, %d CPU threads), %.2f frames/s for one stream", spec.index,
                    self._device, self._engine_source.value, threads, self._rate)
        if spec.bind_loopback:
            include_loopback_candidates()
        return create_app(dataclasses.replace(settings, host=self._host, port=0), engine,
                          ModelInfo(name=spec.model_name, demo=spec.demo, backend=settings.backend,
                                    demo_label=demo_label(model) if spec.demo else None))

    def _model_path(self) -> str:
        model = self.spec.model
        if self.spec.demo and not (Path(model) / "model_index.json").exists():  # another node than the front's
            from stream.demo_model import make_demo_model

            with node_lock(Path(model).parent):
                if not (Path(model) / "model_index.json").exists():
                    make_demo_model(model)
        return model

    async def _serve(self) -> None:
        import uvicorn

        from server.serve import uvicorn_config

        settings = dataclasses.replace(self.settings, host=self._host, port=0)
        server = uvicorn.Server(uvicorn_config(self._app, settings, log_level="warning"))
        self._server = server
        ticker = asyncio.ensure_future(self._tick_loop())
        serving = asyncio.ensure_future(server.serve())
        try:
            while not server.started and not serving.done():
                await asyncio.sleep(0.05)  # uvicorn offers no started event
            if not server.started:
                serving.result()
                raise RuntimeError("the worker's HTTP server did not start")
            port = server.servers[0].sockets[0].getsockname()[1]
            self._url = f"http://{self._host}:{port}"
            self._phase = WorkerPhase.READY
            logger.info("worker %d serving on %s", self.spec.index, self._url)
            await serving
        finally:
            ticker.cancel()

    async def _tick_loop(self) -> None:
        while True:
            self._tick = time.monotonic()
            await asyncio.sleep(TICK_S)


def _node_address() -> str:
    import ray

    return ray.util.get_node_ip_address()


def _device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
