"""``sana-stream serve --workers N|auto [--ray-address ADDRESS]``: Ray, the workers, the front, uvicorn."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import secrets
from pathlib import Path

import uvicorn

from cluster.config import AUTO, ClusterConfig, parse_workers
from cluster.forward import WorkerClient
from cluster.front import Front, create_front_app
from cluster.secrets import internal_token
from cluster.supervisor import Supervisor
from cluster.worker import WorkerSpec, for_workers
from server.app import ModelInfo
from server.serve import build_settings, choose_model, pages_present, run_server, uvicorn_config
from server.settings import ServerSettings

logger = logging.getLogger(__name__)


def run_cluster(args: argparse.Namespace) -> int:
    if args.workers is None:
        raise ValueError("--ray-address needs --workers (N or auto): the workers are what runs on Ray")
    requested = parse_workers(args.workers)
    if requested == AUTO and not args.ray_address:
        from cluster.runtime import local_gpus

        if local_gpus() == 0:
            logger.warning("--workers auto: this machine shows no GPU, so the server runs in one process, as "
                           "without --workers")
            return run_server(args)
    if getattr(args, "ndi", False):
        raise ValueError("--ndi works in the single-process server only, not with --workers")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per forwarded request otherwise
    if not pages_present(args):  # the front serves them: checked before Ray and the workers start
        return 2
    model, demo = choose_model(args.model)
    settings = build_settings(args, model)  # validates every option before Ray starts
    sizing = ClusterConfig(workers=1 if requested == AUTO else int(requested), ray_address=args.ray_address,
                           cpus_per_worker=args.worker_cpus)
    from cluster import runtime

    if requested == AUTO:  # a local Ray is sized for one worker per local GPU
        sizing = dataclasses.replace(sizing, workers=runtime.local_gpus() or 1)
    started = runtime.start_ray(sizing, settings.ice)
    try:
        config = _fit_to_gpus(sizing, requested, runtime.cluster_gpus(), joined=bool(args.ray_address))
        run = secrets.token_hex(8)  # workers accept only the front: a token derived from Ray's and this run
        actors = runtime.spawn_workers(_specs(args, settings, model, demo, config, run), config)
        front = Front(Supervisor(config, actors, runtime.probe, runtime.kill),
                      WorkerClient(internal_token(run), config.forward_timeout), lambda: runtime.stop_workers(actors))
        app = create_front_app(settings, _model_info(model, demo, settings.backend), front)
        scheme = "https" if settings.ssl_certfile else "http"
        logger.info("serving on %s://%s:%d with %d worker(s) on Ray", scheme, settings.host, settings.port,
                    config.workers)
        try:
            uvicorn.Server(uvicorn_config(app, settings)).run()  # the server's limits (docs/server.md) on the front
        except KeyboardInterrupt:  # Ctrl-C / SIGINT: a clean stop, as uvicorn.run has it
            pass
    finally:
        runtime.stop_ray(started)
    return 0


def _fit_to_gpus(config: ClusterConfig, requested: int | str, gpus: int, joined: bool) -> ClusterConfig:
    """One GPU per worker wherever the cluster has GPUs; ``auto`` means one worker per GPU. In a joined cluster
    more workers than GPUs wait for GPU nodes to join (an autoscaler's); on this machine they never would."""
    if requested == AUTO:
        if gpus == 0:
            raise ValueError(f"--workers auto: the Ray cluster at {config.ray_address} has no GPU yet; give a "
                             "number of workers, or start once its GPU nodes have joined")
        return dataclasses.replace(config, workers=gpus, gpus_per_worker=1.0)
    if gpus == 0:
        return config
    if config.workers > gpus:
        if not joined:
            raise ValueError(f"--workers {config.workers}: this machine has {gpus} GPU(s), one per worker")
        logger.warning("%d workers on %d GPU(s): the rest start as GPU nodes join the Ray cluster", config.workers,
                       gpus)
    return dataclasses.replace(config, gpus_per_worker=1.0)


def _specs(args: argparse.Namespace, settings: ServerSettings, model: str, demo: bool,
           config: ClusterConfig, run: str) -> list[WorkerSpec]:
    """The workers' specs from the front's settings, without a secret (``WorkerSpec``)."""
    loopback = settings.is_loopback and not config.ray_address
    name = _model_info(model, demo, "").name
    ice = settings.ice
    return [WorkerSpec(index=i, model=model, demo=demo, model_name=name, settings=for_workers(settings),
                       bind_loopback=loopback, run=run, ice_urls=tuple(str(u) for u in ice.urls),
                       turn_username=ice.turn_username, turn_ttl=ice.turn_ttl, cpus=config.cpus_per_worker,
                       precision=args.precision, log_level=getattr(args, "log_level", "INFO"))
            for i in range(config.workers)]


def _model_info(model: str, demo: bool, backend: str) -> ModelInfo:
    return ModelInfo(name=Path(model).name if demo else model, demo=demo, backend=backend)
