"""`sana-stream serve --workers 2` on a local Ray (one CPU per worker, the tiny model), driven through its front
with real aiortc peers over loopback: placement, per-stream prompts, viewers, health, metrics, and a worker
killed mid-stream. One cluster for the whole module (Ray and two engine workers take ~30 s to start)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from aiortc import RTCSessionDescription

from rtc.ice import include_loopback_candidates
from stream import StreamConfig, StreamEngine
from tests.support import eventually
from tests.support.prometheus import sample
from tests.support.webrtc import connect
from tests.test_server_api import whip_offer
from tests.test_server_stream import SIZE, assert_shows
from tests.test_server_viewer import view
from tests.test_whep import whep_offer

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
TOKEN = "cluster-s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PROMPT = "a watercolor painting"
START_TIMEOUT_S = 240  # Ray, then two workers each importing torch and loading the model, on 2 busy cores
# the client's liveness watch closes a connection after rtc.liveness.SILENCE_S (4 s) without a packet, polled
# every 0.25 s; the bound leaves room for a busy machine and is far below the ~30 s of ICE consent it replaces
PEER_CLOSE_BOUND_S = 10.0
RETURN_TIMEOUT_S = 180  # a new worker process: Ray's restart, torch import, model load, rate probe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, process: subprocess.Popen, base: str, log: Path) -> None:
        self.process, self.base, self.log = process, base, log

    async def health(self) -> dict:
        async with httpx.AsyncClient(base_url=self.base) as http:
            return (await http.get("/health", headers=AUTH)).json()

    async def owners(self) -> dict[str, dict]:
        """stream id -> the worker record holding it."""
        return {sid: w for w in (await self.health())["workers"] for sid in w["streams"]}

    async def wait_health(self, check, what: str) -> dict:
        """/health once ``check`` holds for it (it reflects each worker's last probe, at most a second old)."""
        deadline = time.monotonic() + 15
        while not check(health := await self.health()):
            assert time.monotonic() < deadline, f"{what} not in /health: {health}"
            await asyncio.sleep(0.2)
        return health

    async def wait_owned(self, *streams: str) -> dict[str, dict]:
        found: dict[str, dict] = {}

        async def check() -> bool:
            found.update(await self.owners())
            return all(s in found for s in streams)

        deadline = time.monotonic() + 15
        while not await check():
            assert time.monotonic() < deadline, f"streams {streams} not in /health: {found}"
            await asyncio.sleep(0.2)
        return found


@pytest.fixture(scope="module")
def cluster(demo_model_dir, tmp_path_factory):
    include_loopback_candidates()
    tmp = tmp_path_factory.mktemp("cluster")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SANA_STREAM_CACHE": str(tmp / "cache"),
           "RAY_USAGE_STATS_ENABLED": "0"}
    log = tmp / "front.log"
    command = [sys.executable, "-m", "sana_stream.cli", "serve", "--workers", "2", "--backend", "torch",
               "--model", str(demo_model_dir), "--width", str(SIZE), "--height", str(SIZE), "--prompt", PROMPT,
               "--port", str(port), "--token", TOKEN]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        assert process.poll() is None, f"the server exited:\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"not serving after {START_TIMEOUT_S} s:\n{log.read_text()[-4000:]}"
        try:
            if httpx.get(base + "/health", headers=AUTH, timeout=2).json()["workers_ready"] == 2:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    ray_processes = psutil.Process(process.pid).children(recursive=True)
    yield Cluster(process, base, log)
    process.send_signal(signal.SIGINT)
    assert process.wait(60) == 0, log.read_text()[-4000:]
    _, alive = psutil.wait_procs(ray_processes, timeout=30)
    assert not alive, f"Ray processes outlived the server: {[p.pid for p in alive]}"


@pytest.fixture(scope="module")
def reference(demo_model_dir):
    """The engine the workers run, in this process: what each stream's frames must show."""
    def make(**settings) -> StreamEngine:
        engine = StreamEngine.from_pretrained(demo_model_dir, StreamConfig(width=SIZE, height=SIZE, t_list=(1.0,),
                                                                           prompt=PROMPT))
        if settings:
            engine.update(**settings)
        return engine

    return make


async def shows(client, frames, reference) -> None:
    """assert_shows off the event loop: the reference engine's calls would hold up the cameras, and a worker closes
    a peer whose camera sent nothing for its idle timeout."""
    await asyncio.to_thread(assert_shows, client, frames, reference)


def candidate_ports(sdp: str) -> set[int]:
    return {int(m.group(1)) for m in re.finditer(r"a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 (\d+) typ host", sdp)}


def udp_ports(pid: int) -> set[int]:
    return {c.laddr.port for c in psutil.Process(pid).net_connections(kind="udp")}


