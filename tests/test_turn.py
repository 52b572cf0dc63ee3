"""STUN/TURN against a real coturn on loopback: relayed media with ``server.client`` and the camera bridge, the
credentials coturn accepts and refuses, secrets kept out of logs and answers, and unreachable TURN servers."""

from __future__ import annotations

import asyncio
import logging
import secrets
from pathlib import Path

import httpx
import pytest

from bridge.bridge import Bridge, BridgeOptions
from bridge.sinks import RecordingSink
from bridge.sources import VideoFileSource
from server.cli import main
from server.client import RelayUnavailable
from server.ice import CandidateType, selected_pair
from server.ice_config import IceConfig, IceUrl, TurnCredentials, mint_credentials
from server.turn_status import ServerIce, check_turn, check_turn_servers
from tests.support import ServerThread, eventually, free_port, running
from tests.support.coturn import start_coturn
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
            routes = await get_json(base, "/debug/connections")
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
                bad_name = await http.get("/ice-servers?stream=a:b", headers={"Authorization": f"Bearer {TOKEN}"})
        return refused, wrong, bad_name

    refused, wrong, bad_name = asyncio.run(main())
    assert refused.status_code == wrong.status_code == 401 and refused.json()["error"] == "unauthorized"
    assert bad_name.status_code == 422 and bad_name.json()["error"] == "invalid_request"


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

    with caplog.at_level(logging.INFO, logger="server.turn_status"):
        ice = ServerIce(config, retry_after=60)
        first = ice.configuration("a")
        assert urls(first) == ["stun:stun.example.org", "turn:turn.example.org"]
        ice.gathered(first, host_only, "peer a")
        assert urls(ice.configuration("b")) == ["stun:stun.example.org"]  # for the next 60 s

        again = ServerIce(config, retry_after=0)
        again.gathered(again.configuration("c"), host_only, "peer c")
        retry = again.configuration("d")
        assert urls(retry) == ["stun:stun.example.org", "turn:turn.example.org"]
        again.gathered(retry, relayed, "peer d")
    assert "peer a: no relay candidate from turn:turn.example.org" in caplog.text
    assert "TURN server turn:turn.example.org gave a relay again" in caplog.text


def test_serve_checks_its_turn_server_at_start_and_never_prints_the_secret(tiny_model_dir, tmp_path):
    secret = secrets.token_hex(20)
    dead = f"turn:127.0.0.1:{free_port()}?transport=tcp"
    process, base = serve(["--model", str(tiny_model_dir), "--width", "64", "--height", "64", "--backend", "torch",
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


def test_the_compose_files_coturn_config_accepts_minted_credentials(tmp_path):
    """docker/turnserver.conf (what the compose service and docs/deploy.md run) with a secret appended, as the
    compose service appends it: coturn takes the file and checks sana-stream's credentials against the secret."""
    secret = secrets.token_hex(24)
    server = start_coturn(tmp_path / "coturn-compose", secret=secret, config=COMPOSE_TURN_CONFIG)
    try:
        async def main():
            url = IceUrl.parse(server.url())
            return (await check_turn(url, mint_credentials(secret, "cam", ttl=600)),
                    await check_turn(url, mint_credentials(secret, "cam", ttl=-60)))

        fresh, expired = asyncio.run(main())
    finally:
        server.stop()
    assert fresh is None and expired is not None and "401" in expired
