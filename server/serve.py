"""``sana-stream serve``: choose the model, build the engine and the app, run uvicorn."""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import uvicorn

from engines import BackendName, batching_pays, resolve_backend
from engines.cache import cache_root
from rtc.ice import include_loopback_candidates
from rtc.ice_config import IceConfig
from rtc.ndi import NdiUnavailable, load_ndi
from server.app import ModelInfo, create_app
from server.default_model import ModelSource, announce_download, default_model_source, hub_reachable
from server.http_protocol import guarded_protocol
from server.pages import PagesMissingError, find_pages
from server.settings import DEFAULT_MODEL, KEEP_ALIVE_TIMEOUT_S, ServerSettings
from stream import ModelNotFoundError, StreamConfig, StreamEngine
from stream.config import even_t_list
from stream.control import ControlNetConfig
from stream.config import AutoencoderKind
from stream.demo_manifest import TRAINED_DEMO_DIR, DemoManifest
from stream.demo_model import make_demo_model
from stream.loading import choose_placement, resolve_model_dir

if TYPE_CHECKING:
    from fastapi import FastAPI

    from engines.compile_options import CompileOptions

logger = logging.getLogger(__name__)

DEMO_BANNER = """
************************************************************************************
*  DEMO MODE: no Sana-Sprint weights were given or found in the Hugging Face cache, *
*  and this machine has no CUDA GPU with the hub in reach to download them.         *
*  Serving the built-in %s
*  Use real weights with: make serve ARGS="--model %s"
************************************************************************************"""
RANDOM_DEMO_LABEL = ("demo model: random weights, its output is not a style; real styles need Sana-Sprint weights "
                     "(a GPU)")
DEFAULT_PROMPT = "a watercolor painting"


def _cached_default() -> bool:
    try:
        resolve_model_dir(DEFAULT_MODEL, local_files_only=True)
    except ModelNotFoundError:
        return False
    return True


def choose_model(requested: str | None, *, gpu: Callable[[], bool] = torch.cuda.is_available,
                 online: Callable[[], bool] = hub_reachable) -> tuple[str, bool]:
    """The model to load and whether it is the demo model (``server.default_model``): a requested model as it is,
    else cached real weights, else on a GPU with the hub in reach the real weights, downloaded now, else the demo
    model (written once under the cache directory)."""
    source = default_model_source(requested, cached=_cached_default, gpu=gpu, online=online)
    if source is ModelSource.REQUESTED:
        return str(requested), False
    if source is ModelSource.CACHED:
        return str(resolve_model_dir(DEFAULT_MODEL, local_files_only=True)), False
    if source is ModelSource.DOWNLOAD:
        announce_download(DEFAULT_MODEL)
        return str(resolve_model_dir(DEFAULT_MODEL, local_files_only=False)), False
    if (TRAINED_DEMO_DIR / "model_index.json").exists():
        demo = TRAINED_DEMO_DIR
    else:  # a checkout without the committed weights (docs/demo-model.md says how to train them)
        logger.warning("the trained demo model is missing from %s: serving a random one", TRAINED_DEMO_DIR)
        demo = cache_root() / "demo-model"
        if not (demo / "model_index.json").exists():
            make_demo_model(demo)
    logger.warning(DEMO_BANNER, demo_label(str(demo)), DEFAULT_MODEL)
    return str(demo), True


def warn_secrets_on_command_line(args: argparse.Namespace) -> None:
    """One warning naming each secret option given on the command line (``SecretOption``)."""
    options = sorted(set(getattr(args, "secrets_on_command_line", [])))
    if options:
        logger.warning("%s given on the command line: every user of this machine can read it (ps, /proc); pass "
                       "%s in the environment instead", ", ".join(options),
                       ", ".join(f"SANA_STREAM_{o.removeprefix('--').replace('-', '_').upper()}" for o in options))


def demo_label(model: str) -> str:
    """What the page's badge and the log say about a demo model: a trained one's filters, else random weights."""
    manifest = DemoManifest.read(model)
    return manifest.label() if manifest is not None else RANDOM_DEMO_LABEL


def build_settings(args: argparse.Namespace, model: str) -> ServerSettings:
    """The server's settings from the options. A trained demo model (one with a ``demo_model.json``) is served the
    way it was trained: its first prompt and its autoencoder, unless the options name others."""
    warn_secrets_on_command_line(args)
    backend = resolve_backend(args.backend).value
    t_list = tuple(args.t_list) if args.t_list else even_t_list(args.strength, args.steps)
    controlnets = tuple(ControlNetConfig.from_option(c) for c in args.controlnet)
    demo = DemoManifest.read(model) if Path(model).is_dir() else None
    prompt = args.prompt if args.prompt is not None else demo.prompts[0] if demo else DEFAULT_PROMPT
    encoder = args.encoder or (demo.encoder if demo else AutoencoderKind.DCAE.value)
    decoder = args.decoder or (demo.decoder if demo else AutoencoderKind.DCAE.value)
    stream = StreamConfig(width=args.width, height=args.height, t_list=t_list, prompt=prompt,
                          cfg_type=args.cfg_type, encoder=encoder, decoder=decoder,
                          tiny_vae=args.tiny_vae, similarity_filter=args.similarity_filter, seed=args.seed,
                          backend=backend, controlnets=controlnets)
    max_viewers = None if args.max_viewers < 0 else args.max_viewers
    return ServerSettings(model=model, host=args.host, port=args.port, backend=backend, stream=stream,
                          token=args.token, view_token=args.view_token, max_peers=args.max_peers,
                          max_viewers=max_viewers, idle_timeout=args.idle_timeout,
                          cors_origins=tuple(args.cors_origin),
                          ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile,
                          allow_public_without_token=args.allow_public_without_token, pages=not args.no_pages,
                          ice=IceConfig.from_options(args.ice_server, args.turn_username, args.turn_credential,
                                                     args.turn_secret, args.turn_ttl),
                          allowed_hosts=tuple(args.allowed_host), request_timeout=args.request_timeout,
                          max_connections=args.max_connections, ndi=args.ndi)


