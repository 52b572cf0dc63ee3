"""STUN/TURN against a real coturn on loopback: relayed media with ``rtc.client`` and the camera bridge, the
credentials coturn accepts and refuses, secrets kept out of logs and answers, and unreachable TURN servers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from pathlib import Path

import httpx
import pytest

from bridge.bridge import Bridge, BridgeOptions
from bridge.sinks import RecordingSink
from bridge.sources import VideoFileSource
from rtc.client import RelayUnavailable
from rtc.ice import CandidateType, selected_pair
from rtc.ice_config import IceConfig, IceUrl, TurnCredentials, mint_credentials
from sana_stream.cli import main
from server.turn_status import ServerIce, check_turn, check_turn_servers
from tests.support import ServerThread, eventually, free_port, running
from tests.support.coturn import start_coturn
from tests.support.turn_probe import TCP_TRANSPORT, allocate, permit, turn_session
from tests.support.webrtc import connect
from tests.test_bridge import clip  # noqa: F401 - fixture
from tests.test_cli import serve, stop, wait_healthy
from tests.test_server_stream import SIZE, assert_shows, local_engine, make_app  # noqa: F401 - fixture

TOKEN = "turn-test-token"
COMPOSE_TURN_CONFIG = Path(__file__).resolve().parent.parent / "docker" / "turnserver.conf"


def relay_config(coturn) -> IceConfig:
    return IceConfig.from_options([coturn.url()], turn_secret=coturn.secret)


async def get_json(base: str, path: str, **kwargs) -> dict:
    async with httpx.AsyncClient(base_url=base) as http:
        r = await http.get(path, **kwargs)
    assert r.status_code == 200, r.text
    return r.json()


def test_server_client_forced_to_relay_streams_the_engines_output(local_engine, coturn, caplog):
    """Relay only (iceTransportPolicy "relay"): the client offers nothing but relay candidates, and the pair both
    sides use runs through coturn."""
    app = make_app(local_engine, ice=relay_config(coturn), token=TOKEN)
    headers = {"Authorization": f"Bearer {TOKEN}"}

    async def main():
        async with running(app) as base:
            client = await connect(base, (SIZE, SIZE), headers=headers, relay=True)
            frames = await client.wait_frames(8, timeout=30)
            offer = client.pc.localDescription.sdp
            pair = selected_pair(client.pc)
            routes = await get_json(base, "/debug/connections", headers=headers)
            config = await get_json(base, "/config")
            servers = await get_json(base, "/ice-servers", headers=headers)
            await client.close()
        return client, frames, offer, pair, routes, config, servers

    # aioice narrates the TURN exchange at DEBUG (aiortc's DEBUG is a line per RTP packet: INFO is enough there)
    with caplog.at_level(logging.INFO), caplog.at_level(logging.DEBUG, "aioice"), \
            caplog.at_level(logging.DEBUG, "server"):
        client, frames, offer, pair, routes, config, servers = asyncio.run(main())
    assert "TURN allocation created" in caplog.text  # aioice's own line: the capture saw the exchange
    assert " typ relay" in offer and " typ host" not in offer and " typ srflx" not in offer
    assert pair is not None and pair.local is CandidateType.RELAY, pair
    route = routes["peers"][client.stream]
    assert route == {"kind": "camera", "stream": client.stream, "state": "connected", "local": "host",
                     "remote": "relay", "relayed": True}
    assert_shows(client, frames, local_engine(prompt="a watercolor painting"), least=2)  # each check: 5 engine calls
    # the secret never leaves the server: not in its answers, not in any log line (aioice's debug lines included)
    assert servers["relay"] is True and servers["ice_servers"][0]["urls"] == [coturn.url()]
    for text in (str(config), str(servers), caplog.text):
        assert coturn.secret not in text


def test_ice_servers_needs_the_token_like_offers(local_engine, coturn):
    async def main():
        async with running(make_app(local_engine, ice=relay_config(coturn), token=TOKEN)) as base:
            async with httpx.AsyncClient(base_url=base) as http:
                refused = await http.get("/ice-servers")
                wrong = await http.get("/ice-servers", headers={"Authorization": "Bearer wrong-token"})
                named = await http.get("/ice-servers?stream=everyone", headers={"Authorization": f"Bearer {TOKEN}"})
        return refused, wrong, named

    refused, wrong, named = asyncio.run(main())
    assert refused.status_code == wrong.status_code == 401 and refused.json()["error"] == "unauthorized"
    username = named.json()["ice_servers"][0]["username"]  # the name is the server's, whatever the client asks
    assert named.status_code == 200 and "everyone" not in username and username.split(":")[1].startswith("c")


def test_coturn_accepts_minted_credentials_and_refuses_expired_or_forged_ones(coturn):
    async def main():
        url = IceUrl.parse(coturn.url())
        return {name: await check_turn(url, creds) for name, creds in {
            "minted": mint_credentials(coturn.secret, "cam", ttl=600),
            "expired": mint_credentials(coturn.secret, "cam", ttl=-60),
            "other secret": mint_credentials("not-the-secret-of-this-coturn", "cam", ttl=600),
            "longer life claimed": TurnCredentials(
                mint_credentials(coturn.secret, "cam", ttl=-60).username.replace(":", "0:", 1),
                mint_credentials(coturn.secret, "cam", ttl=-60).credential),
        }.items()}

    results = asyncio.run(main())
    assert results["minted"] is None
    for name in ("expired", "other secret", "longer life claimed"):
        assert results[name] is not None and "refused the credentials (401)" in results[name], (name, results)
    assert coturn.secret not in coturn.log_text()


def test_a_static_turn_user_relays_too_over_tcp(local_engine, tmp_path):
    user = ("alice", secrets.token_hex(12))
    static = start_coturn(tmp_path / "coturn-static", user=user)
    try:
        config = IceConfig.from_options([static.url("tcp")], turn_username=user[0], turn_credential=user[1])

        async def main():
            url = IceUrl.parse(static.url("tcp"))
            refused = await check_turn(url, TurnCredentials(user[0], "wrong-password"))
            async with running(make_app(local_engine, ice=config)) as base:
                client = await connect(base, (SIZE, SIZE), relay=True)
                await client.wait_frames(3, timeout=30)
                pair = selected_pair(client.pc)
                await client.close()
            return refused, pair

        refused, pair = asyncio.run(main())
    finally:
        static.stop()
    assert refused is not None and "401" in refused
    assert pair is not None and pair.local is CandidateType.RELAY


def test_the_bridge_relays_when_asked(clip, local_engine, coturn):  # noqa: F811 - fixture
    async def run(base: str) -> tuple[dict, int]:
        bridge = Bridge(VideoFileSource(clip, loop=True), RecordingSink(keep=2),
                        BridgeOptions(server=base, fps=15, relay=True))
        task = asyncio.create_task(bridge.run())
        await eventually(lambda: bridge.frames_out >= 3 or task.done(), 30, "3 restyled frames")
        assert not task.done(), task.result()
        routes = await get_json(base, "/debug/connections")
        bridge.stop()
        await task
        return routes, bridge.frames_out

    with ServerThread(make_app(local_engine, ice=relay_config(coturn))) as server:
        base = server.base
        routes, frames = asyncio.run(run(base))
    assert frames >= 3
    assert [r["relayed"] for r in routes["peers"].values()] == [True], routes


def test_relay_without_a_usable_turn_server_fails_at_once_with_the_reason(local_engine, clip, tmp_path, caplog):  # noqa: F811
    dead = f"turn:127.0.0.1:{free_port()}?transport=tcp"
    with ServerThread(make_app(local_engine)) as server:
        base = server.base
        with pytest.raises(RelayUnavailable, match="lists no TURN server"):
            asyncio.run(connect(base, (SIZE, SIZE), relay=True))
        with caplog.at_level(logging.ERROR):
            assert main(["camera", "--server", base, "--source", f"file:{clip}", "--record", str(tmp_path),
                         "--no-stdin", "--relay"]) == 1
        assert "relay forced, but the server at" in caplog.text and "lists no TURN server" in caplog.text
    with ServerThread(make_app(local_engine, ice=IceConfig.from_options([dead], turn_secret="x" * 16))) as server:
        base = server.base
        with pytest.raises(RelayUnavailable, match=f"TURN server {dead.replace('?', '[?]')} gave no relay address"):
            asyncio.run(connect(base, (SIZE, SIZE), relay=True))


def test_an_unreachable_turn_server_is_a_warning_naming_it_and_no_hang(local_engine, caplog):
    """A TURN server that does not answer (UDP: nothing comes back; TCP: refused) is named in a warning at start;
    the server's own connections then go without it, so offers are not held up, and clients that reach the
    server directly stream as before."""
    silent, refusing = f"turn:127.0.0.1:{free_port()}", f"turn:127.0.0.1:{free_port()}?transport=tcp"
    config = IceConfig.from_options([silent, refusing], turn_secret="x" * 16)

    async def main():
        results = await check_turn_servers(config, timeout=1.0)
        async with running(make_app(local_engine, ice=config)) as base:  # checks them again, 3 s at most
            client = await connect(base, (SIZE, SIZE))  # host candidates: no TURN needed on one machine
            await client.wait_frames(3, timeout=30)
            answer = client.pc.remoteDescription.sdp
            await client.close()
        return results, answer

    with caplog.at_level(logging.WARNING, logger="server"):
        results, answer = asyncio.run(main())
    assert "no answer within 1 s" in results[silent] and "unreachable (ConnectionRefusedError" in results[refusing]
    assert f"TURN server {silent}: no answer within 3 s" in caplog.text
    assert f"TURN server {refusing}: unreachable" in caplog.text
    assert "the server's own connections go without TURN for 60 s" in caplog.text and " typ relay" not in answer


def test_the_servers_own_connections_skip_a_failed_turn_server_then_try_it_again(caplog):
    config = IceConfig.from_options(["stun:stun.example.org", "turn:turn.example.org"], turn_secret="x" * 16)
    host_only, relayed = "a=candidate:1 1 udp 2130706431 192.0.2.1 5000 typ host", \
        "a=candidate:2 1 udp 16777215 198.51.100.1 5001 typ relay raddr 0.0.0.0 rport 9"

    def urls(configuration) -> list[str]:
        return [u for s in configuration.iceServers for u in s.urls]

    async def main():
        ice = ServerIce(config, retry_after=60)
        first = ice.configuration()
        assert urls(first) == ["stun:stun.example.org", "turn:turn.example.org"]
        await ice.gathered(first, host_only, "peer a", timeout=0.5)  # no network: the check gets no answer
        assert urls(ice.configuration()) == ["stun:stun.example.org"]  # for the next 60 s

        again = ServerIce(config, retry_after=0)
        await again.gathered(again.configuration(), host_only, "peer c", timeout=0.5)
        retry = again.configuration()
        assert urls(retry) == ["stun:stun.example.org", "turn:turn.example.org"]
        await again.gathered(retry, relayed, "peer d")

    with caplog.at_level(logging.INFO, logger="server.turn_status"):
        asyncio.run(main())
    assert "peer a: no relay candidate from turn:turn.example.org" in caplog.text
    assert "TURN server turn:turn.example.org gave a relay again" in caplog.text


def test_serve_checks_its_turn_server_at_start_and_never_prints_the_secret(demo_model_dir, tmp_path):
    secret = secrets.token_hex(20)
    dead = f"turn:127.0.0.1:{free_port()}?transport=tcp"
    process, base = serve(["--model", str(demo_model_dir), "--width", "64", "--height", "64", "--backend", "torch",
                           "--ice-server", "stun:127.0.0.1:3478", "--ice-server", dead],
                          env={"SANA_STREAM_CACHE": str(tmp_path), "SANA_STREAM_TURN_SECRET": secret})
    try:
        wait_healthy(process, base)
        config = httpx.get(f"{base}/config").text
        servers = httpx.get(f"{base}/ice-servers").json()
    finally:
        output = stop(process)
    assert f"TURN server {dead}: unreachable" in output
    assert servers["ice_servers"][1]["urls"] == [dead] and servers["relay"] is True
    for text in (output, config, str(servers)):
        assert secret not in text


def test_the_shipped_coturn_config_relays_media_only_and_shares_the_pool(tmp_path):
    """docker/turnserver.conf (what the compose service and docs/deploy.md run) with the secret and the server's
    media address appended, as the compose service appends them: minted credentials work, expired ones do not; no
    TCP relay (so nothing reaches the server's HTTP port, a worker's or Ray's); no relay toward any other loopback,
    private or link-local address; one credential gets 5 relays, not 6, and the next client still gets one."""
    secret = secrets.token_hex(24)
    media = "127.0.0.1"  # where the server on this host offers its host candidates (and listens for HTTP)
    server = start_coturn(tmp_path / "coturn-shipped", secret=secret, config=COMPOSE_TURN_CONFIG,
                          extra=(f"allowed-peer-ip={media}",))
    ice = IceConfig.from_options([server.url()], turn_secret=secret)
    one, other = ice.credentials(), ice.credentials()

    async def main():
        url = IceUrl.parse(server.url())
        fresh, expired = (await check_turn(url, ice.credentials()),
                          await check_turn(url, mint_credentials(secret, "cam", ttl=-60)))
        async with turn_session(server.port, one, over="tcp") as control:
            tcp_relay = await allocate(control, TCP_TRANSPORT)
        async with contextlib.AsyncExitStack() as stack:
            sessions = [await stack.enter_async_context(turn_session(server.port, one)) for _ in range(6)]
            allocations = [await allocate(s) for s in sessions]
            peers = {peer: await permit(sessions[0], (peer, 8080)) for peer in
                     (media, "127.0.0.2", "10.0.0.5", "172.17.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1")}
            async with turn_session(server.port, other) as next_client:
                next_allocation = await allocate(next_client)
        return fresh, expired, tcp_relay, allocations, peers, next_allocation

    try:
        fresh, expired, tcp_relay, allocations, peers, next_allocation = asyncio.run(main())
    finally:
        server.stop()
    assert fresh is None and expired is not None and "401" in expired
    assert tcp_relay == 442  # Unsupported Transport Protocol: no-tcp-relay
    assert allocations == [None] * 5 + [486], allocations  # user-quota=5: Allocation Quota Reached
    assert next_allocation is None  # another connection's credential (another name) still gets a relay
    assert peers.pop(media) is None and set(peers.values()) == {403}, peers  # Forbidden: denied-peer-ip
    assert one.username.split(":")[1] != other.username.split(":")[1]


def test_a_full_relay_pool_is_reported_as_such(local_engine, tmp_path, caplog):
    """coturn with a single relay port, taken: the start check and a connection that got no relay say "relay pool
    exhausted", not "unreachable or refused the credentials"."""
    secret = secrets.token_hex(24)
    server = start_coturn(tmp_path / "coturn-full", secret=secret, ports=1)
    ice = IceConfig.from_options([server.url()], turn_secret=secret)
    host_only = "a=candidate:1 1 udp 2130706431 192.0.2.1 5000 typ host"

    async def main():
        async with turn_session(server.port, ice.credentials()) as holder:
            assert await allocate(holder) is None  # the one relay port
            servers = ServerIce(ice)
            checked = await servers.check(timeout=3)
            await servers.gathered(ice.rtc_configuration(), host_only, "peer a")
        return checked

    try:
        with caplog.at_level(logging.WARNING, logger="server.turn_status"):
            checked = asyncio.run(main())
    finally:
        server.stop()
    assert "relay pool exhausted (508" in checked[server.url()]
    assert f"peer a: no relay candidate from {server.url()}: relay pool exhausted (508" in caplog.text
    assert "refused the credentials" not in caplog.text