def test_streams_spread_over_workers_with_their_own_prompts_viewers_and_media(cluster, reference):
    first, neon = reference(), reference(prompt="neon cyberpunk city", seed=5)

    async def main():
        await cluster.wait_health(lambda h: h["streams"] == 0, "no streams left from the tests before")
        a = await connect(cluster.base, (SIZE, SIZE), headers=AUTH)
        b = await connect(cluster.base, (SIZE, SIZE), headers=AUTH, offset=3)
        owners = await cluster.wait_owned(a.stream, b.stream)
        assert owners[a.stream]["index"] != owners[b.stream]["index"]  # two peers, two workers

        # each worker restyles its own stream: the frames are the engine's outputs for their inputs
        await shows(a, await a.wait_frames(12), first)
        await shows(b, await b.wait_frames(12), first)

        # the media goes between each client and its worker: the answer's candidates are the worker's sockets,
        # and the front, the process that answered, holds no UDP socket at all
        for client in (a, b):
            ports = candidate_ports(client.pc.remoteDescription.sdp)
            assert ports and ports <= udp_ports(owners[client.stream]["pid"])
        assert udp_ports(cluster.process.pid) == set()

        async with httpx.AsyncClient(base_url=cluster.base, headers=AUTH) as http:
            # a prompt for one stream reaches its worker and changes that stream only
            r = await http.post("/prompt", json={"stream": a.stream, "prompt": "neon cyberpunk city", "seed": 5})
            assert r.status_code == 200, r.text
            state = (await http.get("/prompt", headers=AUTH)).json()["streams"]
            assert (state[a.stream]["prompt"], state[a.stream]["seed"]) == ("neon cyberpunk city", 5)
            assert (state[b.stream]["prompt"], state[b.stream]["seed"]) == (PROMPT, 0)
            await a.wait_frames(4)  # frames begun before the change
            await shows(a, await a.wait_frames(10), neon)
            await shows(b, await b.wait_frames(10), first)

            # without a stream, a change reaches every worker
            r = await http.post("/prompt", json={"guidance_scale": 3.0})
            assert r.status_code == 200 and {a.stream, b.stream} <= r.json()["streams"].keys()
            state = (await http.get("/prompt", headers=AUTH)).json()["streams"]
            assert state[a.stream]["guidance_scale"] == state[b.stream]["guidance_scale"] == 3.0

            # a viewer of each stream connects to that stream's worker and gets its frames
            viewers = [await view(cluster.base, c.stream, AUTH) for c in (a, b)]
            for viewer in viewers:
                await viewer.wait_frames(3)
            assert udp_ports(cluster.process.pid) == set()

            # /health and /metrics: both workers, their streams and viewers
            health = await cluster.wait_health(lambda h: h["viewers"] == 2, "two viewers")
            assert health["status"] == "ok" and health["workers_ready"] == 2
            assert {a.stream, b.stream} <= health["fps"].keys()
            routes = (await http.get("/debug/connections", headers=AUTH)).json()["peers"]  # every worker's, merged
            assert routes[a.stream]["state"] == routes[b.stream]["state"] == "connected"
            metrics = (await http.get("/metrics", headers=AUTH)).text
            for client in (a, b):
                worker = owners[client.stream]["index"]
                assert sample(metrics, "sana_stream_frames_generated_total", worker=str(worker), stream=client.stream,
                              kind="camera") is not None
            assert metrics.count("# TYPE sana_stream_generated_fps gauge") == 1
            assert 'sana_stream_workers{state="ready"} 2' in metrics
            for viewer in viewers:
                await viewer.pc.close()
        await a.close()
        await b.close()

    asyncio.run(main())


