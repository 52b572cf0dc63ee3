"""What each token opens: with ``--token`` every endpoint but ``/config``, a bare ``/health`` and the pages needs
it; the view token (``/view`` links) plays a stream and nothing else; the cluster front answers alike."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import httpx
import pytest

from cluster.forward import WorkerClient
from cluster.front import Front, create_front_app
from cluster.supervisor import Supervisor
from server.app import ModelInfo
from server.auth import derived_view_token
from server.settings import ServerSettings
from tests.support import running
from tests.support.webrtc import connect
from tests.test_cluster_parts import FAST, ScriptedWorker, kill, scripted_probe, status
from tests.test_server_stream import SIZE, local_engine, make_app  # noqa: F401 - fixture
from tests.test_server_viewer import view, view_offer

TOKEN = "the-full-token-0123"
VIEW = "a-view-only-token-4567"
FULL_HEADER = {"Authorization": f"Bearer {TOKEN}"}
VIEW_HEADER = {"Authorization": f"Bearer {VIEW}"}
# every endpoint that answers something but the pages' assets: (method, path, body)
READS = [("GET", "/prompt", None), ("GET", "/metrics", None), ("GET", "/debug/connections", None),
         ("GET", "/view-token", None)]
WRITES = [("POST", "/prompt", {"prompt": "x"}), ("POST", "/offer", {"sdp": "v=0", "type": "offer"}),
          ("DELETE", "/whip/nobody", None)]


async def call(http: httpx.AsyncClient, method: str, path: str, body, headers: dict[str, str]) -> httpx.Response:
    return await http.request(method, path, json=body, headers=headers)


def test_every_endpoint_but_config_and_bare_health_needs_the_token(local_engine):
    async def main():
        async with running(make_app(local_engine, token=TOKEN, view_token=VIEW)) as base, \
                httpx.AsyncClient(base_url=base) as http:
            client = await connect(base, (SIZE, SIZE), headers=FULL_HEADER, stream="private-cam")
            await http.post("/prompt", json={"stream": "private-cam", "prompt": "my secret prompt"},
                            headers=FULL_HEADER)
            results = {}
            for method, path, body in READS + WRITES:
                for who, headers in (("nobody", {}), ("wrong", {"Authorization": "Bearer wrong-token"}),
                                     ("view", VIEW_HEADER), ("full", FULL_HEADER), ("lowercase", {
                                         "Authorization": f"bearer  {TOKEN}"})):
                    results[method, path, who] = await call(http, method, path, body, headers)
            health = {who: await http.get("/health", headers=h) for who, h in (
                ("nobody", {}), ("wrong", {"Authorization": "Bearer wrong-token"}), ("view", VIEW_HEADER),
                ("full", FULL_HEADER))}
            config = await http.get("/config")
            await client.close()
        return results, health, config

    results, health, config = asyncio.run(main())
    for (method, path, who), r in results.items():
        if who in ("nobody", "wrong", "view"):
            assert r.status_code == 401 and r.json()["error"] == "unauthorized", (method, path, who, r.text)
            assert "private-cam" not in r.text and "my secret prompt" not in r.text
        else:
            assert r.status_code != 401, (method, path, who, r.text)
    assert "my secret prompt" in results["GET", "/prompt", "full"].text
    assert 'stream="private-cam"' in results["GET", "/metrics", "full"].text
    assert "private-cam" in results["GET", "/debug/connections", "full"].text
    assert results["GET", "/view-token", "full"].json() == {"view_token": VIEW}
    assert "view token only plays streams" in results["GET", "/prompt", "view"].json()["detail"]
    assert health["nobody"].status_code == 200 and health["nobody"].json() == {"status": "ok"}  # probes
    assert health["wrong"].status_code == health["view"].status_code == 401
    assert health["full"].json()["peers"] == 1 and "private-cam" in health["full"].json()["fps"]
    assert config.status_code == 200 and config.json()["token_required"] is True


def test_the_view_token_plays_a_stream_and_nothing_else(local_engine):
    async def main():
        async with running(make_app(local_engine, token=TOKEN)) as base, httpx.AsyncClient(base_url=base) as http:
            client = await connect(base, (SIZE, SIZE), headers=FULL_HEADER)
            derived = (await http.get("/view-token", headers=FULL_HEADER)).json()["view_token"]
            headers = {"Authorization": f"Bearer {derived}"}
            viewer = await view(base, client.stream, headers=headers)
            frames = await viewer.wait_frames(2)
            servers = await http.get("/ice-servers", headers=headers)  # a viewer behind NAT needs a relay too
            pc = await view_offer()
            replace = await http.post("/offer", json={"sdp": pc.localDescription.sdp, "type": "offer",
                                                      "stream": client.stream}, headers=headers)
            whip = await http.post(f"/whip?stream={client.stream}", content=b"v=0",
                                   headers={**headers, "Content-Type": "application/sdp"})
            prompt = await http.post("/prompt", json={"prompt": "taken over"}, headers=headers)
            await pc.close()
            await viewer.pc.close()
            await client.close()
        return derived, frames, servers, replace, whip, prompt

    derived, frames, servers, replace, whip, prompt = asyncio.run(main())
    assert derived == derived_view_token(TOKEN) and TOKEN not in derived and len(frames) >= 2
    assert servers.status_code == 200
    for refused in (replace, whip, prompt):
        assert refused.status_code == 401, refused.text


@pytest.mark.parametrize("settings, message", [
    ({"view_token": VIEW}, "view-token needs a --token"),
    ({"token": TOKEN, "view_token": TOKEN}, "must differ from it"),
    ({"token": TOKEN, "view_token": "short"}, "at least 8 characters"),
])
def test_bad_view_tokens_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        ServerSettings(**settings)


def test_secrets_stay_out_of_the_settings_repr():
    settings = ServerSettings(token=TOKEN, view_token=VIEW)
    assert TOKEN not in repr(settings) and VIEW not in repr(settings)


def test_the_cluster_fronts_read_endpoints_need_the_token_too(caplog):
    """The front's /health lists worker URLs and pids, /prompt every stream's prompt: behind the token; a bare
    /health answers the cluster's status only; its bearer parser is the single server's (any case)."""
    async def main():
        workers = [ScriptedWorker(dataclasses.replace(status(), url="http://127.0.0.1:9/worker-secret-url"))]
        supervisor = Supervisor(dataclasses.replace(FAST, workers=1), workers, scripted_probe, kill)

        async def stop() -> None:
            return None

        front = Front(supervisor, WorkerClient("internal-token", 1.0), stop)
        app = create_front_app(ServerSettings(token=TOKEN, pages=False), ModelInfo("tiny", True, "torch"), front)
        async with running(app) as base, httpx.AsyncClient(base_url=base) as http:
            answers = {path: [await http.get(path, headers=h) for h in ({}, VIEW_HEADER)]
                       for path in ("/prompt", "/metrics", "/debug/connections", "/view-token")}
            bare = await http.get("/health")
            full = await http.get("/health", headers={"Authorization": f"BEARER {TOKEN}"})
            view_token = await http.get("/view-token", headers={"Authorization": f"bearer {TOKEN}"})
        return answers, bare, full, view_token

    with caplog.at_level(logging.WARNING):
        answers, bare, full, view_token = asyncio.run(main())
    for path, (nobody, viewer) in answers.items():
        assert nobody.status_code == viewer.status_code == 401, (path, nobody.text, viewer.text)
    assert bare.status_code == 200 and bare.json() == {"status": "ok"}
    assert "worker-secret-url" in full.text and full.json()["workers"][0]["pid"] == 1
    assert view_token.json() == {"view_token": derived_view_token(TOKEN)}


def test_secrets_on_the_command_line_are_warned_about_and_the_environment_is_not(monkeypatch, caplog):
    from sana_stream.cli import build_parser
    from server.serve import build_settings

    with caplog.at_level(logging.WARNING, logger="server.serve"):
        build_settings(build_parser().parse_args(["serve", "--token", TOKEN, "--view-token", VIEW]), "unused")
    assert "--token, --view-token given on the command line" in caplog.text
    assert "SANA_STREAM_TOKEN, SANA_STREAM_VIEW_TOKEN" in caplog.text and TOKEN not in caplog.text
    caplog.clear()
    monkeypatch.setenv("SANA_STREAM_TOKEN", TOKEN)
    monkeypatch.setenv("SANA_STREAM_TURN_SECRET", "x" * 32)
    with caplog.at_level(logging.WARNING, logger="server.serve"):
        build_settings(build_parser().parse_args(["serve", "--ice-server", "turn:t.example.org"]), "unused")
    assert "command line" not in caplog.text


def test_turn_on_a_public_address_without_a_token_is_refused():
    from rtc.ice_config import IceConfig

    ice = IceConfig.from_options(["turn:t.example.org"], turn_secret="x" * 32)
    with pytest.raises(ValueError, match="without --token while a TURN server is configured"):
        ServerSettings(host="0.0.0.0", allow_public_without_token=True, ice=ice)
    assert ServerSettings(host="0.0.0.0", token=TOKEN, ice=ice).ice is ice  # with a token it starts
    assert ServerSettings(host="127.0.0.1", ice=ice).ice is ice  # loopback: nobody else can ask
