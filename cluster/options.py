"""The ``serve`` options of the scale-out (kept light: the CLI imports this module for every command)."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def add_cluster_options(parser: argparse.ArgumentParser, env: Callable[..., str | None]) -> None:
    """``env(name, default)``: the SANA_STREAM_<NAME> variable, as for every other ``serve`` option."""
    group = parser.add_argument_group("more than one GPU (Ray; docs/scale.md)")
    group.add_argument("--workers", default=env("workers"), metavar="N|auto",
                       help="run N engine workers as Ray actors behind this server (auto: one per GPU; without a GPU "
                            "auto serves in one process); --max-peers then counts per worker")
    group.add_argument("--ray-address", default=env("ray_address"), metavar="ADDRESS",
                       help="join this Ray cluster (workers on other machines) instead of starting a local Ray")
    group.add_argument("--worker-cpus", type=float, default=float(env("worker_cpus", "1") or 1),
                       help="CPUs each worker reserves and its engine's CPU threads use (default 1; a GPU "
                            "worker's video codecs want 2-4)")


def wants_cluster(args: argparse.Namespace) -> bool:
    return getattr(args, "workers", None) is not None or getattr(args, "ray_address", None) is not None
