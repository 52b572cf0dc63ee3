"""A WebRTC client of a sana-stream server: sends a video track with POST /offer, receives the restyled video
and the server's per-frame announcements (which input frame each output shows). Used by the camera bridge,
the server benchmark and the tests."""

from __future__ import annotations

import asyncio
import functools
import json
import time
from dataclasses import dataclass, field
from typing import Any

import av
import httpx
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from rtc.frame_assembly import assemble_on_marker
from rtc.ice import has_relay_candidate
from rtc.ice_config import rtc_configuration
from rtc.liveness import SILENCE_S, close_when_silent

OFFER_TIMEOUT_S = 20.0  # an answer can take seconds: the server gathers its candidates first (STUN/TURN: up to 5 s)
ANNOUNCE_CHANNEL = "sana-stream"  # a data channel of this label receives {"pts", "source_pts", "kind"} per frame


class RelayUnavailable(Exception):
    """Relayed media was asked for (``relay=True``) and no TURN relay could be had; the message says why."""


class OfferRejected(Exception):
    """The server answered the offer with an error; ``status`` and ``body`` say why."""

    def __init__(self, status: int, body: Any) -> None:
        self.status, self.body = status, body
        super().__init__(f"the server refused the offer: HTTP {status}: {body}")


@dataclass
class Received:
    frame: av.VideoFrame  # as decoded
    at: float  # time.monotonic() at receipt, before any conversion
    pts: int  # the server starts its output clock at 0, so this is the server's own pts

    @functools.cached_property
    def image(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB, converted on first use: a reader that only counts or times frames (the
        benchmark) never pays the ~3 ms conversion per frame."""
        return self.frame.to_ndarray(format="rgb24")


@dataclass
class StreamClient:
    pc: RTCPeerConnection
    stream: str = ""
    frames: list[Received] = field(default_factory=list)  # what ``keep`` frames were kept
    announcements: dict[int, dict[str, Any]] = field(default_factory=dict)  # server pts -> note
    keep: int = 10_000  # received frames kept in ``frames`` (oldest dropped first)
    received: int = 0
    new_frame: asyncio.Event = field(default_factory=asyncio.Event)
    _reader: asyncio.Task[None] | None = None
    _liveness: asyncio.Task[None] | None = None  # closes pc once the server went silent (rtc.liveness)

    async def read(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            assert isinstance(frame, av.VideoFrame)
            self.frames.append(Received(frame, time.monotonic(), frame.pts))
            del self.frames[:-self.keep]
            self.received += 1
            self.new_frame.set()

    def note(self, frame: Received) -> dict[str, Any]:
        """The server's announcement for ``frame`` ({} if none arrived); pts may differ by a tick after the
        time-base conversions on both sides."""
        exact = self.announcements.get(frame.pts)
        if exact is not None:
            return exact
        return next((n for pts, n in self.announcements.items() if abs(pts - frame.pts) <= 2), {})

    async def wait_frames(self, count: int, timeout: float = 20.0) -> list[Received]:
        """Waits for ``count`` more frames and returns them."""
        target = self.received + count
        deadline = time.monotonic() + timeout
        while self.received < target:
            self.new_frame.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"received {count - (target - self.received)} of {count} frames")
            try:
                await asyncio.wait_for(self.new_frame.wait(), remaining)
            except TimeoutError:
                continue
        return self.frames[len(self.frames) - count:]

    async def close(self) -> None:
        for task in (self._reader, self._liveness):
            if task:
                task.cancel()
        await self.pc.close()


async def fetch_ice_servers(session: httpx.AsyncClient, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The server's STUN/TURN servers with fresh TURN credentials (GET /ice-servers); [] from a server without
    that endpoint. Raises OfferRejected when the server refuses (a wrong token: 401, as the offer would)."""
    r = await session.get("/ice-servers", headers=headers or {})
    if r.status_code == 404:
        return []
    if r.status_code != 200:
        raise OfferRejected(r.status_code, _body(r))
    return list(r.json()["ice_servers"])


async def connect(base: str, track: MediaStreamTrack, headers: dict[str, str] | None = None,
                  http: httpx.AsyncClient | None = None, stream: str | None = None,
                  marker_assembly: bool = True, relay: bool = False,
                  silence_timeout: float | None = SILENCE_S) -> StreamClient:
    """POST /offer with ``track`` and an announcement channel; starts reading the returned video. ``stream`` asks
    for that stream id (a live peer holding it is replaced), so ``/view?stream=ID`` links survive reconnects.
    Received frames complete on their RTP marker bit (``rtc.frame_assembly``), so the server is asked not to
    repeat slow outputs; ``marker_assembly=False`` keeps aiortc's assembly and the repeats, as other aiortc
    receivers have them (tests of the server's repeats use that). The connection uses the server's STUN/TURN
    servers (GET /ice-servers); ``relay`` sends all media through its TURN server (iceTransportPolicy "relay"),
    to check a TURN setup, and raises RelayUnavailable when no relay can be had. The connection is closed once the
    server has been silent for ``silence_timeout`` seconds (None: never; ``rtc.liveness``), so a dead server
    is noticed in seconds, not after ICE's ~30 s."""
    own = httpx.AsyncClient(base_url=base, timeout=OFFER_TIMEOUT_S) if http is None else None
    async with own or _borrowed(http) as session:  # type: ignore[arg-type]
        servers = await fetch_ice_servers(session, headers)
        turn = [u for s in servers for u in ([s["urls"]] if isinstance(s["urls"], str) else s["urls"])
                if u.startswith("turn")]
        if relay and not turn:
            raise RelayUnavailable(f"relay forced, but the server at {base} lists no TURN server (start it with "
                                   "--ice-server turn:HOST:3478 and --turn-secret)")
        pc = RTCPeerConnection(rtc_configuration(servers, relay=relay))
        client = StreamClient(pc)
        _wire(client, track, marker_assembly)
        await pc.setLocalDescription(await pc.createOffer())
        if relay and not has_relay_candidate(pc.localDescription.sdp):
            await pc.close()
            raise RelayUnavailable(f"relay forced, but the TURN server {turn[0]} gave no relay address: it is "
                                   "unreachable from here or refused the credentials")
        body = {"sdp": pc.localDescription.sdp, "type": "offer", "repeat": not marker_assembly,
                **({"stream": stream} if stream else {})}
        try:
            r = await session.post("/offer", json=body, headers=headers or {})
        except httpx.HTTPError:
            await pc.close()  # its ICE sockets would outlive it
            raise
    if r.status_code != 200:
        await pc.close()
        raise OfferRejected(r.status_code, _body(r))
    answer = r.json()
    client.stream = answer["stream"]
    await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
    if silence_timeout is not None:
        client._liveness = asyncio.ensure_future(close_when_silent(pc, silence_timeout))
    return client


def _wire(client: StreamClient, track: MediaStreamTrack, marker_assembly: bool) -> None:
    pc = client.pc
    channel = pc.createDataChannel(ANNOUNCE_CHANNEL)

    @channel.on("message")
    def on_message(message: str) -> None:
        note = json.loads(message)
        client.announcements[note["pts"]] = note
        if len(client.announcements) > 2 * client.keep:
            for pts in sorted(client.announcements)[:client.keep]:
                del client.announcements[pts]

    pc.addTrack(track)
    if marker_assembly:
        assemble_on_marker(pc)

    @pc.on("track")
    def on_track(remote: MediaStreamTrack) -> None:
        client._reader = asyncio.ensure_future(client.read(remote))


def _body(r: httpx.Response) -> Any:
    try:
        return r.json()
    except ValueError:
        return r.text


class _borrowed:
    """An async context manager that hands out a caller's client without closing it."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def __aenter__(self) -> httpx.AsyncClient:
        return self.http

    async def __aexit__(self, *exc: object) -> None:
        return None
