"""Where a new stream goes: back to its worker when it reconnects, else where it will get the most frames.

A worker's headroom is the rate its engine sustains for one stream divided by the streams it would then hold:
on a CPU the streams take turns, so each gets about ``rate / streams``; on a GPU batching makes that a lower
bound. Measured rates make a mixed cluster (an H100 beside an L4) fill in proportion to speed. Headrooms within
NEAR of the best count as equal and the worker with fewer streams wins among them: identical workers measure
rates a little apart, and should still take turns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

NEAR = 0.7  # a headroom at least this fraction of the best one counts as equally good


class NoCapacity(Exception):
    """Every ready worker holds its maximum of streams (or none is ready)."""

    def __init__(self, ready: int) -> None:
        self.ready = ready
        super().__init__(f"no worker can take a stream ({ready} ready, all full)" if ready else "no worker is ready")


@dataclass(frozen=True)
class Candidate:
    worker: int
    streams: int  # streams it holds now, plus offers on their way to it
    max_peers: int
    rate_fps: float | None  # measured frames a second for one stream; None: not measured yet

    @property
    def full(self) -> bool:
        return self.streams >= self.max_peers


def headroom(candidate: Candidate, fallback_rate: float) -> float:
    """Frames a second each of its streams would get with one more."""
    rate = candidate.rate_fps if candidate.rate_fps else fallback_rate
    return rate / (candidate.streams + 1)


def choose_worker(ready: Sequence[Candidate], owner: int | None = None) -> int:
    """The worker for a new offer among the ``ready`` ones. ``owner``: the worker holding this stream id now (a
    client reconnecting); it keeps the stream, full or not, since the new connection replaces the old one."""
    if owner is not None and any(c.worker == owner for c in ready):
        return owner
    open_ = [c for c in ready if not c.full]
    if not open_:
        raise NoCapacity(len(ready))
    known = sorted(c.rate_fps for c in ready if c.rate_fps)
    fallback = known[len(known) // 2] if known else 1.0
    best = max(headroom(c, fallback) for c in open_)
    near = [c for c in open_ if headroom(c, fallback) >= NEAR * best]
    return min(near, key=lambda c: (c.streams, -headroom(c, fallback), c.worker)).worker
