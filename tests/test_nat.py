"""Clients and a server each behind a symmetric NAT, on a simulated internet with coturn (tests/support/netns.py):
the server (the real `sana-stream serve` process) has only its HTTP port forwarded, so media crosses only through a
TURN relay. Without ICE servers no frame arrives (the NAT is real); with ``--ice-server`` and ``--turn-secret`` an
aiortc client, an OBS-like WHIP sender that offers no candidates and takes TURN from the Link headers, WHEP players
(aiortc, GStreamer), and Chromium's webcam and /view pages all stream, each relayed, frames counted.

One lab (five namespaces, coturn) per module, one server per configuration; the tests run in file order, the
server without ICE servers first (both use the one forwarded port). Needs root for the namespaces: skipped with the
reason where they cannot be made, failing under CI=true."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import httpx
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from rtc.ice_config import rtc_configuration
from tests.support.coturn import Coturn, require_coturn, start_coturn, stun_answers
from tests.support.netns import HTTP_PORT, INTERNET_IP, SERVER_PUBLIC, NatLab, in_netns, require_namespaces
from tests.support.polling import eventually
from tests.support.prometheus import sample
from tests.support.webrtc import SyntheticCamera, connect
from tests.test_cli import stop, wait_healthy
from tests.test_whep import links, obs_ice_servers, whep_offer

pytestmark = pytest.mark.slow  # a `sana-stream serve` process per configuration
T = TypeVar("T")
SIZE = 64
TOKEN = "nat-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BASE = f"http://{SERVER_PUBLIC}:{HTTP_PORT}"  # the server router's public address, forwarded to the server
NO_MEDIA_WAIT_S = 10.0  # how long the NATs must keep media out (relayed media arrived within 2 s here)
FRAMES = 10


class Lab:
    def __init__(self, nat: NatLab, coturn: Coturn) -> None:
        self.nat, self.coturn = nat, coturn

    def client(self, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Runs ``main()`` in its own event loop inside the client's home (behind its NAT)."""
        return in_netns(self.nat.client, lambda: asyncio.run(main()))

    def serve(self, model: str, cache: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        """`sana-stream serve` inside the server's home, answering /health through the forwarded port."""
        command = [*self.nat.exec(self.nat.server), sys.executable, "-m", "sana_stream.cli", "serve", "--model", model,
                   "--width", str(SIZE), "--height", str(SIZE), "--backend", "torch", "--host", "0.0.0.0",
                   "--port", str(HTTP_PORT), "--token", TOKEN, "--allowed-host", SERVER_PUBLIC, *args]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   env={**os.environ, "SANA_STREAM_CACHE": cache, **(env or {})})
        try:
            in_netns(self.nat.client, lambda: wait_healthy(process, BASE))
        except BaseException:
            stop(process)
            raise
        return process


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[Lab]:
    require_namespaces()
    require_coturn()
    nat = NatLab.build(f"sana{os.getpid() % 100_000}")
    try:
        coturn = start_coturn(tmp_path_factory.mktemp("nat-coturn"), secret=secrets.token_hex(24),
                              address=INTERNET_IP, prefix=nat.exec(nat.internet),
                              answers=lambda port: in_netns(nat.internet, lambda: stun_answers(port, INTERNET_IP)))
        try:
            yield Lab(nat, coturn)
        finally:
            coturn.stop()
    finally:
        nat.remove()


@pytest.fixture(scope="module")
def relaying_server(lab, demo_model_dir, tmp_path_factory) -> Iterator[subprocess.Popen]:
    """The server with coturn as its TURN server (the secret from the environment, as a deployment passes it)."""
    process = lab.serve(str(demo_model_dir), str(tmp_path_factory.mktemp("nat-cache")), "--ice-server",
                        f"turn:{INTERNET_IP}:{lab.coturn.port}", env={"SANA_STREAM_TURN_SECRET": lab.coturn.secret})
    yield process
    output = stop(process)
    assert lab.coturn.secret not in output


