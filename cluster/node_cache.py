"""Engines built once per node: the first worker on a node builds the compiled engines into the node's engine
cache while the others wait, then they all load from it.

Every worker would otherwise find the cache empty at the same moment and build the same engines side by side
(a TensorRT build takes minutes and a GPU's memory). A file lock in the cache directory serialises the first
build; a marker file, written once it succeeded, lets later workers skip the lock and load in parallel.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from cluster.status import EngineSource

logger = logging.getLogger(__name__)
T = TypeVar("T")
LOCK_NAME = ".sana-stream-build.lock"


def build_key(*parts: object) -> str:
    """A short digest of everything the engines depend on (model, stream config, compile options)."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


@contextlib.contextmanager
def node_lock(cache_dir: Path) -> Iterator[None]:
    """An exclusive lock shared by every process on this node that uses ``cache_dir``."""
    import fcntl  # POSIX only, like Ray's multi-node support

    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / LOCK_NAME, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def once_per_node(cache_dir: Path, key: str, build: Callable[[], T]) -> tuple[T, EngineSource]:
    """Runs ``build`` (which fills the node's engine cache and returns the engine): under the node's lock for the
    first worker, freely once a worker has built ``key`` on this node."""
    marker = cache_dir / f".built-{key}"
    if marker.exists():
        return build(), EngineSource.CACHED
    with node_lock(cache_dir):
        if not marker.exists():
            logger.info("building the engines for this node (key %s); other workers here wait for them", key)
            result = build()
            marker.write_text("built\n")
            return result, EngineSource.BUILT
    return build(), EngineSource.CACHED
