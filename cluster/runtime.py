"""Ray itself: start a local Ray or join one, count its GPUs, start the worker actors, probe and kill them.

Everything that imports ``ray`` is here (and in ``cluster.worker``), imported only when ``--workers`` is given.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Sequence
from typing import Any

from cluster.config import ClusterConfig
from cluster.secrets import export_turn_secrets, require_ray_auth
from cluster.status import WorkerStatus
from cluster.supervisor import WorkerGone
from cluster.worker import EngineWorker, WorkerSpec
from engines.install_hint import install_hint
from rtc.ice_config import IceConfig

logger = logging.getLogger(__name__)


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ValueError(f"--workers needs Ray, which is not installed: {install_hint('cluster')}") from None
    return ray


def start_ray(config: ClusterConfig, ice: IceConfig) -> bool:
    """Joins ``config.ray_address``, or starts a local Ray sized for the workers; returns whether it started one
    (and so must stop it). Ray's token authentication is always on (``cluster.secrets``); the dashboard and usage
    statistics stay off; worker output stays in Ray's log files. Ray 2.60 will not bind a node to loopback
    (it swaps 127.0.0.1 for the machine's address), so its ports listen on every interface: docs/scale.md."""
    require_ray_auth(joining=bool(config.ray_address))
    ray = import_ray()
    export_turn_secrets(ice)  # a local Ray's workers inherit this environment
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    common: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    if config.ray_address:
        ray.init(address=config.ray_address, **common)
        logger.info("joined the Ray cluster at %s: %s", config.ray_address, ray.cluster_resources())
        return False
    cpus = max(1, math.ceil(config.workers * config.cpus_per_worker))
    ray.init(num_cpus=cpus, object_store_memory=config.object_store_bytes, **common)
    logger.info("started a local Ray with %d CPU(s) and %g GPU(s)", cpus, ray.cluster_resources().get("GPU", 0))
    return True


def cluster_gpus() -> int:
    """GPUs in the Ray cluster this process joined (after ``start_ray``)."""
    return int(import_ray().cluster_resources().get("GPU", 0))


def local_gpus() -> int:
    """GPUs this machine shows (CUDA_VISIBLE_DEVICES respected), before any Ray starts."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def spawn_workers(specs: Sequence[WorkerSpec], config: ClusterConfig) -> list[Any]:
    """One actor per spec. Ray restarts a dead one without limit (a restart rebuilds nothing: the node's engine
    cache holds the engines); a call in flight when it died fails and is not retried (the front probes again)."""
    ray = import_ray()
    actor_class = ray.remote(EngineWorker)
    return [actor_class.options(num_cpus=config.cpus_per_worker, num_gpus=config.gpus_per_worker,
                                max_restarts=-1, max_task_retries=0, max_concurrency=4,
                                name=f"sana-stream-worker-{spec.index}-{os.getpid()}").remote(spec)
            for spec in specs]


async def probe(actor: Any, timeout: float) -> WorkerStatus:
    """The worker's status; WorkerGone when its process is dead or restarting, TimeoutError when it is silent."""
    from ray.exceptions import RayActorError

    try:
        return await asyncio.wait_for(_awaitable(actor.status.remote()), timeout)
    except RayActorError as exc:  # its first line says why (a creation error's traceback follows it)
        first_line = (str(exc).strip().splitlines() or [""])[0][:200]
        raise WorkerGone(f"{type(exc).__name__}: {first_line}") from exc


async def _awaitable(ref: Any) -> Any:
    return await ref


def kill(actor: Any) -> None:
    """Kills the worker's process at once; Ray starts a new one."""
    import_ray().kill(actor, no_restart=False)


async def stop_workers(actors: Sequence[Any], timeout: float = 10.0) -> None:
    """Stops each worker's server (its peers close properly, so clients learn at once), then ends the actors."""
    ray = import_ray()
    from ray.exceptions import RayActorError

    async def stop(actor: Any) -> None:
        try:
            await asyncio.wait_for(_awaitable(actor.stop.remote(timeout)), timeout + 2)
        except (RayActorError, TimeoutError) as exc:
            logger.warning("a worker did not stop cleanly (%s); killing it", type(exc).__name__)
        ray.kill(actor, no_restart=True)

    await asyncio.gather(*(stop(actor) for actor in actors))


def stop_ray(started: bool) -> None:
    if started:
        import_ray().shutdown()
