"""The scale-out's parts without Ray: placement, the supervisor's judgement of its workers (scripted workers
stand in for Ray actors), the engine-progress watch, the metrics merge, the per-node build lock, the options."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field, replace

import httpx
import pytest

from cluster.aggregate import merge_metrics
from cluster.config import AUTO, ClusterConfig, parse_workers
from cluster.forward import relay
from cluster.node_cache import once_per_node
from cluster.placement import Candidate, NoCapacity, choose_worker
from cluster.status import EngineSource, ProgressWatch, StreamReport, WorkerPhase, WorkerStatus
from cluster.supervisor import Supervisor, WorkerGone, WorkerState
from sana_stream.cli import main


# ---- placement ---------------------------------------------------------------------------------------------

def test_placement_fills_by_headroom_and_keeps_a_reconnecting_stream_on_its_worker():
    same = [Candidate(0, 1, 4, 10.0), Candidate(1, 0, 4, 9.0)]
    assert choose_worker(same) == 1  # rates 10% apart are the same hardware: the emptier one
    fast_and_slow = [Candidate(0, 1, 4, 30.0), Candidate(1, 0, 4, 10.0)]
    assert choose_worker(fast_and_slow) == 0  # 15 frames/s each beats 10: a 3x faster GPU takes the second
    assert choose_worker([Candidate(0, 3, 4, 30.0), Candidate(1, 0, 4, 10.0)]) == 1  # 7.5 vs 10
    full = [Candidate(0, 4, 4, 30.0), Candidate(1, 2, 4, 1.0)]
    assert choose_worker(full) == 1
    assert choose_worker(full, owner=0) == 0  # its reconnect replaces its old connection there
    assert choose_worker([Candidate(0, 0, 4, None), Candidate(1, 1, 4, 5.0)]) == 0  # unmeasured: the median rate
    with pytest.raises(NoCapacity, match="all full"):
        choose_worker([Candidate(0, 4, 4, 1.0)])
    with pytest.raises(NoCapacity, match="no worker is ready"):
        choose_worker([])


# ---- the supervisor ----------------------------------------------------------------------------------------

def status(incarnation: str = "a", phase: WorkerPhase = WorkerPhase.READY, streams: tuple[str, ...] = (),
           **fields) -> WorkerStatus:
    return WorkerStatus(incarnation=incarnation, pid=1, node="127.0.0.1", phase=phase, url="http://w", max_peers=4,
                        rate_fps=10.0, streams=tuple(StreamReport(s, 1.0, 1) for s in streams), **fields)


@dataclass
class ScriptedWorker:
    """Answers probes with ``answer``: a status, WorkerGone (dead), or None (silent until the timeout)."""

    answer: WorkerStatus | type[WorkerGone] | None
    kills: int = 0


async def scripted_probe(worker: ScriptedWorker, timeout: float) -> WorkerStatus:
    if worker.answer is None:
        await asyncio.sleep(timeout)
        raise TimeoutError
    if worker.answer is WorkerGone:
        raise WorkerGone("ActorDiedError")
    return worker.answer  # type: ignore[return-value]


def kill(worker: ScriptedWorker) -> None:
    worker.kills += 1
    worker.answer = WorkerGone


FAST = ClusterConfig(workers=2, probe_interval=0.01, probe_timeout=0.05, stuck_timeout=0.4, start_grace=0.2)


@dataclass
class Run:
    supervisor: Supervisor
    workers: list[ScriptedWorker]
    joined: list[int] = field(default_factory=list)

    async def until(self, check, what: str, timeout: float = 3.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.01)

    def state(self, index: int) -> WorkerState:
        return self.supervisor.slots[index].state


async def start(*answers) -> Run:
    workers = [ScriptedWorker(a) for a in answers]
    run = Run(Supervisor(replace(FAST, workers=len(workers)), workers, scripted_probe, kill), workers)

    async def joined(slot) -> None:
        run.joined.append(slot.index)

    run.supervisor.on_ready = joined
    run.supervisor.start()
    await asyncio.wait_for(run.supervisor.wait_started(), 3)
    return run


def test_a_dead_worker_loses_its_streams_and_rejoins_up_to_date_after_its_restart():
    async def main():
        run = await start(status("a", streams=("s1",)), status("b"))
        sup = run.supervisor
        await run.until(lambda: "s1" in sup.routes, "the worker's stream routed")
        assert sup.place(None).index == 1  # worker 0 holds a stream
        run.workers[0].answer = WorkerGone
        await run.until(lambda: run.state(0) is WorkerState.DEAD, "death noticed")
        assert "s1" not in sup.routes and sup.owner("s1") is None
        assert sup.place("s1").index == 1  # a reconnect goes to the survivor
        run.workers[0].answer = status("c", WorkerPhase.STARTING)  # Ray restarted it: a new process
        await run.until(lambda: run.state(0) is WorkerState.STARTING, "restart noticed")
        assert sup.slots[0].restarts == 1 and run.joined.count(0) == 1
        run.workers[0].answer = status("c")
        await run.until(lambda: run.state(0) is WorkerState.READY, "back")
        assert run.joined.count(0) == 2  # brought up to date again before it took streams again
        await sup.close()

    asyncio.run(main())


def test_silent_or_stalled_workers_are_killed_and_failed_ones_left_alone():
    async def main():
        run = await start(status("a"), status("b"), status("c", WorkerPhase.FAILED, error="no model"))
        assert run.state(2) is WorkerState.FAILED
        run.workers[0].answer = None  # silent
        await run.until(lambda: run.state(0) is WorkerState.UNRESPONSIVE, "missed probe noticed")
        assert run.supervisor.place(None).index == 1  # an unresponsive worker takes no new stream
        await run.until(lambda: run.workers[0].kills == 1, "killed after stuck_timeout")
        run.workers[1].answer = status("b", stalled_s=1.0)  # input arrives, the engine finishes nothing
        await run.until(lambda: run.workers[1].kills == 1, "stalled worker killed")
        assert run.workers[2].kills == 0
        await run.supervisor.close()

    asyncio.run(main())


def test_routes_follow_what_the_worker_holds_but_keep_fresh_ones():
    async def main():
        run = await start(status("a", streams=("old",)))
        sup = run.supervisor
        await run.until(lambda: "old" in sup.routes, "route learnt from the worker")
        sup.record("new", sup.slots[0])  # an answered offer the worker's next report will show
        run.workers[0].answer = status("a", streams=("new",))
        await run.until(lambda: "old" not in sup.routes, "closed stream dropped")
        assert "new" in sup.routes
        await sup.close()

    asyncio.run(main())


def test_start_waits_for_every_worker_unless_one_is_long_ready():
    async def main():
        run = await start(status("a"), status("b", WorkerPhase.STARTING))  # serving after start_grace
        assert run.state(1) is WorkerState.STARTING
        await run.supervisor.close()
        with pytest.raises(RuntimeError, match="no worker could start: worker 0: bad weights"):
            await start(status("a", WorkerPhase.FAILED, error="bad weights"))

    asyncio.run(main())


def test_progress_watch_counts_only_time_with_input_and_no_finished_call():
    watch = ProgressWatch()
    assert watch.observe(0, True, 0.0) == 0.0
    assert watch.observe(0, True, 5.0) == 5.0  # input, no call finished
    assert watch.observe(1, True, 6.0) == 0.0  # a call finished
    assert watch.observe(1, False, 60.0) == 0.0  # idle is not stalled
    assert watch.observe(1, True, 61.0) == 1.0


# ---- metrics -----------------------------------------------------------------------------------------------

WORKER_METRICS = """# HELP sana_stream_fps Frames per second sent to the viewer.
# TYPE sana_stream_fps gauge
sana_stream_fps{stream="s%d"} 2.000
# TYPE sana_stream_latency_seconds histogram
sana_stream_latency_seconds_bucket{stream="s%d",le="0.05"} 1
sana_stream_latency_seconds_sum{stream="s%d"} 0.010000
# TYPE sana_stream_peers gauge
sana_stream_peers 1.0
"""


def test_metrics_of_every_worker_merge_into_one_valid_exposition():
    text = merge_metrics({0: WORKER_METRICS.replace("%d", "0"), 1: WORKER_METRICS.replace("%d", "1")},
                         {"workers": {'state="ready"': 2.0}})
    lines = text.splitlines()
    assert lines.count("# TYPE sana_stream_fps gauge") == 1 and lines.count("# TYPE sana_stream_peers gauge") == 1
    fps = lines.index("# TYPE sana_stream_fps gauge")
    assert lines[fps + 1:fps + 3] == ['sana_stream_fps{worker="0",stream="s0"} 2.000',
                                      'sana_stream_fps{worker="1",stream="s1"} 2.000']  # one block per family
    assert 'sana_stream_latency_seconds_sum{worker="1",stream="s1"} 0.010000' in lines
    assert 'sana_stream_peers{worker="0"} 1.0' in lines
    assert lines[-2:] == ["# TYPE sana_stream_workers gauge", 'sana_stream_workers{state="ready"} 2.0']


# ---- engines built once per node ---------------------------------------------------------------------------

def test_the_first_worker_on_a_node_builds_and_the_others_wait_then_load(tmp_path):
    builds: list[tuple[float, float]] = []  # (began, ended) of each call
    sources: list[EngineSource] = []
    lock = threading.Lock()

    def build() -> str:
        with lock:
            first = not builds and not sources
        began = time.monotonic()
        time.sleep(0.3 if first else 0.0)  # the first build is the long one; loading from the cache is quick
        builds.append((began, time.monotonic()))
        return "engine"

    def worker() -> None:
        sources.append(once_per_node(tmp_path, "key", build)[1])

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(sources) == [EngineSource.BUILT, EngineSource.CACHED, EngineSource.CACHED]
    (built,) = [(began, ended) for began, ended in builds if ended - began >= 0.3]
    assert all(began >= built[1] for began, ended in builds if (began, ended) != built)  # they waited for it
    assert once_per_node(tmp_path, "key", build)[1] is EngineSource.CACHED  # later ones skip the lock


# ---- options -----------------------------------------------------------------------------------------------

def test_worker_options_are_checked(caplog):
    assert parse_workers("auto") == AUTO and parse_workers(" 3 ") == 3
    for bad, message in [("0", "at least 1"), ("two", "'auto' or a whole number")]:
        with pytest.raises(ValueError, match=message):
            parse_workers(bad)
    with pytest.raises(ValueError, match="stuck_timeout"):
        ClusterConfig(workers=1, probe_timeout=5.0, stuck_timeout=2.0)
    assert main(["serve", "--ray-address", "127.0.0.1:6379"]) == 2
    assert "--ray-address needs --workers" in caplog.text
    assert main(["serve", "--workers", "none"]) == 2
    assert "--workers must be 'auto' or a whole number" in caplog.text


def test_workers_auto_without_a_gpu_is_the_single_process_server(caplog, tmp_path):
    # the single server's own start, which then finds no model there: the fallback ran it, and no Ray started
    assert main(["serve", "--workers", "auto", "--no-pages", "--model", str(tmp_path / "no-model")]) == 2
    assert "shows no GPU, so the server runs in one process" in caplog.text
    assert "no-model" in caplog.records[-1].getMessage()


def test_the_front_relays_each_link_header_on_a_line_of_its_own():
    """OBS reads one ICE server per Link line and splits a line at every ',' (server.ice_links): joined as httpx
    joins repeated headers, the second would be lost."""
    links = ['<stun:turn.example.org:3478>; rel="ice-server"',
             '<turn:turn.example.org:3478>; rel="ice-server"; username="1:obs"; credential="c"']
    worker = httpx.Response(201, headers=[("Location", "/whip/obs"), *(("Link", link) for link in links),
                                          ("Server", "uvicorn")], content=b"v=0")
    relayed = relay(worker)
    assert [v.decode() for k, v in relayed.raw_headers if k == b"link"] == links
    assert relayed.headers["location"] == "/whip/obs" and "server" not in relayed.headers
