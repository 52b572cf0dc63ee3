"""Receive-only viewers (POST /view/offer) with real aiortc peers over loopback, stream ids a client may ask for,
GET /config and the pages' routes."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field

import httpx
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from tests.support import block_diff, eventually, running
from tests.support.webrtc import SyntheticCamera, connect
from tests.test_server_api import TOKEN, whip_offer
from tests.test_server_stream import SIZE, local_engine, make_app  # noqa: F401 - fixture


@dataclass
class Viewer:
    pc: RTCPeerConnection
    id: str = ""
    frames: list[tuple[float, np.ndarray]] = field(default_factory=list)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    async def read(self, track) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                self.ended.set()
                return
            self.frames.append((time.monotonic(), frame.to_ndarray(format="rgb24")))

    async def wait_frames(self, count: int, timeout: float = 20.0) -> list[np.ndarray]:
        start = len(self.frames)
        await eventually(lambda: len(self.frames) >= start + count, timeout, f"{count} viewer frames")
        return [image for _, image in self.frames[start:]]


async def view_offer(direction: str = "recvonly") -> RTCPeerConnection:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    if direction == "recvonly":
        pc.addTransceiver("video", direction="recvonly")
    else:
        pc.addTransceiver(SyntheticCamera((SIZE, SIZE)), direction=direction)
    await pc.setLocalDescription(await pc.createOffer())
    return pc


async def view(base: str, stream: str, headers: dict[str, str] | None = None) -> Viewer:
    """POST /view/offer with a receive-only offer and read the video it answers with."""
    viewer = Viewer(await view_offer())

    @viewer.pc.on("track")
    def on_track(track) -> None:
        asyncio.ensure_future(viewer.read(track))

    async with httpx.AsyncClient(base_url=base) as http:
        r = await http.post("/view/offer", json={"sdp": viewer.pc.localDescription.sdp, "type": "offer",
                                                 "stream": stream}, headers=headers or {})
    if r.status_code != 200:
        await viewer.pc.close()
        raise httpx.HTTPStatusError(f"{r.status_code} {r.text}", request=r.request, response=r)
    body = r.json()
    viewer.id = body["viewer"]
    assert "a=sendonly" in body["sdp"]
    await viewer.pc.setRemoteDescription(RTCSessionDescription(body["sdp"], body["type"]))
    return viewer


def test_viewers_each_get_the_streams_frames_and_go_with_it(local_engine):
    async def main():
        app = make_app(local_engine)
        async with running(app) as base, httpx.AsyncClient(base_url=base) as http:
            client = await connect(base, (SIZE, SIZE))
            await client.wait_frames(3)
            viewers = [await view(base, client.stream) for _ in range(2)]
            for viewer in viewers:
                await viewer.wait_frames(3)
            assert (await http.get("/health")).json()["viewers"] == 2
            assert "sana_stream_viewers 2" in (await http.get("/metrics")).text
            # over the same second every subscriber gets (nearly) every new frame of the stream
            start, sent = time.monotonic(), len(client.frames)
            await asyncio.sleep(1.5)
            counts = [sum(1 for t, _ in v.frames if t >= start) for v in viewers]
            camera_count = len(client.frames) - sent
            assert camera_count >= 5 and all(n >= 0.6 * camera_count for n in counts), (camera_count, counts)
            # and what they show is the stream's output, not its camera
            shown, own = viewers[0].frames[-1][1], client.frames[-1].image
            assert shown.shape == (SIZE, SIZE, 3)
            camera = client.camera.pattern(0)
            near, far = block_diff(shown, own), block_diff(shown, camera)
            assert near < 0.5 * far, (near, far)

            await client.close()  # the camera goes: its stream closes, and its viewers with it
            await eventually(lambda: not app.state.viewers().viewers, 15, "viewers closed with their stream")
            await asyncio.wait_for(asyncio.gather(*(v.ended.wait() for v in viewers)), 10)
            assert (await http.get("/health")).json()["viewers"] == 0
            for viewer in viewers:
                await viewer.pc.close()

    asyncio.run(main())


def test_viewer_errors_and_cap(local_engine):
    async def main():
        app = make_app(local_engine, max_peers=1, max_viewers=2)
        async with running(app) as base, httpx.AsyncClient(base_url=base) as http:
            pc = await view_offer()
            offer = {"sdp": pc.localDescription.sdp, "type": "offer"}
            r = await http.post("/view/offer", json={**offer, "stream": "nope"})
            assert r.status_code == 404 and r.json()["error"] == "unknown_stream"
            r = await http.post("/view/offer", json={**offer, "stream": "default"})  # the engine's own, unfed
            assert r.status_code == 404

            client = await connect(base, (SIZE, SIZE))  # max_peers=1: the only camera peer
            sendonly = await view_offer("sendonly")
            no_video = {"sdp": sendonly.localDescription.sdp, "type": "offer", "stream": client.stream}
            for body, status in [({**offer, "stream": client.stream, "type": "answer"}, 400), (no_video, 400),
                                 ({"sdp": "v=0\r\ngarbage", "type": "offer", "stream": client.stream}, 400),
                                 ({**offer, "stream": "../etc"}, 422), ({**offer}, 422)]:
                r = await http.post("/view/offer", json=body)
                assert r.status_code == status, (body.get("stream"), r.status_code, r.text)
                assert r.json()["error"]
            await sendonly.close()

            # viewers do not count against max_peers, and have a cap of their own
            viewers = [await view(base, client.stream) for _ in range(2)]
            with pytest.raises(httpx.HTTPStatusError) as info:
                await view(base, client.stream)
            assert info.value.response.status_code == 503 and info.value.response.json()["error"] == "server_full"
            await viewers[0].wait_frames(2)
            await viewers[0].pc.close()  # a viewer that leaves frees its place
            await eventually(lambda: len(app.state.viewers().viewers) == 1, 15, "departed viewer freed")
            viewers.append(await view(base, client.stream))
            await viewers[-1].wait_frames(2)
            for v in viewers:
                await v.pc.close()
            await client.close()
            await pc.close()

    asyncio.run(main())


def test_viewers_need_the_token_when_the_server_has_one(local_engine):
    async def main():
        async with running(make_app(local_engine, token=TOKEN)) as base, httpx.AsyncClient(base_url=base) as http:
            good = {"Authorization": f"Bearer {TOKEN}"}
            client = await connect(base, (SIZE, SIZE), headers=good)
            pc = await view_offer()
            body = {"sdp": pc.localDescription.sdp, "type": "offer", "stream": client.stream}
            for headers in ({}, {"Authorization": "Bearer wrong-token"}):
                r = await http.post("/view/offer", json=body, headers=headers)
                assert r.status_code == 401 and r.json()["error"] == "unauthorized"
            viewer = await view(base, client.stream, headers=good)
            await viewer.wait_frames(2)
            config = (await http.get("/config")).json()  # open: the page needs it before it has a token
            assert config["token_required"] is True
            await viewer.pc.close()
            await client.close()
            await pc.close()

    asyncio.run(main())


def test_a_client_may_keep_its_stream_id_across_reconnects(local_engine):
    async def main():
        app = make_app(local_engine)
        async with running(app) as base, httpx.AsyncClient(base_url=base) as http:
            first = await connect(base, (SIZE, SIZE), stream="my-camera")
            assert first.stream == "my-camera"
            await first.wait_frames(2)
            viewer = await view(base, "my-camera")
            await viewer.wait_frames(2)
            r = await http.post("/prompt", json={"prompt": "pencil sketch", "stream": "my-camera"})
            assert r.status_code == 200

            # the page reloads: the new connection takes the id over, the old peer and its viewers go
            second = await connect(base, (SIZE, SIZE), stream="my-camera")
            assert second.stream == "my-camera" and list(app.state.peers().peers) == ["my-camera"]
            await asyncio.wait_for(viewer.ended.wait(), 10)
            await second.wait_frames(3)
            prompt = (await http.get("/prompt", params={"stream": "my-camera"})).json()
            assert prompt["streams"]["my-camera"]["prompt"] == "a watercolor painting"  # a new stream: defaults
            again = await view(base, "my-camera")  # a viewer page reconnects to the same URL
            await again.wait_frames(2)

            for body, status in [({"stream": "default"}, 400), ({"stream": "a b"}, 422), ({"stream": "x" * 65}, 422)]:
                r = await http.post("/offer", json={"sdp": second.pc.localDescription.sdp, "type": "offer", **body})
                assert r.status_code == status, (body, r.text)

            pc, sdp = await whip_offer()  # OBS: the WHIP URL may name the stream, so the /view URL is fixed too
            r = await http.post("/whip", params={"stream": "obs"}, content=sdp,
                                headers={"Content-Type": "application/sdp"})
            assert r.status_code == 201 and r.headers["location"] == "/whip/obs"
            await pc.setRemoteDescription(RTCSessionDescription(r.text, "answer"))
            obs_viewer = await view(base, "obs")
            await obs_viewer.wait_frames(2)
            assert (await http.delete("/whip/obs")).status_code == 200
            await asyncio.wait_for(obs_viewer.ended.wait(), 10)
            for closable in (obs_viewer.pc, again.pc, viewer.pc, pc):
                await closable.close()
            await second.close()
            await first.close()
            await eventually(lambda: not app.state.peers().peers and not app.state.viewers().viewers, 15)
            assert app.state.runtime["pipeline"].engine.stream_ids() == ["default"]

    asyncio.run(main())


def test_config_and_pages(local_engine):
    async def main():
        async with running(make_app(local_engine, max_peers=3)) as base, httpx.AsyncClient(base_url=base) as http:
            config = (await http.get("/config")).json()
            index = await http.get("/")
            page = await http.get("/view", params={"stream": "abc"})
            script = await http.get("/js/view.js")
            schema = (await http.get("/openapi.json")).json()
        return config, index, page, script, schema

    config, index, page, script, schema = asyncio.run(main())
    assert config["width"] == SIZE and config["height"] == SIZE
    assert config["token_required"] is False and config["max_peers"] == 3 and config["max_viewers"] == 12
    assert config["demo_model"] is True and config["defaults"]["prompt"] == "a watercolor painting"
    assert index.status_code == 200 and "/js/filter.js" in index.text
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/js/view.js" in page.text
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert {"/view/offer", "/config"} <= set(schema["paths"])
    assert re.search(r"<title>[^<]*output", page.text)
