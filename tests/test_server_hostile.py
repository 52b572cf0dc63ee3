"""Hostile and careless requests (tests/hostile_cases.py), each answered with its JSON 4xx while a real aiortc peer
keeps streaming: afterwards /health shows the same peers, viewers and streams, and the peer table, the pipeline's
streams, the engine's streams and the stream locks are as they were."""

from __future__ import annotations

import asyncio
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from server.app import ModelInfo, create_app
from rtc.ice import include_loopback_candidates
from server.settings import ServerSettings
from stream import StreamConfig, StreamEngine
from tests.hostile_cases import CASES, TOKEN, Case, Offers
from tests.support import eventually
from tests.support.live_server import LiveServer, raw_request
from tests.support.webrtc import Client, connect
from tests.test_server_stream import SIZE

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Live:
    server: LiveServer
    client: Client
    offers: Offers

    def state(self) -> dict[str, object]:
        """What must not change: /health's counts and streams, and the registries behind them."""
        health = httpx.get(f"{self.server.base}/health", headers=AUTH, timeout=10).json()
        return {"health": (health["peers"], health["viewers"], health["streams"], sorted(health["rates"])),
                **self.server.call(self._registries())}

    async def _registries(self) -> dict[str, object]:
        app = self.server.app
        pipeline = app.state.runtime["pipeline"]
        return {"peers": sorted(app.state.peers().peers), "viewers": sorted(app.state.viewers().viewers),
                "pipeline": sorted(pipeline.stream_ids()), "engine": sorted(pipeline.engine.stream_ids()),
                "locks": len(app.state.peers().locks)}


async def _offer(*transceivers: tuple[str, str]) -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    for kind, direction in transceivers:
        pc.addTransceiver(kind, direction=direction)
    await pc.setLocalDescription(await pc.createOffer())
    await pc.close()
    return re.sub(r"a=candidate:[^\r\n]*\r\n|a=end-of-candidates\r\n", "", pc.localDescription.sdp)


@pytest.fixture(scope="module")
def live(demo_model_dir):
    include_loopback_candidates()
    config = StreamConfig(width=SIZE, height=SIZE, t_list=(1.0,), prompt="a watercolor painting")
    settings = ServerSettings(stream=config, token=TOKEN, max_peers=2, max_viewers=2)
    engine = StreamEngine.from_pretrained(demo_model_dir, config)
    server = LiveServer(create_app(settings, engine, ModelInfo("tiny", True, "torch")), settings)
    base = server.start()

    async def setup() -> Live:
        client = await connect(base, (SIZE, SIZE), headers=AUTH)
        client.inner.keep = 4  # this peer streams through every case: keep only the newest frames
        await client.wait_frames(3)
        offers = Offers(whip=await _offer(("video", "sendonly")),
                        with_audio=await _offer(("video", "sendonly"), ("audio", "sendonly")),
                        view=await _offer(("video", "recvonly")), stream=client.stream)
        return Live(server, client, offers)

    live = server.call(setup())
    yield live
    server.call(live.client.close())
    server.stop()


def send(live: Live, case: Case) -> list[httpx.Response | tuple[int, bytes]]:
    offers = live.offers
    if case.raw is not None:
        head, body = case.raw(offers)
        host = live.server.base.removeprefix("http://")
        return [raw_request(live.server.base, f"{head}\r\nHost: {host}", body)]
    path = case.path.format(stream=offers.stream)

    def one(_: int) -> httpx.Response:
        kwargs = case.request(offers)
        headers = {**(AUTH if case.auth else {}), **kwargs.pop("headers", {})}
        with httpx.Client(base_url=live.server.base, timeout=30) as http:
            return http.request(case.method.upper(), path, headers=headers, **kwargs)

    with ThreadPoolExecutor(case.repeat) as pool:
        return list(pool.map(one, range(case.repeat)))


