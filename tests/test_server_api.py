"""Server robustness with real peers over loopback: limits, auth, WHIP, idle timeout, cleanup, bad input."""

from __future__ import annotations

import asyncio
import re
import threading

import httpx
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from server.client import OfferRejected
from server.settings import ServerSettings
from tests.support import eventually, running
from tests.support.webrtc import SyntheticCamera, connect
from tests.test_server_stream import SIZE, local_engine, make_app  # noqa: F401 - fixture

TOKEN = "s3cret-token"


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


async def whip_offer() -> tuple[RTCPeerConnection, str]:
    """An OBS-like WHIP offer: send-only video, and no ICE candidates in the SDP (OBS 30.2+)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver(SyntheticCamera((SIZE, SIZE)), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = re.sub(r"a=candidate:[^\r\n]*\r\n|a=end-of-candidates\r\n", "", pc.localDescription.sdp)
    assert "a=candidate" not in sdp
    return pc, sdp


def test_whip_without_candidates_streams_and_delete_frees_it(local_engine):
    async def main():
        app = make_app(local_engine)
        async with running(app) as base, httpx.AsyncClient(base_url=base) as http:
            pc, sdp = await whip_offer()
            r = await http.post("/whip", content=sdp, headers={"Content-Type": "application/sdp"})
            assert r.status_code == 201 and r.headers["content-type"].startswith("application/sdp")
            location = r.headers["location"]
            assert re.fullmatch(r"/whip/[0-9a-f]{12}", location)
            await pc.setRemoteDescription(RTCSessionDescription(r.text, "answer"))
            stream = location.rsplit("/", 1)[1]
            pipeline = app.state.runtime["pipeline"]
            await eventually(lambda: pipeline.stats(stream).generated >= 3, 20, "WHIP frames processed")
            metrics = (await http.get("/metrics")).text
            assert f'sana_stream_frames_generated_total{{stream="{stream}"}}' in metrics
            assert (await http.delete(location)).status_code == 200
            assert (await http.get("/health")).json()["peers"] == 0
            assert stream not in pipeline.engine.stream_ids()
            assert (await http.delete(location)).status_code == 404
            await pc.close()

    asyncio.run(main())


def test_peer_limit_answers_503(local_engine):
    async def main():
        async with running(make_app(local_engine, max_peers=1)) as base:
            first = await connect(base, (SIZE, SIZE))
            with pytest.raises(OfferRejected) as info:
                await connect(base, (SIZE, SIZE))
            assert info.value.status == 503 and info.value.body["error"] == "server_full"
            await first.close()

    asyncio.run(main())


def test_idle_peer_is_closed_and_freed(local_engine):
    async def main():
        app = make_app(local_engine, idle_timeout=1.0)
        async with running(app) as base, httpx.AsyncClient(base_url=base) as http:
            client = await connect(base, (SIZE, SIZE))
            await client.wait_frames(2)
            client.camera.paused = True  # the camera stops sending
            await eventually(lambda: not app.state.peers().peers, 10, "idle peer closed")
            assert (await http.get("/health")).json()["peers"] == 0
            # a closing peer leaves the peer table first, its stream after its connection has closed
            await eventually(lambda: client.stream not in app.state.runtime["pipeline"].engine.stream_ids(), 5,
                             "idle peer's stream freed")
            await client.close()

    asyncio.run(main())


def test_idle_timeout_counts_from_the_first_input_frame(local_engine):
    """A new peer gets FIRST_INPUT_TIMEOUT_S for its first frame however short ``idle_timeout`` is; once frames
    have flowed, it is closed ``idle_timeout`` after they stop."""
    async def main():
        app = make_app(local_engine, idle_timeout=0.5)
        async with running(app) as base:
            client = await connect(base, (SIZE, SIZE), paused=True)
            await asyncio.sleep(1.5)  # three idle timeouts, no frame yet
            assert client.stream in app.state.peers().peers
            client.camera.paused = False
            await client.wait_frames(2)
            client.camera.paused = True
            await eventually(lambda: client.stream not in app.state.peers().peers, 5, "idle peer closed")
            await client.close()

    asyncio.run(main())


def test_vanished_client_frees_everything(local_engine):
    async def main():
        app = make_app(local_engine, idle_timeout=1.0)
        async with running(app) as base:
            client = await connect(base, (SIZE, SIZE))
            await client.wait_frames(2)
            await client.close()  # gone without DELETE or goodbye
            await eventually(lambda: not app.state.peers().peers, 10, "vanished peer freed")
            await eventually(lambda: app.state.runtime["pipeline"].engine.stream_ids() == ["default"], 5,
                             "vanished peer's stream freed")

    asyncio.run(main())


BAD_REQUESTS = [
    ("post", "/offer", dict(json={"sdp": "v=0\r\n" + "a=x\r\n" * 20000, "type": "offer"}), 413),
    ("post", "/whip", dict(content="v=0\r\n" + "a" * 70000, headers={"Content-Type": "application/sdp"}), 413),
    ("post", "/offer", dict(json={"sdp": "this is not sdp", "type": "offer"}), 400),
    ("post", "/offer", dict(json={"sdp": "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n", "type": "offer"}), 400),
    ("post", "/offer", dict(json={"sdp": "v=0\r\nm=video\r\n", "type": "answer"}), 400),
    ("post", "/offer", dict(json={"sdp": "v=0", "type": "offer", "evil": 1}), 422),
    ("post", "/offer", dict(json={"sdp": "v=0", "type": "offer", "repeat": "sometimes"}), 422),
    ("post", "/whip", dict(content="v=0\r\n", headers={"Content-Type": "text/plain"}), 415),
    ("post", "/whip", dict(content="garbage", headers={"Content-Type": "application/sdp"}), 400),
    ("post", "/prompt", dict(json={"prompt": "x" * 2001}), 422),
    ("post", "/prompt", dict(json={"prompt": "a", "colour": "red"}), 422),
    ("post", "/prompt", dict(content='{"prompt": "a", "seed": NaN}', headers={"Content-Type": "application/json"}), 422),
    ("post", "/prompt", dict(content='{"strength": Infinity}', headers={"Content-Type": "application/json"}), 422),
    ("post", "/prompt", dict(json={"guidance_scale": -1}), 422),
    ("post", "/prompt", dict(json={"prompt": "a", "stream": "nope"}), 404),
    ("post", "/prompt", dict(content="{not json", headers={"Content-Type": "application/json"}), 422),
    ("get", "/prompt?stream=nope", {}, 404),
    ("delete", "/whip/nope", {}, 404),
]


def test_bad_input_gets_json_4xx_and_the_stream_keeps_going(local_engine):
    async def main():
        async with running(make_app(local_engine)) as base, httpx.AsyncClient(base_url=base) as http:
            client = await connect(base, (SIZE, SIZE))
            await client.wait_frames(3)
            for method, path, kwargs, status in BAD_REQUESTS:
                r = await getattr(http, method)(path, **kwargs)
                assert r.status_code == status, (path, kwargs, r.status_code, r.text[:300])
                assert r.json()["error"], r.text
            await client.wait_frames(5)  # still streaming
            assert (await http.get("/health")).json()["peers"] == 1
            await client.close()

    asyncio.run(main())


def test_token_guards_mutating_endpoints(local_engine):
    async def main():
        async with running(make_app(local_engine, token=TOKEN)) as base, httpx.AsyncClient(base_url=base) as http:
            for method, path, kwargs in [("post", "/prompt", {"json": {"prompt": "a"}}),
                                         ("post", "/offer", {"json": {"sdp": "v=0", "type": "offer"}}),
                                         ("post", "/whip", {"content": "v=0"}), ("delete", "/whip/abc", {})]:
                for headers in ({}, {"Authorization": "Bearer wrong-token"}):
                    r = await getattr(http, method)(path, headers=headers, **kwargs)
                    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
            assert (await http.get("/health")).status_code == 200
            good = {"Authorization": f"Bearer {TOKEN}"}
            assert (await http.post("/prompt", json={"prompt": "a"}, headers=good)).status_code == 200
            client = await connect(base, (SIZE, SIZE), headers=good)
            await client.wait_frames(2)
            await client.close()

    asyncio.run(main())


def test_public_bind_needs_a_token():
    with pytest.raises(ValueError, match="without --token"):
        ServerSettings(host="0.0.0.0")
    assert ServerSettings(host="0.0.0.0", token=TOKEN).host == "0.0.0.0"
    assert ServerSettings(host="0.0.0.0", allow_public_without_token=True).token is None


@pytest.mark.cpu
def test_health_and_metrics(local_engine):
    async def main():
        async with running(make_app(local_engine)) as base, httpx.AsyncClient(base_url=base) as http:
            client = await connect(base, (SIZE, SIZE))
            await client.wait_frames(6)
            health = (await http.get("/health")).json()
            metrics = (await http.get("/metrics")).text
            schema = (await http.get("/openapi.json")).json()
            await client.close()
        return client, health, metrics, schema

    client, health, metrics, schema = asyncio.run(main())
    assert health["demo_model"] is True and health["device"] == "cpu" and health["peers"] == 1
    assert health["fps"][client.stream] > 0
    assert f'sana_stream_latency_seconds_count{{stream="{client.stream}"}}' in metrics
    assert f'sana_stream_fps{{stream="{client.stream}"}}' in metrics
    assert {"/offer", "/whip", "/whip/{peer_id}", "/prompt", "/health", "/metrics"} <= set(schema["paths"])


@pytest.mark.slow
def test_connect_disconnect_cycles_leave_memory_and_threads_flat(local_engine):
    async def cycle(base: str) -> None:
        client = await connect(base, (SIZE, SIZE))
        await client.wait_frames(1)
        await client.close()

    async def main():
        # peers go at once, when their client closes, not after the idle timeout
        app = make_app(local_engine, idle_timeout=5.0)
        async with running(app) as base:
            for _ in range(10):  # warm up allocators and caches
                await cycle(base)
            await eventually(lambda: not app.state.peers().peers, 10)
            threads, rss = threading.active_count(), rss_bytes()
            for _ in range(100):
                await cycle(base)
            await eventually(lambda: not app.state.peers().peers, 10, "all peers freed")
            engine = app.state.runtime["pipeline"].engine
            await eventually(lambda: engine.stream_ids() == ["default"] and threading.active_count() <= threads + 2,
                             10, "the peers' streams and threads gone")
            return threads, rss, threading.active_count(), rss_bytes()

    threads, rss, threads_after, rss_after = asyncio.run(main())
    assert threads_after <= threads + 2
    assert rss_after - rss < 40 * 2**20
