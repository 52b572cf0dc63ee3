"""WHIP's and WHEP's ICE servers in Link headers, read the way OBS reads them and used against a real coturn; OPTIONS;
and WHEP egress (POST /whep) with aiortc players over loopback: candidate-less offers, DELETE, the viewer cap,
errors, and nothing left behind. The GStreamer WHEP player is in tests/test_whep_gstreamer.py."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from rtc.ice_config import IceConfig, IceUrl, TurnCredentials
from server.ice_links import ice_links
from server.turn_status import check_turn
from tests.support import eventually, running
from tests.support.webrtc import connect
from tests.test_server_api import whip_offer
from tests.test_server_stream import SIZE, local_engine, make_app  # noqa: F401 - fixture
from tests.test_server_viewer import Viewer

TOKEN = "whep-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def obs_ice_servers(response: httpx.Response) -> list[tuple[str, str, str]]:
    """(url, username, credential) as obs-webrtc's WHIPOutput::ParseLinkHeader gets them, step for step: each raw
    ``link: value`` line, split at every ',', each part split at ';', the URL from a token starting '<stun:' or
    '<turn:', a value from between the first and last '"'; a link without such a URL is dropped (libdatachannel
    refuses the empty URL)."""
    servers = []
    for name, value in response.headers.multi_items():
        if name.lower() != "link":
            continue
        for part in value.split(","):
            url = username = credential = ""
            for token in part.split(";"):
                if token.startswith(("<stun:", "<turn:")):
                    url = token[token.find("<") + 1:token.find(">")]
                elif "username=" in token:
                    username = token[token.find('"') + 1:token.rfind('"')]
                elif "credential=" in token:
                    credential = token[token.find('"') + 1:token.rfind('"')]
            if url:
                servers.append((url, username, credential))
    return servers


def links(response: httpx.Response) -> list[str]:
    return [value for name, value in response.headers.multi_items() if name.lower() == "link"]


def test_whip_and_options_hand_out_every_ice_server_as_obs_reads_them(local_engine, coturn):
    """One Link per URL; OBS's parser gets the STUN and both TURN URLs with minted credentials that coturn accepts
    (it skips turns:, which other clients take); OPTIONS answers the same without taking a slot; no secret."""
    urls = [f"stun:127.0.0.1:{coturn.port}", coturn.url("udp"), coturn.url("tcp"), "turns:127.0.0.1:5349?transport=tcp"]
    app = make_app(local_engine, ice=IceConfig.from_options(urls, turn_secret=coturn.secret), token=TOKEN)

    async def main():
        async with running(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
            options = await http.options("/whip?stream=obs", headers=AUTH)
            refused = await http.options("/whip")
            preflight = await http.options("/whip", headers={"Origin": "http://other.example",
                                                             "Access-Control-Request-Method": "POST"})
            whep_options = await http.options("/whep?stream=obs", headers=AUTH)
            health = (await http.get("/health", headers=AUTH)).json()
            pc, sdp = await whip_offer()
            created = await http.post("/whip?stream=obs", content=sdp, headers={**AUTH, "Content-Type":
                                                                                "application/sdp"})
            accepted = [await check_turn(IceUrl.parse(url), TurnCredentials(user, secret))
                        for url, user, secret in obs_ice_servers(created) if url.startswith("turn:")]
            await http.delete(created.headers["location"], headers=AUTH)
            await pc.close()
        return options, refused, preflight, whep_options, health, created, accepted

    options, refused, preflight, whep_options, health, created, accepted = asyncio.run(main())
    assert created.status_code == 201 and len(links(created)) == 4, created.headers
    assert [link.split(">")[0] for link in links(created)] == [f"<{u}" for u in urls]
    assert all('rel="ice-server"' in link for link in links(created))
    servers = obs_ice_servers(created)
    assert [s[0] for s in servers] == urls[:3]  # OBS takes stun: and turn: only
    # a name the server chose for this connection (issue 31), not the stream id a client could pick
    assert servers[0][1:] == ("", "") and re.fullmatch(r"\d+:c[0-9a-f]{16}", servers[1][1]), servers
    assert servers[1][1:] == servers[2][1:] and 'credential-type="password"' in links(created)[1]
    assert accepted == [None, None]  # coturn allocates relays with what OBS read, over UDP and TCP
    for response in (options, whep_options):
        assert response.status_code == 204 and response.headers["allow"] == "OPTIONS, POST"
        assert response.headers["accept-post"] == "application/sdp"
        assert [link.split(">")[0] for link in links(response)] == [f"<{u}" for u in urls]
    assert health["peers"] == 0 and health["viewers"] == 0  # OPTIONS took nothing
    assert refused.status_code == 401 and refused.json()["error"] == "unauthorized" and not links(refused)
    assert preflight.status_code == 204 and not links(preflight)  # a preflight carries no token: no credentials
    for response in (created, options, whep_options, refused, preflight):
        assert coturn.secret not in str(response.headers) + response.text


def test_without_ice_servers_there_are_no_links(local_engine):
    async def main():
        async with running(make_app(local_engine)) as base, httpx.AsyncClient(base_url=base) as http:
            pc, sdp = await whip_offer()
            created = await http.post("/whip", content=sdp, headers={"Content-Type": "application/sdp"})
            options = await http.options("/whip")
            await http.delete(created.headers["location"])
            await pc.close()
        return created, options

    created, options = asyncio.run(main())
    assert created.status_code == 201 and not links(created)
    assert options.status_code == 204 and not links(options)


async def whep_offer(configuration: RTCConfiguration | None = None) -> tuple[Viewer, str]:
    """A WHEP player's offer: receive-only video, no candidates (sent before gathering, as OBS sends WHIP)."""
    viewer = Viewer(RTCPeerConnection(configuration or RTCConfiguration(iceServers=[])))
    viewer.pc.addTransceiver("video", direction="recvonly")

    @viewer.pc.on("track")
    def on_track(track) -> None:
        asyncio.ensure_future(viewer.read(track))

    await viewer.pc.setLocalDescription(await viewer.pc.createOffer())
    sdp = re.sub(r"a=candidate:[^\r\n]*\r\n|a=end-of-candidates\r\n", "", viewer.pc.localDescription.sdp)
    return viewer, sdp


