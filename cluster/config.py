"""The scale-out settings: how many workers, where Ray runs, and how the front judges a worker's health."""

from __future__ import annotations

import math
from dataclasses import dataclass

AUTO = "auto"  # --workers auto: one worker per visible GPU


def parse_workers(text: str) -> int | str:
    """``--workers``: ``auto`` or a whole number of workers, at least 1."""
    if text.strip().lower() == AUTO:
        return AUTO
    try:
        count = int(text)
    except ValueError:
        raise ValueError(f"--workers must be 'auto' or a whole number of workers, got {text!r}") from None
    if count < 1:
        raise ValueError(f"--workers must be at least 1, got {count}")
    return count


@dataclass(frozen=True)
class ClusterConfig:
    workers: int  # engine workers, each a Ray actor with its own engine
    ray_address: str | None = None  # join this Ray cluster; None: a local Ray starts and stops with the server
    cpus_per_worker: float = 1.0  # Ray CPUs each worker reserves (Ray sets its OMP_NUM_THREADS from it)
    gpus_per_worker: float = 0.0  # 1.0 where GPUs exist: each worker gets its own
    probe_interval: float = 1.0  # seconds between status probes of each worker
    probe_timeout: float = 3.0  # a probe not answered in this time counts as no answer
    # no answer, or camera input arriving while the engine finishes no call, for this long: the worker is stuck,
    # counts as dead, and is killed so that Ray restarts it
    stuck_timeout: float = 30.0
    # the front serves once every worker is ready or failed, or this long after the first is ready (the others,
    # say waiting for a GPU node to join, take streams when they are ready)
    start_grace: float = 60.0
    forward_timeout: float = 30.0  # seconds a forwarded request (an SDP exchange, a prompt) may take on a worker
    # Ray's shared-memory object store for a local cluster: the workers exchange only small status records
    object_store_bytes: int = 100 * 1024 * 1024

    def __post_init__(self) -> None:
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"workers must be a whole number of at least 1, got {self.workers!r}")
        for name in ("cpus_per_worker", "probe_interval", "probe_timeout", "stuck_timeout", "start_grace",
                     "forward_timeout"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not math.isfinite(self.gpus_per_worker) or self.gpus_per_worker < 0:
            raise ValueError(f"gpus_per_worker must be 0 or more, got {self.gpus_per_worker!r}")
        if self.stuck_timeout <= self.probe_timeout:
            raise ValueError(f"stuck_timeout ({self.stuck_timeout:g} s) must exceed probe_timeout "
                             f"({self.probe_timeout:g} s)")
