"""What a worker reports about itself (a Ray method's return value), and the watch that tells a stuck engine."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server.schemas import StreamRates

INPUT_RECENT_S = 2.0  # a camera frame this recent means the engine has work to do


class WorkerPhase(str, enum.Enum):
    STARTING = "starting"  # building or loading its engine, measuring its rate, starting its server
    READY = "ready"  # serving on ``url``
    FAILED = "failed"  # its engine or server could not start (``error`` says why)


class EngineSource(str, enum.Enum):
    BUILT = "built"  # this worker built the node's compiled engines (the first on its node)
    CACHED = "cached"  # it loaded what another worker on its node built (cluster.node_cache)
    UNCOMPILED = "uncompiled"  # the torch backend: nothing to build


@dataclass(frozen=True)
class StreamReport:
    id: str
    fps: float  # frames a second sent to its camera peer over the last few seconds
    generated: int  # engine outputs so far


@dataclass(frozen=True)
class WorkerStatus:
    incarnation: str  # random per process start: a new one means Ray restarted the worker
    pid: int
    node: str  # the node's address
    phase: WorkerPhase
    url: str | None = None  # where its HTTP server listens, once READY
    device: str = ""
    dtype: str = ""
    engine: EngineSource | None = None
    rate_fps: float | None = None  # frames a second its engine gave one stream alone, measured at start
    max_peers: int = 0
    streams: tuple[StreamReport, ...] = ()
    rates: dict[str, StreamRates] = field(default_factory=dict)  # each stream's rates, as the server's /health
    viewers: int = 0
    loop_lag_s: float = 0.0  # seconds since its server's event loop last ticked
    stalled_s: float = 0.0  # seconds camera input has been arriving while its engine finished no call
    error: str | None = None

    @property
    def stream_ids(self) -> tuple[str, ...]:
        return tuple(s.id for s in self.streams)


@dataclass
class ProgressWatch:
    """Tells how long an engine has had work without finishing a call. ``observe`` is given the pipeline's count
    of finished calls and whether input is arriving; idle time (no input) never counts as stalled."""

    _calls: int = -1
    _since: float | None = field(default=None)  # when the engine last progressed or last had nothing to do

    def observe(self, calls: int, input_arriving: bool, now: float) -> float:
        """Seconds stalled as of ``now``."""
        if calls != self._calls or not input_arriving or self._since is None:
            self._calls, self._since = calls, now
        return now - self._since
