"""The front's view of its workers: a probe loop per worker, each worker's state, and which worker holds which
stream. A worker that dies loses its streams here at once (their clients reconnect and are placed again); one
that stops answering, or whose engine stops progressing while input arrives, is killed so Ray restarts it; one
that comes back takes streams again once its engine is ready.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cluster.config import ClusterConfig
from cluster.placement import Candidate, choose_worker
from cluster.status import WorkerPhase, WorkerStatus

logger = logging.getLogger(__name__)


class WorkerGone(Exception):
    """A probe found the worker's process dead (Ray is restarting it)."""


class WorkerState(str, enum.Enum):
    STARTING = "starting"  # building or loading its engine (first start, or after a restart)
    READY = "ready"  # takes streams
    UNRESPONSIVE = "unresponsive"  # missed its last probe: takes no new streams; killed after stuck_timeout
    DEAD = "dead"  # its process died or was killed; Ray restarts it
    FAILED = "failed"  # its engine or server could not start; takes nothing


@dataclass
class WorkerSlot:
    index: int
    actor: Any  # a Ray actor handle (anything ``probe`` and ``kill`` accept)
    state: WorkerState = WorkerState.STARTING
    status: WorkerStatus | None = None
    incarnation: str | None = None
    answered_at: float = field(default_factory=time.monotonic)  # the last probe it answered (or its start)
    restarts: int = 0
    pending: int = 0  # offers on their way to it now


@dataclass(frozen=True)
class Route:
    worker: int
    since: float  # when the front learnt it (monotonic)


Probe = Callable[[Any, float], Awaitable[WorkerStatus]]  # (actor, timeout) -> status; WorkerGone, TimeoutError
Kill = Callable[[Any], None]
OnReady = Callable[[WorkerSlot], Awaitable[None]]  # runs before a worker (re)joins; raising keeps it out


