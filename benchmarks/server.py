"""Server benchmark (issue 4): 1 and 4 aiortc peers over loopback, each sending 30 fps, against the server
running the proportional model; received fps per peer, glass-to-glass latency (input frame sent -> its
output received) and the engine alone in the same run.

    python -m benchmarks.server [--quick] [--seconds 60] [--preset proportional|tiny] [--output DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

import av
import numpy as np
import uvicorn
from aiortc import VideoStreamTrack

from benchmarks.pipeline import camera_loop, run_engine_alone
from benchmarks.report import Comparison, Target, machine_info, text_table, write_results
from server.app import ModelInfo, create_app
from server.client import StreamClient, connect
from server.ice import include_loopback_candidates
from server.settings import ServerSettings
from server.tracks import REPEAT
from stream import StreamConfig, StreamEngine
from stream.tiny_model import make_tiny_model

logger = logging.getLogger("benchmarks.server")
FRAME_PTS = 3000  # 90 kHz at 30 fps


class Camera(VideoStreamTrack):
    """A moving gradient at 30 fps (benchmarks.pipeline.camera_loop, drawn before timing) that remembers when
    it sent each pts."""

    def __init__(self, size: int, offset: int) -> None:
        super().__init__()
        self.images, self.offset = camera_loop(size), offset
        self.sent: dict[int, float] = {}

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        k = pts // FRAME_PTS + self.offset
        frame = av.VideoFrame.from_ndarray(self.images[k % len(self.images)], format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        self.sent[pts] = time.monotonic()
        return frame


@dataclass
class PeerResult:
    fps: float
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, latency s)


def new_outputs(client: StreamClient, start: float) -> int:
    """Frames received since ``start`` that show a new output: the server's repeats (server.tracks) excluded."""
    return sum(1 for f in client.frames if f.at >= start and client.note(f).get("kind") != REPEAT)


def glass_to_glass(client: StreamClient, camera: Camera, start: float) -> list[tuple[float, float]]:
    """Latency of each announced generated frame: receipt time minus the send time of the input it shows."""
    out = []
    for frame in client.frames:
        note = client.note(frame)
        if note.get("kind") != "generated" or note.get("source_pts") is None:
            continue
        sent = camera.sent.get(round(note["source_pts"] / FRAME_PTS) * FRAME_PTS)
        if sent is not None and frame.at >= start:
            out.append((frame.at - start, frame.at - sent))
    return out


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        await task


async def run_peers(engine: StreamEngine, peers: int, seconds: float) -> list[PeerResult]:
    settings = ServerSettings(stream=engine.config, max_peers=peers, idle_timeout=30)
    app = create_app(settings, engine, ModelInfo("benchmark", True, "torch"))
    size = engine.config.width
    async with serve(app) as base:
        cameras = [Camera(size, 1000 * i) for i in range(peers)]
        clients = [await connect(base, cam) for cam in cameras]
        for client in clients:
            client.keep = 100_000
        start = time.monotonic()
        await asyncio.sleep(seconds)
        elapsed = time.monotonic() - start
        results = [PeerResult(new_outputs(c, start) / elapsed, glass_to_glass(c, cam, start))
                   for c, cam in zip(clients, cameras)]
        for client in clients:
            await client.close()
    return results


def window(latencies: list[tuple[float, float]], lo: float, hi: float) -> float:
    values = [lat for t, lat in latencies if lo <= t < hi]
    return float(np.mean(values)) if values else float("nan")


def plot(results: dict[int, list[PeerResult]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    for peers, rs in results.items():
        for i, r in enumerate(rs):
            if r.latencies:
                t, lat = zip(*r.latencies)
                ax.plot(t, [x * 1000 for x in lat], lw=0.8, label=f"{peers} peer(s), peer {i}" if i == 0 else None,
                        color=f"C{0 if peers == 1 else 1}", alpha=0.9 if peers == 1 else 0.5)
    ax.set(xlabel="seconds", ylabel="glass-to-glass latency (ms)", title="latency over time")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def comparisons(results: dict[int, list[PeerResult]], alone: float, frame_time: float, steps: int,
                seconds: float) -> list[Comparison]:
    one = results[1][0]
    lat = [x for _, x in one.latencies]
    p50, p95 = (float(np.percentile(lat, q)) if lat else float("nan") for q in (50, 95))
    budget = frame_time * (steps + 1) + 0.150
    edge = min(10.0, seconds / 3)
    first, last = window(one.latencies, 0, edge), window(one.latencies, seconds - edge, seconds)
    many = results[max(results)]
    return [
        Comparison("peer_vs_engine", "1 peer received fps vs engine alone", "peer", one.fps, "engine", alone,
                   "fps", one.fps / alone, "A/B", Target(">=", 0.85)),
        Comparison("p95_latency", "1 peer p95 glass-to-glass latency vs budget", "p95", p95 * 1000,
                   "frame time x (steps+1) + 150 ms", budget * 1000, "ms", p95 / budget, "A/B", Target("<=", 1.0),
                   note=f"p50 {p50 * 1000:.0f} ms, {len(lat)} frames"),
        Comparison("latency_drift", f"1 peer latency, last {edge:g} s vs first {edge:g} s", "last", last * 1000,
                   "first", first * 1000, "ms", last / first, "A/B", Target("<=", 1.0)),
        Comparison("four_peers", f"{max(results)} peers: mean fps per peer vs 1 peer", "per peer",
                   float(np.mean([r.fps for r in many])), "1 peer", one.fps, "fps",
                   float(np.mean([r.fps for r in many])) / one.fps, "A/B",
                   note="p95 latency " + ", ".join(
                       f"{np.percentile([x for _, x in r.latencies], 95) * 1000:.0f} ms" for r in many if r.latencies)),
    ]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="proportional", choices=["proportional", "tiny"])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    seconds, size = (4.0, 128) if args.quick else (args.seconds, args.size)
    include_loopback_candidates()
    with tempfile.TemporaryDirectory() as tmp:
        model = make_tiny_model(Path(tmp) / "model", preset=args.preset)
        engine = StreamEngine.from_pretrained(model, StreamConfig(width=size, height=size, t_list=(1.0,)))
        alone_before = run_engine_alone(engine, min(10.0, seconds / 2))
        results = {peers: asyncio.run(run_peers(engine, peers, seconds)) for peers in (1, 4)}
        alone_after = run_engine_alone(engine, min(10.0, seconds / 2))
    alone = (alone_before + alone_after) / 2  # before and after the peers, so drift in machine load averages out
    found = comparisons(results, alone, 1.0 / alone, engine.config.num_steps, seconds)
    meta = {"machine": machine_info(),
            "settings": {"preset": args.preset, "width": size, "height": size, "frames": f"{seconds:g} s per run",
                         "engine_alone_fps": [alone_before, alone_after]},
            "peers": {str(p): [{"fps": r.fps, "latencies": r.latencies} for r in rs] for p, rs in results.items()}}
    write_results(args.output, "server", found, meta)
    plot(results, args.output / "server.png")
    print(text_table(found))
    return {"comparisons": found}


if __name__ == "__main__":
    main()
