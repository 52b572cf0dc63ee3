"""Running a benchmark step while the machine is quiet: other processes sharing the CPUs make timings noisy, so a
step can wait for them to calm down and be repeated, keeping the attempt they disturbed least."""

from __future__ import annotations

import logging
import math
import time
from typing import Callable, TypeVar

from benchmarks.timing import cpu_snapshot, other_cpu_share

logger = logging.getLogger(__name__)
NOISY_SHARE = 0.05  # other processes using more of the CPUs than this make timings unreliable
T = TypeVar("T")


def wait_for_quiet(max_wait_s: float, window_s: float = 5.0) -> float | None:
    """Waits until other processes use at most NOISY_SHARE of the CPUs over a window (at most ``max_wait_s``);
    returns the last window's share (None where it cannot be measured)."""
    deadline = time.monotonic() + max_wait_s
    while True:
        before = cpu_snapshot()
        time.sleep(window_s)
        share = other_cpu_share(before, cpu_snapshot())
        if share is None or share <= NOISY_SHARE or time.monotonic() >= deadline:
            return share


def run_quietest(name: str, step: Callable[[], T], retries: int = 0,
                 wait_quiet_s: float = 0.0) -> tuple[T, list[float | None]]:
    """Runs one step; while other processes used more than NOISY_SHARE of the CPUs during it, runs it again (at
    most ``retries`` times) and keeps the attempt they disturbed least. Before each attempt it waits up to
    ``wait_quiet_s`` for quiet. The choice depends on the machine's load only, never on the result."""
    best: tuple[float, T] | None = None
    shares: list[float | None] = []
    for attempt in range(1 + retries):
        if wait_quiet_s > 0:
            wait_for_quiet(wait_quiet_s)
        t0, before = time.perf_counter(), cpu_snapshot()
        result = step()
        share = other_cpu_share(before, cpu_snapshot())
        shares.append(share)
        logger.info("%s done in %.1f s (attempt %d, other processes' CPU share %s)", name,
                    time.perf_counter() - t0, attempt + 1, "unknown" if share is None else f"{share:.0%}")
        if best is None or (share is not None and share < best[0]):
            best = (share if share is not None else math.inf, result)
        if share is None or share <= NOISY_SHARE:
            break
    assert best is not None
    return best[1], shares
