"""Scale-out benchmark (issue 21): ``sana-stream serve`` in one process against ``serve --workers`` on a local Ray,
each run as the real command in its own process on this machine.

- offer to answer: the time a POST /offer takes (the front places the stream and forwards the SDP exchange to a
  worker), single-process server vs 1 and vs 2 workers;
- aggregate engine frames a second (every stream's generated frames, from /metrics) with several cameras: 2
  workers of 1 CPU each vs 1 worker of 2 CPUs (Ray sets each worker's OMP_NUM_THREADS from its CPUs);
- the front's CPU per stream while they stream, beside a worker's.

The cameras run in a child process under SCHED_IDLE and send pre-encoded VP8 (``benchmarks.webrtc_camera``), so
they take what the servers leave, as in the server benchmark. The 1-worker offer times come from the 1 x 2 CPU
run; the two clusters run side by side and stream in alternated rounds. On a machine with GPUs the same runs
compare GPUs; this one has 2 cores, shared by whatever else runs.

    python -m benchmarks.scale [--quick] [--seconds 20] [--rounds 3] [--streams 4] [--offers 12] [--size 256]
                               [--preset proportional|tiny] [--backend auto|torch|onnxruntime]
                               [--cameras idle|normal] [--output DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
from aiortc import RTCConfiguration, RTCPeerConnection

from benchmarks.report import Comparison, machine_info, text_table, write_results
from benchmarks.webrtc_camera import Camera
from engines import AUTO, backend_names
from rtc.client import connect
from rtc.ice import include_loopback_candidates
from stream.demo_model import make_demo_model

logger = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 900  # a first start exports the compiled parts (once: the runs share one engine cache)
GENERATED = re.compile(r'^sana_stream_frames_generated_total\{[^}]*stream="([^"]+)"\} (\d+)$', re.MULTILINE)


@dataclass
class Server:
    process: subprocess.Popen
    base: str
    workers: int  # 0: the single-process server

    def worker_pids(self) -> list[int]:
        if not self.workers:
            return []
        return [w["pid"] for w in httpx.get(self.base + "/health").json()["workers"]]

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def launch(model: Path, size: int, backend: str, cache: Path, workers: int, cpus: float, log: Path) -> Server:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "sana_stream.cli", "--log-level", "WARNING", "serve", "--model", str(model),
               "--backend", backend, "--width", str(size), "--height", str(size), "--port", str(port),
               "--max-peers", "32", "--idle-timeout", "30"]
    if workers:
        command += ["--workers", str(workers), "--worker-cpus", f"{cpus:g}"]
    env = {**os.environ, "SANA_STREAM_CACHE": str(cache), "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    with open(log, "ab") as out:
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    server = Server(process, f"http://127.0.0.1:{port}", workers)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        try:
            health = httpx.get(server.base + "/health", timeout=2).json()
            if not workers or health.get("workers_ready") == workers:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"the server did not start ({' '.join(command)}); see {log}")


async def offer_times(base: str, offers: int) -> list[float]:
    """Seconds each POST /offer took, one at a time; the offers are never completed (their peers idle out)."""
    found = []
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        for i in range(offers):
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pc.addTrack(Camera(64, i))
            pc.createDataChannel("sana-stream")
            await pc.setLocalDescription(await pc.createOffer())
            began = time.perf_counter()
            response = await http.post("/offer", json={"sdp": pc.localDescription.sdp, "type": "offer"})
            found.append(time.perf_counter() - began)
            response.raise_for_status()
            await pc.close()
            await asyncio.sleep(0.2)
    return found


def cameras_process(base: str, streams: int, seconds: float, size: int, idle: bool, pipe: Any) -> None:
    """The child's main: ``streams`` cameras (at idle priority with ``idle``); sends their stream ids once each got
    a frame, then the frames a second each received over ``seconds``, and closes them when told."""
    if idle and hasattr(os, "SCHED_IDLE"):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    include_loopback_candidates()

    async def run() -> None:
        clients = [await connect(base, Camera(size, 1000 * i)) for i in range(streams)]
        for client in clients:
            await client.wait_frames(1, timeout=300)
        pipe.send([c.stream for c in clients])
        began, before = time.monotonic(), [c.received for c in clients]
        await asyncio.sleep(seconds)
        elapsed = time.monotonic() - began
        pipe.send([(c.received - b) / elapsed for c, b in zip(clients, before)])
        await asyncio.to_thread(pipe.recv)  # the parent has read the server's counts of these streams
        for client in clients:
            await client.close()

    asyncio.run(run())


def generated(base: str, streams: list[str]) -> int:
    """Engine outputs so far of ``streams`` (the others in /metrics: earlier rounds' streams, still closing)."""
    counts = {sid: int(n) for sid, n in GENERATED.findall(httpx.get(base + "/metrics", timeout=10).text)}
    return sum(counts.get(sid, 0) for sid in streams)


def cpu_seconds(pids: list[int]) -> float:
    return sum(sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids)


def stream_run(server: Server, streams: int, seconds: float, size: int, idle: bool) -> dict[str, Any]:
    """Frames a second received by ``streams`` cameras together over ``seconds`` (and the engine outputs the server
    counted for them), and the front's and workers' CPU shares meanwhile."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe()
    child = context.Process(target=cameras_process, args=(server.base, streams, seconds, size, idle, send))
    child.start()
    if not receive.poll(600):
        child.kill()
        raise RuntimeError("the cameras did not connect within 600 s (at idle priority on a busy machine they "
                           "may never get a core: try --cameras normal)")
    ids = receive.recv()  # an EOFError here: the cameras' process failed (its traceback is above)
    workers = server.worker_pids()
    began, frames0 = time.monotonic(), generated(server.base, ids)
    front0, workers0 = cpu_seconds([server.process.pid]), cpu_seconds(workers)
    if not receive.poll(seconds + 120):
        child.kill()
        raise RuntimeError("the cameras did not finish")
    received = receive.recv()
    elapsed, frames = time.monotonic() - began, generated(server.base, ids) - frames0
    front, worker = cpu_seconds([server.process.pid]) - front0, cpu_seconds(workers) - workers0
    receive.send("close")
    child.join(60)
    return {"fps": sum(received), "received_per_stream": received, "generated_fps": frames / elapsed,
            "front_cpu_per_stream": front / elapsed / streams,
            "worker_cpu_per_stream": worker / elapsed / streams if workers else 0.0}


def run_all(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """The single server's offers first, alone; then both clusters up side by side, their offers, and their
    streaming runs alternated round by round, so that whatever else loads the machine loads both alike."""
    model = make_demo_model(tmp / "model", preset=args.preset)
    cache, log = tmp / "engines", tmp / "servers.log"
    logger.info("single process: starting the server")
    single = launch(model, args.size, args.backend, cache, 0, 0, log)
    try:
        runs: dict[str, Any] = {"single": {"offer_s": asyncio.run(offer_times(single.base, args.offers))}}
    finally:
        single.stop()
    clusters: dict[str, Server] = {}
    try:
        for name, workers, cpus in (("1x2", 1, 2.0), ("2x1", 2, 1.0)):
            logger.info("%s: starting the server", name)
            clusters[name] = launch(model, args.size, args.backend, cache, workers, cpus, log)
        for name, server in clusters.items():
            runs[name] = {"offer_s": asyncio.run(offer_times(server.base, args.offers)), "rounds": []}
        time.sleep(15)  # the offers' peers never connect: they time out (10 s) before anything is timed
        for round_ in range(args.rounds):
            for name, server in clusters.items():
                logger.info("round %d, %s: %d cameras for %g s", round_ + 1, name, args.streams, args.seconds)
                runs[name]["rounds"].append(stream_run(server, args.streams, args.seconds, args.size,
                                                       args.cameras == "idle"))
    finally:
        for server in clusters.values():
            server.stop()
    for name in clusters:
        for key in ("fps", "generated_fps", "front_cpu_per_stream", "worker_cpu_per_stream"):
            runs[name][key] = statistics.median(r[key] for r in runs[name]["rounds"])
    return runs


def comparisons(runs: dict[str, Any], streams: int) -> list[Comparison]:
    median = {name: statistics.median(run["offer_s"]) * 1000 for name, run in runs.items()}
    found = [Comparison(f"offer_{n}", f"offer to answer, {label} vs one process", label, median[key],
                        "single process", median["single"], "ms", median[key] / median["single"], "A/B",
                        note=f"median of {len(runs[key]['offer_s'])} offers each, one at a time")
             for n, (key, label) in enumerate([("1x2", "1 worker"), ("2x1", "2 workers")], 1)]
    two, one = runs["2x1"], runs["1x2"]
    rounds = ", ".join(f"{a['fps'] / b['fps']:.2f}" for a, b in zip(two["rounds"], one["rounds"]))
    found.append(Comparison("aggregate_fps", f"frames/s received, {streams} streams", "2 workers x 1 CPU", two["fps"],
                            "1 worker x 2 CPUs", one["fps"], "frames/s", two["fps"] / one["fps"], "A/B",
                            note="frames the cameras received, all streams together; medians of "
                                 f"{len(two['rounds'])} alternated rounds (ratio per round: {rounds})"))
    found.append(Comparison("front_cpu", "CPU per stream, 2 workers x 1 CPU", "front",
                            two["front_cpu_per_stream"] * 100, "workers", two["worker_cpu_per_stream"] * 100,
                            "% of a core", two["front_cpu_per_stream"] / two["worker_cpu_per_stream"], "A/B",
                            note="the front holds no media: its share is its probes of the workers"))
    return found


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="proportional", choices=["proportional", "tiny"])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--offers", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3, help="alternated streaming runs of each cluster")
    parser.add_argument("--backend", default=AUTO, choices=[AUTO, *backend_names()])
    parser.add_argument("--cameras", default="idle", choices=["idle", "normal"],
                        help="the cameras' scheduling: idle (SCHED_IDLE: only what the servers leave) or normal")
    parser.add_argument("--quick", action="store_true", help="tiny model, 128 px, one 5 s round, 4 offers")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    if args.quick:
        args.preset, args.size, args.seconds, args.offers, args.rounds = "tiny", 128, 5.0, 4, 1
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    machine = machine_info()
    with tempfile.TemporaryDirectory() as tmp:
        runs = run_all(args, Path(tmp))
    found = comparisons(runs, args.streams)
    meta = {"machine": machine,
            "settings": {"preset": args.preset, "width": args.size, "height": args.size,
                         "frames": f"{args.rounds} x {args.seconds:g} s of {args.streams} streams",
                         "backend": args.backend,
                         "offers": args.offers,
                         "client_scheduler": "SCHED_IDLE" if args.cameras == "idle" else "normal"},
            "runs": runs}
    write_results(args.output, "scale", found, meta)
    print(text_table(found))
    return {"comparisons": found, "runs": runs}


if __name__ == "__main__":
    main()