def test_front_errors_are_json_and_whip_goes_through(cluster):
    async def main():
        async with httpx.AsyncClient(base_url=cluster.base) as http:
            before = (await cluster.health())["streams"]
            r = await http.post("/offer", json={"sdp": "v=0", "type": "offer"})
            assert r.status_code == 401 and r.json()["error"] == "unauthorized"
            r = await http.post("/offer", json={"sdp": "v=0\r\nnot sdp", "type": "offer"}, headers=AUTH)
            assert r.status_code == 400 and r.json()["error"] == "invalid_sdp"  # the worker's answer, relayed
            r = await http.post("/offer", json={"sdp": "v=0", "type": "offer", "bogus": 1}, headers=AUTH)
            assert r.status_code == 422 and r.json()["error"] == "invalid_request"
            for method, path, body, reason in [
                ("POST", "/prompt", {"stream": "nope", "prompt": "x"}, "unknown_stream"),
                ("GET", "/prompt?stream=nope", None, "unknown_stream"),
                ("POST", "/view/offer", {"sdp": "v=0", "type": "offer", "stream": "nope"}, "unknown_stream"),
                ("DELETE", "/whip/nope", None, "unknown_session"),
            ]:
                r = await http.request(method, path, json=body, headers=AUTH)
                assert r.status_code == 404 and r.json()["error"] == reason, (path, r.text)
            r = await http.post("/whip", content="v=0", headers={**AUTH, "Content-Type": "text/plain"})
            assert r.status_code == 415
            r = await http.post("/prompt", json={"seed": -1}, headers=AUTH)
            assert r.status_code == 422
            assert (await cluster.health())["streams"] == before  # nothing was left behind

            r = await http.get("/ice-servers", headers=AUTH)  # the front's, as the workers use them: none here
            assert r.status_code == 200 and r.json()["ice_servers"] == [] and not r.json()["relay"]
            assert (await http.get("/ice-servers")).status_code == 401
            config = (await http.get("/config")).json()
            assert config["token_required"] and config["max_peers"] == 2 * 4  # --max-peers counts per worker

            pc, sdp = await whip_offer()
            r = await http.post("/whip?stream=obs", content=sdp, headers={**AUTH, "Content-Type": "application/sdp"})
            assert r.status_code == 201 and r.headers["location"] == "/whip/obs" and r.headers["x-stream-id"] == "obs"
            await cluster.wait_owned("obs")
            options = await http.options("/whep?stream=obs", headers=AUTH)  # a worker's answer: no ICE servers here
            assert options.status_code == 204 and options.headers["accept-post"] == "application/sdp"
            assert (await http.options("/whip")).status_code == 401
            viewer, whep_sdp = await whep_offer()  # WHEP (the /view page's way) goes to the worker holding "obs"
            sdp_headers = {**AUTH, "Content-Type": "application/sdp"}
            r = await http.post("/whep?stream=obs", content=whep_sdp, headers=sdp_headers)
            assert r.status_code == 201 and r.headers["location"].startswith("/whep/obs/"), r.text
            await viewer.pc.setRemoteDescription(RTCSessionDescription(r.text, "answer"))
            assert (await http.delete(r.headers["location"], headers=AUTH)).status_code == 200
            assert (await http.delete(r.headers["location"], headers=AUTH)).status_code == 404
            assert (await http.post("/whep?stream=nope", content=whep_sdp, headers=sdp_headers)).status_code == 404
            await viewer.pc.close()
            assert (await http.delete("/whip/obs", headers=AUTH)).status_code == 200
            assert (await http.delete("/whip/obs", headers=AUTH)).status_code == 404
            await pc.close()

    asyncio.run(main())


def test_a_killed_worker_closes_its_peer_and_returns_while_the_other_stream_goes_on(cluster):
    async def main():
        await cluster.wait_health(lambda h: h["streams"] == 0, "no streams left from the tests before")
        a = await connect(cluster.base, (SIZE, SIZE), headers=AUTH)
        b = await connect(cluster.base, (SIZE, SIZE), headers=AUTH)
        owners = await cluster.wait_owned(a.stream, b.stream)
        doomed, survivor = owners[a.stream], owners[b.stream]
        assert doomed["index"] != survivor["index"]
        await a.wait_frames(3)
        await b.wait_frames(3)
        async with httpx.AsyncClient(base_url=cluster.base, headers=AUTH) as http:  # for every worker, even later
            assert (await http.post("/prompt", json={"negative_prompt": "blurry"})).status_code == 200

        killed_at = time.monotonic()
        os.kill(doomed["pid"], signal.SIGKILL)
        await eventually(lambda: a.pc.connectionState == "closed", PEER_CLOSE_BOUND_S, "the killed worker's peer closed")
        peer_closed_s = time.monotonic() - killed_at

        # a new offer meanwhile lands on the survivor
        c = await connect(cluster.base, (SIZE, SIZE), headers=AUTH)
        assert (await cluster.wait_owned(c.stream))[c.stream]["index"] == survivor["index"]
        await c.wait_frames(3)

        async def returned() -> dict | None:
            record = (await cluster.health())["workers"][doomed["index"]]
            return record if record["state"] == "ready" and record["pid"] != doomed["pid"] else None

        while (record := await returned()) is None:
            assert time.monotonic() - killed_at < RETURN_TIMEOUT_S, "the killed worker did not return"
            await asyncio.sleep(0.25)
        returned_s = time.monotonic() - killed_at
        assert record["restarts"] == 1

        # it takes streams again: the next offer goes to it, the least loaded
        d = await connect(cluster.base, (SIZE, SIZE), headers=AUTH)
        assert (await cluster.wait_owned(d.stream))[d.stream]["index"] == doomed["index"]
        await d.wait_frames(3)
        async with httpx.AsyncClient(base_url=cluster.base) as http:  # the front brought it up to date first
            state = (await http.get(f"/prompt?stream={d.stream}", headers=AUTH)).json()["streams"]
            assert state[d.stream]["negative_prompt"] == "blurry"

        # the other stream never stopped: it stayed connected and its frames kept coming all along
        assert b.pc.connectionState == "connected"
        times = [f.at for f in b.frames if f.at >= killed_at]
        gaps = [t1 - t0 for t0, t1 in zip([killed_at, *times], times)]
        assert len(times) >= 10 and max(gaps) < 4.0, (len(times), max(gaps))
        ARTIFACTS.mkdir(exist_ok=True)
        figures = {"kill_to_peer_closed_s": round(peer_closed_s, 2), "kill_to_worker_ready_s": round(returned_s, 2),
                   "survivor_frames_during": len(times), "survivor_longest_gap_s": round(max(gaps), 2)}
        (ARTIFACTS / "cluster_fault.json").write_text(json.dumps(figures, indent=2) + "\n")
        print("fault test figures:", figures)
        for client in (b, c, d):
            await client.close()

    asyncio.run(main())
