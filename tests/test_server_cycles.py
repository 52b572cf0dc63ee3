"""Memory and file descriptors over many connections: 200 viewer cycles and 200 camera cycles (four at a time)
leave RSS, open file descriptors, threads and live WebRTC objects where they were.

Why these bounds (docs/server.md, "Memory over time"): with tracemalloc the Python heap did not grow over 400
viewer cycles, and no peer connection, receiver, sender or output track outlived its cycle. RSS did rise,
~20 MB over the first 200 cycles and then slower, but ``malloc_trim`` handed it back: memory glibc keeps
after freeing it, not a leak. So RSS is read after ``gc.collect()`` and ``malloc_trim(0)``. Four at a time, the
first hundred cycles still add 6-18 MB (more codec threads, each with its allocator arena), the second hundred
0.7-3.9 MB: the bound allows 10 MB per 100 cycles after that (100 KB a cycle; a connection leaking its codecs
and frames would take more). Live objects must come back exactly, file descriptors too, bar 2 for connections
the server has not yet seen close.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import os
import threading
from collections import Counter

from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender

from server.peers import Peer
from server.tracks import StreamOutputTrack
from server.viewers import Viewer
from tests.support import eventually, running
from tests.support.webrtc import connect
from tests.test_server_stream import SIZE, local_engine, make_app  # noqa: F401 - fixture
from tests.test_server_viewer import view

CYCLES = 200
AT_ONCE = 4
WARM_UP = 20  # cycles before the first reading
MB = 2**20
RSS_PER_100_CYCLES = 10 * MB
RSS_WARM_UP = 25 * MB  # the first hundred cycles at four at a time: more codec threads, each with its own arena
FD_SLACK = 2
TRACKED = (RTCPeerConnection, RTCRtpReceiver, RTCRtpSender, StreamOutputTrack, Peer, Viewer)


def settle() -> dict[str, object]:
    """RSS after the collector and glibc's trim, open fds, threads, and live WebRTC objects by type."""
    gc.collect()
    libc = ctypes.util.find_library("c")
    if libc and hasattr(ctypes.CDLL(libc), "malloc_trim"):
        ctypes.CDLL(libc).malloc_trim(0)
    with open("/proc/self/statm") as f:
        rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    objects = Counter(t.__name__ for t in map(type, gc.get_objects()) if issubclass(t, TRACKED))  # no isinstance:
    # it reads __class__, and some torch objects warn when read
    return {"rss": rss, "fds": len(os.listdir("/proc/self/fd")), "threads": threading.active_count(),
            "objects": dict(objects)}


async def run_cycles(cycle, count: int) -> None:
    async def worker(n: int) -> None:
        for _ in range(n):
            await cycle()

    await asyncio.gather(*(worker(count // AT_ONCE) for _ in range(AT_ONCE)))


async def measure(app, cycle, peers_left: int) -> list[dict[str, object]]:
    """Warm up, then settle and read after 0, CYCLES / 2 and CYCLES cycles."""
    async def idle() -> None:
        await eventually(lambda: not app.state.viewers().viewers and len(app.state.peers().peers) == peers_left,
                         20, "cycled connections freed")
        await asyncio.sleep(0.3)  # the last closes reach the sockets

    await run_cycles(cycle, WARM_UP)
    await idle()
    readings = [settle()]
    for _ in range(2):
        await run_cycles(cycle, CYCLES // 2)
        await idle()
        readings.append(settle())
    return readings


def check_flat(readings: list[dict[str, object]]) -> None:
    first, middle, last = readings
    print("cycles: RSS MB", [round(r["rss"] / MB, 1) for r in readings], "fds", [r["fds"] for r in readings],
          "threads", [r["threads"] for r in readings], "objects", last["objects"])
    assert last["fds"] <= first["fds"] + FD_SLACK, readings
    assert last["threads"] <= first["threads"] + AT_ONCE, readings  # decoder threads of the last ones winding down
    assert last["objects"] == first["objects"], readings
    assert last["rss"] - middle["rss"] < RSS_PER_100_CYCLES, readings  # not creeping
    assert last["rss"] - first["rss"] < RSS_WARM_UP + RSS_PER_100_CYCLES, readings


def test_viewer_cycles_leave_memory_and_descriptors_flat(local_engine):
    async def main():
        app = make_app(local_engine, max_viewers=AT_ONCE)
        async with running(app) as base:
            camera = await connect(base, (SIZE, SIZE))
            camera.inner.keep = 4  # it streams through every cycle: keep only the newest frames

            async def cycle() -> None:
                viewer = await view(base, camera.stream)
                await viewer.wait_frames(1)
                await viewer.pc.close()

            readings = await measure(app, cycle, peers_left=1)
            await camera.close()
        return readings

    check_flat(asyncio.run(main()))


def test_camera_cycles_leave_memory_and_descriptors_flat(local_engine):
    async def main():
        app = make_app(local_engine, max_peers=AT_ONCE, idle_timeout=5.0)
        async with running(app) as base:
            async def cycle() -> None:
                client = await connect(base, (SIZE, SIZE))
                await client.wait_frames(1)
                await client.close()

            readings = await measure(app, cycle, peers_left=0)
            assert app.state.runtime["pipeline"].engine.stream_ids() == ["default"]
        return readings

    check_flat(asyncio.run(main()))