def test_whep_plays_a_stream_and_delete_ends_it(local_engine):
    """A candidate-less WHEP offer: 201, the SDP answer, a Location to DELETE; frames flow; DELETE frees the viewer
    and a second DELETE is 404. Every refusal is JSON and leaves no viewer behind."""
    sdp_headers = {**AUTH, "Content-Type": "application/sdp"}
    app = make_app(local_engine, token=TOKEN, max_viewers=1)

    async def main():
        async with running(app) as base, httpx.AsyncClient(base_url=base) as http:
            client = await connect(base, (SIZE, SIZE), headers=AUTH)
            await client.wait_frames(2)
            viewer, sdp = await whep_offer()
            created = await http.post(f"/whep?stream={client.stream}", content=sdp, headers=sdp_headers)
            await viewer.pc.setRemoteDescription(RTCSessionDescription(created.text, "answer"))
            frames = await viewer.wait_frames(5)
            routes = (await http.get("/debug/connections", headers=AUTH)).json()["viewers"]
            other, other_sdp = await whep_offer()
            sender, sender_sdp = await whip_offer()
            refusals = {
                "full": await http.post(f"/whep?stream={client.stream}", content=other_sdp, headers=sdp_headers),
                "unknown": await http.post("/whep?stream=nobody", content=other_sdp, headers=sdp_headers),
                "no_token": await http.post(f"/whep?stream={client.stream}", content=other_sdp,
                                            headers={"Content-Type": "application/sdp"}),
                "json": await http.post(f"/whep?stream={client.stream}", json={"sdp": other_sdp}, headers=AUTH),
                "no_stream": await http.post("/whep", content=other_sdp, headers=sdp_headers),
                "bad_sdp": await http.post(f"/whep?stream={client.stream}", content="v=0\r\nnonsense",
                                           headers=sdp_headers),
                "sends_only": await http.post(f"/whep?stream={client.stream}", content=sender_sdp,
                                              headers=sdp_headers),
            }
            viewers_after_refusals = len(app.state.viewers().viewers)
            location = created.headers["location"]
            wrong_stream = await http.delete(re.sub(r"/whep/[^/]+/", "/whep/nobody/", location), headers=AUTH)
            deleted = await http.delete(location, headers=AUTH)
            again = await http.delete(location, headers=AUTH)
            health = (await http.get("/health", headers=AUTH)).json()
            await asyncio.wait_for(viewer.ended.wait(), 10)
            for pc in (other.pc, sender, viewer.pc):
                await pc.close()
            await client.close()
        return created, frames, routes, refusals, viewers_after_refusals, wrong_stream, deleted, again, health

    created, frames, routes, refusals, kept, wrong_stream, deleted, again, health = asyncio.run(main())
    assert created.status_code == 201 and created.headers["content-type"].startswith("application/sdp")
    assert re.fullmatch(r"/whep/[0-9a-f]{12}/[0-9a-f]{12}", created.headers["location"]), created.headers
    assert "a=sendonly" in created.text and "a=candidate" in created.text
    assert len(frames) >= 5 and all(f.shape == (SIZE, SIZE, 3) for f in frames)
    (route,) = routes.values()
    assert route["state"] == "connected" and route["remote"] == "prflx", route  # learnt from its checks
    expected = {"full": (503, "server_full"), "unknown": (404, "unknown_stream"), "no_token": (401, "unauthorized"),
                "json": (415, "unsupported_media_type"), "no_stream": (422, None), "bad_sdp": (400, "invalid_sdp"),
                "sends_only": (400, "invalid_sdp")}
    for name, (status, reason) in expected.items():
        body = refusals[name].json()
        assert refusals[name].status_code == status and set(body) == {"error", "detail"}, (name, body)
        assert reason is None or body["error"] == reason, (name, body)
    assert "nobody" in refusals["unknown"].json()["detail"]
    assert kept == 1  # only the player that was answered
    assert wrong_stream.status_code == 404 and wrong_stream.json()["error"] == "unknown_session"
    assert deleted.status_code == 200 and again.status_code == 404
    assert health["viewers"] == 0 and health["peers"] == 1


@pytest.mark.parametrize("path", ["/whip", "/whep?stream=x"])
def test_options_needs_no_body_and_answers_json_errors_on_bad_queries(local_engine, path):
    async def main():
        async with running(make_app(local_engine)) as base, httpx.AsyncClient(base_url=base) as http:
            return await http.options(path), await http.options(path.split("?")[0] + "?stream=bad%20id")

    ok, bad = asyncio.run(main())
    assert ok.status_code == 204 and ok.content == b""
    assert bad.status_code == 422 and set(bad.json()) == {"error", "detail"}


def test_static_credentials_obs_cannot_read_are_escaped_and_warned_about_once(caplog, monkeypatch):
    monkeypatch.setattr("server.ice_links._warned", False)
    ice = IceConfig.from_options(["turn:turn.example.org:3478"], turn_username="user", turn_credential='pa"ss,word')
    with caplog.at_level("WARNING", "server.ice_links"):
        first, second = ice_links(ice), ice_links(ice)
    assert first == second == ['<turn:turn.example.org:3478>; rel="ice-server"; username="user"; '
                               'credential="pa\\"ss,word"; credential-type="password"']
    assert caplog.text.count("OBS cannot read them") == 1 and "pa\"ss" not in caplog.text