def compile_options(stream: StreamConfig, max_peers: int, **options: Any) -> CompileOptions | None:
    """How ``serve`` builds the compiled backends (None for torch); ``options`` go to CompileOptions. The parts
    take any batch from one row up to what they are built for, and each call runs the rows it has (one peer pays
    for one frame): they are built for ``max_peers`` streams where one model call serves every peer
    (``engines.batching_pays``), else for one, since there the streams take turns, one per call, and buffers for
    more would never be filled."""
    if stream.backend is BackendName.TORCH:
        return None
    from engines.compile_options import CompileOptions

    shared = batching_pays(choose_placement(stream.device, None).device)
    return CompileOptions(streams=max_peers if shared else 1, **options)


def pages_present(args: argparse.Namespace) -> bool:
    """False, with the reason logged, when the pages are wanted (no ``--no-pages``) and missing."""
    if args.no_pages:
        return True
    try:
        find_pages()
    except PagesMissingError as exc:
        logger.error("%s", exc)
        return False
    return True


def ndi_loads(args: argparse.Namespace) -> bool:
    """False, with the reason logged, when ``--ndi`` is asked for and the NDI runtime cannot load."""
    if not args.ndi:
        return True
    try:
        load_ndi()
    except NdiUnavailable as exc:
        logger.error("%s", exc)
        return False
    return True


def run_server(args: argparse.Namespace) -> int:
    if not pages_present(args):  # before the (slow) model load; create_app looks them up again
        return 2
    if not ndi_loads(args):
        return 1
    model, demo = choose_model(args.model)
    settings = build_settings(args, model)  # validates everything before the (slow) model load
    options = compile_options(settings.stream, settings.max_peers, precision=args.precision)
    engine = StreamEngine.from_pretrained(model, settings.stream, compile_options=options)
    if settings.is_loopback:
        include_loopback_candidates()
    app = create_app(settings, engine, ModelInfo(name=Path(model).name if demo else model, demo=demo,
                                                 backend=settings.backend,
                                                 demo_label=demo_label(model) if demo else None))
    scheme = "https" if settings.ssl_certfile else "http"
    logger.info("serving on %s://%s:%d", scheme, settings.host, settings.port)
    try:
        GoodbyeServer(uvicorn_config(app, settings)).run()
    except KeyboardInterrupt:  # Ctrl-C / SIGINT: a clean stop, as uvicorn.run has it
        pass
    return 0


class GoodbyeServer(uvicorn.Server):
    """uvicorn whose shutdown (SIGTERM, Ctrl-C) starts with the app's goodbye (``app.state.goodbye``: every peer's
    and viewer's connection closed), right after it stops accepting connections: clients start reconnecting at once,
    not after uvicorn has waited for open HTTP requests to finish (docs/server.md#stopping)."""

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        for server in self.servers:
            server.close()  # no new offer while saying goodbye; uvicorn's own shutdown closes them again, harmlessly
        goodbye = getattr(getattr(self.config.app, "state", None), "goodbye", None)
        if goodbye is not None and not self.force_exit:
            started = time.monotonic()
            await goodbye()
            logger.info("said goodbye to every client in %.2f s", time.monotonic() - started)
        await super().shutdown(sockets)


def uvicorn_config(app: FastAPI, settings: ServerSettings, **overrides: Any) -> uvicorn.Config:
    """uvicorn with the server's limits (docs/server.md): idle keep-alive connections close after
    KEEP_ALIVE_TIMEOUT_S; a request's head must arrive within ``request_timeout`` (its body has the same again,
    ``server.body_limit``); at most ``max_connections`` connections are open, and with that many uvicorn answers
    503 (``limit_concurrency``)."""
    options: dict[str, Any] = dict(
        host=settings.host, port=settings.port, ssl_certfile=settings.ssl_certfile, ssl_keyfile=settings.ssl_keyfile,
        log_level="info", timeout_keep_alive=KEEP_ALIVE_TIMEOUT_S, limit_concurrency=settings.max_connections,
        http=guarded_protocol(settings.request_timeout, settings.max_connections))
    return uvicorn.Config(app, **{**options, **overrides})