def assert_refused(case: Case, answer: httpx.Response | tuple[int, bytes], schema: dict) -> None:
    if isinstance(answer, tuple):
        status, content = answer
        body = httpx.Response(status, content=content).json()
    else:
        status, body = answer.status_code, answer.json()
    assert status == case.status, (case.id, status, body)
    assert set(body) == {"error", "detail"} and isinstance(body["error"], str) and body["detail"], body
    if case.error is not None:
        assert body["error"] == case.error, (case.id, body)
    assert_documented(schema, case, status, body)


def assert_documented(schema: dict, case: Case, status: int, body: dict) -> None:
    """The answer's status is declared for its endpoint in /openapi.json, with the body it has (server.openapi).
    Paths no endpoint serves (static files, unknown paths, wrong methods) are not in the schema."""
    path = case.path.split("?")[0]
    if case.raw is not None:
        return
    template = next((p for p in schema["paths"] if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", p), path)
                     or p == path), None)
    operation = schema["paths"].get(template, {}).get(case.method) if template else None
    if operation is None:
        return
    declared = operation["responses"].get(str(status))
    assert declared is not None, f"{case.method.upper()} {template} answers {status} ({case.id}), undeclared"
    ref = declared["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    error_schema = schema["components"]["schemas"][ref]
    assert set(error_schema["required"]) == set(body)
    if isinstance(body["detail"], list):
        assert all(set(d) == {"field", "message"} for d in body["detail"]), body


def test_hostile_cases_are_enough():
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_request_is_refused_and_leaves_nothing_behind(live, case):
    before = live.state()
    received = live.client.inner.received
    schema = live.server.app.openapi()
    for answer in send(live, case):
        assert_refused(case, answer, schema)
    assert live.state() == before
    live.server.call(live.client.wait_frames(1, timeout=20))  # the live peer is still streaming
    assert live.client.inner.received > received


def test_a_valid_offer_still_connects_after_the_hostile_ones(live):
    async def main():
        other = await connect(live.server.base, (SIZE, SIZE), headers=AUTH)
        await other.wait_frames(2)
        await other.close()

    live.server.call(main())


def test_the_bearer_scheme_is_case_insensitive(live):
    for scheme in ("bearer", "BEARER", "Bearer ", "bEaReR"):
        r = httpx.post(f"{live.server.base}/prompt", json={"prompt": "a watercolor painting"},
                       headers={"Authorization": f"{scheme} {TOKEN}"})
        assert r.status_code == 200, (scheme, r.text)


def test_concurrent_offers_for_one_id_leave_one_peer(live):
    """A double-clicked Reconnect, or OBS retrying while the page reconnects: every offer is answered (200, the
    later replacing the earlier, or 409), none with a 500, and one peer holds the id, with one engine stream."""
    async def main():
        clients = await asyncio.gather(*(connect(live.server.base, (SIZE, SIZE), headers=AUTH, stream="twice")
                                         for _ in range(4)), return_exceptions=True)
        connected = [c for c in clients if isinstance(c, Client)]
        refused = [c for c in clients if not isinstance(c, Client)]
        assert connected and all(getattr(r, "status", None) == 409 for r in refused), refused
        app = live.server.app
        await asyncio.sleep(0.5)
        assert "twice" in app.state.peers().peers
        pipeline = app.state.runtime["pipeline"]
        assert sorted(pipeline.stream_ids()) == sorted(app.state.peers().peers)
        assert sorted(pipeline.engine.stream_ids()) == sorted(["default", *app.state.peers().peers])
        winner = app.state.peers().peers["twice"]
        counts = [c.inner.received for c in connected]
        await eventually(lambda: any(c.inner.received >= n + 2 for c, n in zip(connected, counts)), 20,
                         "frames for the peer that holds the id")
        for c in connected:
            await c.close()
        await app.state.peers().close("twice", only=winner)
        assert sorted(pipeline.engine.stream_ids()) == sorted(["default", live.client.stream])

    before = live.state()
    live.server.call(main())
    assert live.state() == before