async def get(path: str) -> dict:
    async with httpx.AsyncClient(base_url=BASE, timeout=10) as http:
        r = await http.get(path, headers=AUTH)
    assert r.status_code == 200, r.text
    return r.json()


async def restyled_by_server(http: httpx.AsyncClient, stream: str, least: int, timeout: float = 60) -> float:
    """The frames the server restyled for ``stream`` (its /metrics), once at least ``least`` or after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        metrics = (await http.get("/metrics", headers=AUTH)).text
        count = sample(metrics, "sana_stream_frames_generated_total", stream=stream, kind="whip") or 0.0
        if count >= least or asyncio.get_running_loop().time() > deadline:
            return count
        await asyncio.sleep(0.2)


def viewers_of(routes: dict, stream: str) -> list[dict]:
    """The routes of ``stream``'s viewers (an earlier case's viewer may still be closing)."""
    return [route for route in routes["viewers"].values() if route["stream"] == stream]


def generated(client) -> int:
    return sum(1 for f in client.frames if client.source(f)[1] == "generated")


def test_without_ice_servers_no_media_crosses_the_nats(lab, demo_model_dir, tmp_path):
    """The offer and answer go through the forwarded HTTP port, but each side offers only its private address and
    both NATs drop what nobody inside asked for: no frame in NO_MEDIA_WAIT_S, the server's peer never connects."""
    process = lab.serve(str(demo_model_dir), str(tmp_path), "--idle-timeout", str(2 * NO_MEDIA_WAIT_S))

    async def main():
        client = await connect(BASE, (SIZE, SIZE), headers=AUTH)
        offer = client.pc.localDescription.sdp
        try:
            with pytest.raises(TimeoutError):
                await client.wait_frames(1, timeout=NO_MEDIA_WAIT_S)
            routes = await get("/debug/connections")
        finally:
            await client.close()
        return offer, len(client.frames), routes["peers"][client.stream]

    try:
        offer, frames, route = lab.client(main)
    finally:
        stop(process)
    print(f"NAT case no ICE servers: {frames} frames in {NO_MEDIA_WAIT_S:g} s, server's route {route}")
    assert " typ host" in offer and " typ relay" not in offer and " typ srflx" not in offer
    assert frames == 0
    assert route["state"] != "connected" and route["relayed"] is None, route


def test_an_aiortc_client_streams_through_the_turn_relay(lab, relaying_server):
    async def main():
        client = await connect(BASE, (SIZE, SIZE), headers=AUTH)
        try:
            await eventually(lambda: generated(client) >= FRAMES, 60, f"{FRAMES} restyled frames through the NATs")
            routes = await get("/debug/connections")
        finally:
            await client.close()
        return client, routes["peers"][client.stream]

    client, route = lab.client(main)
    print(f"NAT case aiortc client: {generated(client)} restyled frames received, route {route}")
    assert generated(client) >= FRAMES and all(f.image.shape == (SIZE, SIZE, 3) for f in client.frames)
    assert route["state"] == "connected" and route["relayed"] is True, route