class Supervisor:
    def __init__(self, config: ClusterConfig, actors: Sequence[Any], probe: Probe, kill: Kill,
                 on_ready: OnReady | None = None) -> None:
        self.config = config
        self.slots = [WorkerSlot(i, actor) for i, actor in enumerate(actors)]
        self.routes: dict[str, Route] = {}
        self._probe, self._kill = probe, kill
        self.on_ready = on_ready  # the front sets it: bringing a (re)started worker up to date
        self._tasks: list[asyncio.Task[None]] = []
        self._changed = asyncio.Event()

    # ---- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [asyncio.ensure_future(self._watch(slot)) for slot in self.slots]

    async def wait_started(self) -> None:
        """Until every worker is ready or failed, or ``start_grace`` after the first is ready (a first start
        builds engines: no time limit before that); raises RuntimeError when none is ready."""
        settled = (WorkerState.READY, WorkerState.FAILED)
        first_ready: float | None = None
        while not all(slot.state in settled for slot in self.slots):
            if first_ready is None and self.ready():
                first_ready = time.monotonic()
            if first_ready is not None and time.monotonic() - first_ready > self.config.start_grace:
                logger.warning("serving with %d of %d workers; the others join when ready", len(self.ready()),
                               len(self.slots))
                return
            self._changed.clear()
            await self._changed.wait()
        if not self.ready():
            errors = "; ".join(f"worker {s.index}: {s.status.error if s.status else '?'}" for s in self.slots)
            raise RuntimeError(f"no worker could start: {errors}")

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- placement and routes ------------------------------------------------------------------------------

    def ready(self) -> list[WorkerSlot]:
        return [slot for slot in self.slots if slot.state is WorkerState.READY]

    def held(self, slot: WorkerSlot) -> int:
        return sum(1 for route in self.routes.values() if route.worker == slot.index)

    def place(self, stream_id: str | None) -> WorkerSlot:
        """The worker for a new offer (raises placement.NoCapacity); its ``pending`` count is raised, and the
        caller lowers it once the offer is answered."""
        owner = self.owner(stream_id)
        candidates = [Candidate(s.index, self.held(s) + s.pending, s.status.max_peers if s.status else 0,
                                s.status.rate_fps if s.status else None) for s in self.ready()]
        slot = self.slots[choose_worker(candidates, owner.index if owner else None)]
        slot.pending += 1
        return slot

    def owner(self, stream_id: str | None, *, usable: bool = False) -> WorkerSlot | None:
        """The ready worker holding ``stream_id``; with ``usable``, an unresponsive one too (worth a try)."""
        route = self.routes.get(stream_id) if stream_id is not None else None
        if route is None:
            return None
        slot = self.slots[route.worker]
        states = (WorkerState.READY, WorkerState.UNRESPONSIVE) if usable else (WorkerState.READY,)
        return slot if slot.state in states else None

    def record(self, stream_id: str, slot: WorkerSlot) -> None:
        self.routes[stream_id] = Route(slot.index, time.monotonic())

    def forget(self, stream_id: str) -> None:
        self.routes.pop(stream_id, None)

    # ---- the probe loop ------------------------------------------------------------------------------------

    async def _watch(self, slot: WorkerSlot) -> None:
        while True:
            sent = time.monotonic()
            try:
                status = await self._probe(slot.actor, self.config.probe_timeout)
            except WorkerGone as exc:
                self._lost(slot, f"its process died ({exc})")
            except TimeoutError:
                self._missed(slot)
            else:
                await self._observed(slot, status, sent)
            self._changed.set()
            await asyncio.sleep(self.config.probe_interval)

    def _lost(self, slot: WorkerSlot, reason: str) -> None:
        if slot.state is not WorkerState.DEAD:
            dropped = self._drop_routes(slot)
            logger.warning("worker %d is down: %s; its %d stream(s) end and Ray restarts it", slot.index, reason,
                           len(dropped))
            slot.state = WorkerState.DEAD

    def _missed(self, slot: WorkerSlot) -> None:
        silent = time.monotonic() - slot.answered_at
        if slot.state is WorkerState.READY:
            logger.warning("worker %d did not answer its probe within %g s; no new streams go to it",
                           slot.index, self.config.probe_timeout)
            slot.state = WorkerState.UNRESPONSIVE
        if silent > self.config.stuck_timeout and slot.state is not WorkerState.FAILED:
            self._kill_stuck(slot, f"no answer for {silent:.0f} s")

    def _kill_stuck(self, slot: WorkerSlot, reason: str) -> None:
        self._lost(slot, f"stuck ({reason}); killed")
        slot.answered_at = time.monotonic()  # its next incarnation gets a whole stuck_timeout to answer
        self._kill(slot.actor)

    async def _observed(self, slot: WorkerSlot, status: WorkerStatus, sent: float) -> None:
        slot.answered_at = time.monotonic()
        if status.incarnation != slot.incarnation:
            if slot.incarnation is not None:
                slot.restarts += 1
                self._lost(slot, "it restarted")
                logger.info("worker %d restarted (pid %d); it rejoins once its engine is ready", slot.index,
                            status.pid)
            slot.incarnation = status.incarnation
        slot.status = status
        if status.phase is WorkerPhase.FAILED:
            if slot.state is not WorkerState.FAILED:
                logger.error("worker %d could not start: %s", slot.index, status.error)
            slot.state = WorkerState.FAILED
        elif status.phase is WorkerPhase.STARTING:
            slot.state = WorkerState.STARTING
        elif max(status.stalled_s, status.loop_lag_s) > self.config.stuck_timeout:
            self._kill_stuck(slot, f"engine stalled {status.stalled_s:.0f} s, event loop {status.loop_lag_s:.0f} s")
        else:
            if slot.state is not WorkerState.READY:
                await self._join(slot)
            if slot.state is WorkerState.READY:
                self._reconcile(slot, status, sent)

    async def _join(self, slot: WorkerSlot) -> None:
        if slot.state is not WorkerState.UNRESPONSIVE and self.on_ready is not None:
            try:
                await self.on_ready(slot)
            except Exception as exc:  # tried again at the next probe; the worker takes nothing meanwhile
                logger.warning("worker %d is ready but could not be brought up to date: %s", slot.index, exc)
                return
        logger.info("worker %d ready at %s (%s)", slot.index, slot.status.url if slot.status else "?",
                    slot.status.device if slot.status else "?")
        slot.state = WorkerState.READY

    def _reconcile(self, slot: WorkerSlot, status: WorkerStatus, sent: float) -> None:
        """Routes follow what the worker holds: streams it closed (idle, hung up) go; a route made after the
        probe was sent is kept, since the probe's answer may predate it."""
        held = set(status.stream_ids)
        for stream_id, route in list(self.routes.items()):
            if route.worker == slot.index and stream_id not in held and route.since < sent:
                del self.routes[stream_id]
        for stream_id in held - self.routes.keys():
            self.routes[stream_id] = Route(slot.index, sent)

    def _drop_routes(self, slot: WorkerSlot) -> list[str]:
        dropped = [sid for sid, route in self.routes.items() if route.worker == slot.index]
        for stream_id in dropped:
            del self.routes[stream_id]
        return dropped