def test_an_obs_like_whip_sender_streams_with_turn_from_the_link_headers(lab, relaying_server):
    """As OBS: a send-only H.264/VP8 offer without candidates, the TURN server read from the Link headers (here
    asked for with OPTIONS before the offer, since aiortc gathers when the offer is made); the 201 lists the same."""

    async def main():
        async with httpx.AsyncClient(base_url=BASE, timeout=30) as http:
            options = await http.options("/whip?stream=obs", headers=AUTH)
            servers = [{"urls": [url], "username": user, "credential": secret}
                       for url, user, secret in obs_ice_servers(options)]
            pc = RTCPeerConnection(rtc_configuration(servers))
            pc.addTransceiver(SyntheticCamera((SIZE, SIZE)), direction="sendonly")
            await pc.setLocalDescription(await pc.createOffer())
            sdp = re.sub(r"a=candidate:[^\r\n]*\r\n|a=end-of-candidates\r\n", "", pc.localDescription.sdp)
            created = await http.post("/whip?stream=obs", content=sdp,
                                      headers={**AUTH, "Content-Type": "application/sdp"})
            assert created.status_code == 201, created.text
            await pc.setRemoteDescription(RTCSessionDescription(created.text, "answer"))
            try:
                count = await restyled_by_server(http, "obs", FRAMES)
                routes = await get("/debug/connections")
                deleted = await http.delete(created.headers["location"], headers=AUTH)
            finally:
                await pc.close()
        return servers, links(options), links(created), count, routes["peers"].get("obs"), deleted.status_code

    servers, option_links, created_links, count, route, deleted = lab.client(main)
    print(f"NAT case OBS-like WHIP sender: {count:g} frames restyled by the server, route {route}")
    assert [s["urls"] for s in servers] == [[f"turn:{INTERNET_IP}:{lab.coturn.port}"]]
    assert [link.split(">")[0] for link in created_links] == [link.split(">")[0] for link in option_links]
    assert count >= FRAMES
    assert route["state"] == "connected" and route["relayed"] is True, route
    assert deleted == 200


def test_a_whep_player_plays_through_the_nats(lab, relaying_server):
    """A candidate-less WHEP offer from behind the client's NAT, with the TURN server from OPTIONS' Link headers."""

    async def main():
        camera = await connect(BASE, (SIZE, SIZE), headers=AUTH)
        try:
            await eventually(lambda: generated(camera) >= 2, 60, "the camera's stream is live")
            async with httpx.AsyncClient(base_url=BASE, timeout=30) as http:
                options = await http.options(f"/whep?stream={camera.stream}", headers=AUTH)
                servers = [{"urls": [url], "username": user, "credential": secret}
                           for url, user, secret in obs_ice_servers(options)]
                viewer, sdp = await whep_offer(rtc_configuration(servers))
                created = await http.post(f"/whep?stream={camera.stream}", content=sdp,
                                          headers={**AUTH, "Content-Type": "application/sdp"})
                assert created.status_code == 201, created.text
                await viewer.pc.setRemoteDescription(RTCSessionDescription(created.text, "answer"))
                try:
                    frames = await viewer.wait_frames(FRAMES, timeout=60)
                    routes = await get("/debug/connections")
                    deleted = await http.delete(created.headers["location"], headers=AUTH)
                finally:
                    await viewer.pc.close()
        finally:
            await camera.close()
        return frames, viewers_of(routes, camera.stream), deleted.status_code

    frames, (route,), deleted = lab.client(main)
    print(f"NAT case WHEP player: {len(frames)} frames played, route {route}")
    assert len(frames) >= FRAMES and all(f.shape == (SIZE, SIZE, 3) for f in frames)
    assert route["state"] == "connected" and route["relayed"] is True, route
    assert deleted == 200


# the video frames the page decoded, from the browser's own getStats()
FRAMES_DECODED = """async (name) => {
  let decoded = 0;
  (await window[name].pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") decoded = s.framesDecoded;
  });
  return decoded;
}"""


def test_chromium_behind_the_nat_streams_from_the_webcam_page_and_plays_the_view_page(lab, relaying_server,
                                                                                     tmp_path):
    """Chromium runs in the client's home (Playwright's driver started from a thread inside it, so the browser is
    there too). The page is plain http on the server's public address: Chromium is told to treat that origin as
    secure, as it treats localhost, so the camera opens."""
    from tests.test_browser import CHROMIUM, unavailable, wait_advancing, write_y4m
    from tests.test_turn_browser import SELECTED_PAIR

    if not CHROMIUM.exists():
        unavailable(f"no Chromium at {CHROMIUM}")
    camera = write_y4m(tmp_path / "camera.y4m")
    args = ["--headless=new", "--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={camera}", f"--unsafely-treat-insecure-origin-as-secure={BASE}",
            "--disable-features=WebRtcHideLocalIpsWithMdns", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", "--disable-gpu"]

    def browse() -> dict[str, Any]:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args,
                                         ignore_default_args=["--headless"])
            try:
                # Playwright's wait_for_function evaluates a string, which the pages' CSP forbids
                # (tests/test_browser.py runs the pages with the policy enforced)
                context = chromium.new_context(bypass_csp=True)
                context.add_init_script(f"localStorage.setItem('sana-stream.token', {TOKEN!r})")
                page = context.new_page()
                page.set_default_timeout(60_000)
                page.goto(f"{BASE}/")
                page.wait_for_function("document.body.dataset.state === 'streaming'")
                wait_advancing(page, "output", frames=FRAMES)
                stream = page.evaluate("window.sanaStream.streamId")
                viewer = context.new_page()
                viewer.set_default_timeout(60_000)
                viewer.goto(f"{BASE}/view?stream={stream}")
                viewer.wait_for_function("document.body.dataset.state === 'playing'")
                wait_advancing(viewer, "output", frames=FRAMES)
                routes = httpx.get(f"{BASE}/debug/connections", headers=AUTH, timeout=10).json()
                return {"stream": stream, "pair": page.evaluate(SELECTED_PAIR, "sanaStream"),
                        "decoded": page.evaluate(FRAMES_DECODED, "sanaStream"),
                        "view_pair": viewer.evaluate(SELECTED_PAIR, "sanaView"),
                        "view_decoded": viewer.evaluate(FRAMES_DECODED, "sanaView"), "routes": routes}
            finally:
                chromium.close()

    seen = in_netns(lab.nat.client, browse)
    route = seen["routes"]["peers"][seen["stream"]]
    (view_route,) = viewers_of(seen["routes"], seen["stream"])
    print(f"NAT case Chromium: webcam page decoded {seen['decoded']} restyled frames (pair {seen['pair']}), "
          f"view page (WHEP) {seen['view_decoded']} (pair {seen['view_pair']})")
    assert seen["decoded"] >= FRAMES and seen["view_decoded"] >= FRAMES, seen
    assert "relay" in (seen["pair"]["local"], seen["pair"]["remote"]), seen["pair"]
    assert route["state"] == "connected" and route["relayed"] is True, route
    assert view_route["state"] == "connected" and view_route["relayed"] is True, view_route


def test_a_gstreamer_whep_player_plays_through_the_nats(lab, relaying_server):
    """GStreamer's webrtcbin (libnice) as the WHEP player behind the client's NAT: its TURN server from OPTIONS'
    Link headers, its offer without candidates, VP8 decoded and counted."""
    from tests.test_whep_gstreamer import start_player
    from tests.test_whip_gstreamer import require_gstreamer

    require_gstreamer()

    async def main():
        camera = await connect(BASE, (SIZE, SIZE), headers=AUTH)
        try:
            await eventually(lambda: generated(camera) >= 2, 60, "the camera's stream is live")
            player = await start_player(f"{BASE}/whep?stream={camera.stream}", "--token", TOKEN, "--any-address",
                                        "--ice-from-options")
            try:
                await eventually(lambda: player.frames() >= FRAMES, 60, f"{FRAMES} frames at the GStreamer player "
                                 f"({player.lines[-3:]})")
                routes = await get("/debug/connections")
            finally:
                await player.stop()
        finally:
            await camera.close()
        return player, viewers_of(routes, camera.stream)

    player, (route,) = lab.client(main)
    print(f"NAT case GStreamer WHEP player: {player.frames()} frames decoded, route {route}")
    answered = next(e for e in player.events() if e["event"] == "answered")
    assert answered["offer_candidates"] == 0 and answered["links"] == 1, answered
    assert player.frames() >= FRAMES
    assert route["state"] == "connected" and route["relayed"] is True, route
    assert {"event": "deleted", "status": 200} in player.events(), player.lines
