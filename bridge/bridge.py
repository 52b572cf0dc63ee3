"""The bridge loop: a local source -> WebRTC -> a sana-stream server -> restyled frames -> a sink.

    source --reader thread (paced to fps, newest wins)--> SourceTrack --WebRTC--> server
    server --WebRTC--> StreamClient --newest frame--> key mask (optional) --> SinkWorker thread --> sink

Nothing blocks the event loop: the source is read on its own thread, the sink written on another. The source
and the sink stay open across reconnects. The first connection must succeed (an unreachable server, a refused
token or a full server is reported and ends the bridge); after that a lost connection (server restart, network
drop, no frames for ``stall_timeout`` seconds) is retried for as long as the bridge runs, with exponential backoff
(0.5 s doubling to 8 s, each wait shortened by up to a quarter at random so that a restarted server is not hit by
every client at once), asking for the same stream id and re-applying the prompt settings, so viewer links
(/view?stream=ID) and styles survive. Only a refused token ends it then.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from bridge.background import ColorKey
from bridge.errors import BridgeError, SinkClosed
from bridge.pump import FramePump
from bridge.server_api import PromptRejected, ServerApi, describe_rejection, reason
from bridge.sinks import FrameSink, SinkWorker
from bridge.sources import FrameSource
from bridge.track import SourceTrack
from rtc.client import OfferRejected, Received, RelayUnavailable, StreamClient
from stream.live_settings import LIVE_SETTING_NAMES as PROMPT_FIELDS

logger = logging.getLogger(__name__)
JITTER = 0.25  # each backoff wait is shortened by up to this fraction, at random


@dataclass
class BridgeOptions:
    server: str  # base URL, e.g. http://127.0.0.1:8080
    token: str | None = None
    fps: float | None = None  # frames sent per second; None: the source's own rate, else 30
    size: tuple[int, int] | None = None  # (width, height) sent; None: the server's output size (GET /config)
    stream: str | None = None  # ask for this stream id; None: the server picks one (kept on reconnects)
    prompt: dict[str, Any] = field(default_factory=dict)  # initial /prompt changes for this stream
    key: ColorKey | None = None  # --keep-background
    stall_timeout: float = 10.0  # seconds without an output frame before reconnecting
    first_frame_timeout: float = 30.0  # seconds for the first frame of a connection (ICE, DTLS, model warm-up)
    backoff_initial: float = 0.5
    backoff_max: float = 8.0
    max_frames: int | None = None  # stop after this many output frames (scripts, tests)
    http_timeout: float = 10.0
    relay: bool = False  # send all media through the server's TURN server (--relay), to check a TURN setup

    def __post_init__(self) -> None:
        self.server = self.server.rstrip("/")
        if not self.server.startswith(("http://", "https://")):
            raise ValueError(f"--server must be an http:// or https:// URL, got {self.server!r}")
        if self.fps is not None and not 0 < self.fps <= 240:
            raise ValueError(f"--fps must lie in (0, 240], got {self.fps}")
        if self.size is not None and (self.size[0] < 1 or self.size[1] < 1):
            raise ValueError(f"--width and --height must be positive, got {self.size}")
        unknown = set(self.prompt) - set(PROMPT_FIELDS)
        if unknown:
            raise ValueError(f"unknown prompt settings: {sorted(unknown)}")

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


class _Ended(enum.Enum):
    STOPPED = "stopped"
    SOURCE_ENDED = "the source ended"
    MAX_FRAMES = "the requested number of frames arrived"
    LOST = "the connection was closed"
    STALLED = "no frames arrived"


class Bridge:
    """Streams ``source`` through the server at ``options.server`` into ``sink``. ``run`` returns when the
    source ends, ``max_frames`` arrived or ``stop`` was called; it raises ``BridgeError`` for what cannot be
    recovered. ``set_prompt`` changes this bridge's own stream while it runs."""

    def __init__(self, source: FrameSource, sink: FrameSink, options: BridgeOptions) -> None:
        self.source, self.sink, self.options = source, sink, options
        self.stream_id: str | None = options.stream
        self.connected = asyncio.Event()
        self.connections = 0  # successful offers so far
        self.frames_out = 0  # frames handed to the sink
        self.size: tuple[int, int] | None = None
        self.fps: float | None = None
        self._prompt: dict[str, Any] = dict(options.prompt)
        self._stop = asyncio.Event()
        self._api: ServerApi | None = None
        self._client: StreamClient | None = None

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        pump, worker = FramePump(self.source), SinkWorker(self.sink)
        self._api = api = ServerApi(self.options.server, self.options.headers, self.options.http_timeout)
        try:
            await pump.open()
            config = await api.config()
            output = (int(config["width"]), int(config["height"]))  # what comes back
            self.size = self.options.size or output  # what is sent
            self.fps = self.options.fps or self.source.native_fps or 30.0
            if self.sink.inline:
                worker.start(output[0], output[1], self.fps)
            else:
                await asyncio.to_thread(worker.start, output[0], output[1], self.fps)
            pump.start(self.fps, self.size, self.options.key)
            logger.info("sending %s at %dx%d, %g fps to %s; writing to %s", self.source.describe(), *self.size,
                        self.fps, self.options.server, self.sink.describe())
            await self._stream(pump, worker)
        finally:
            await asyncio.to_thread(pump.close)
            if self.sink.inline:
                worker.close()
            else:
                await asyncio.to_thread(worker.close)
            if self._client is not None:
                await self._client.close()
            await api.aclose()
            self.connected.clear()

    async def _stream(self, pump: FramePump, worker: SinkWorker) -> None:
        delay = self.options.backoff_initial
        while not self._stop.is_set():
            track = SourceTrack(pump)
            try:
                client = await self._connect(track)
            except (httpx.TransportError, OfferRejected, RelayUnavailable) as exc:
                track.stop()
                message = (describe_rejection(exc, self.options.server) if isinstance(exc, OfferRejected)
                           else str(exc) if isinstance(exc, RelayUnavailable)
                           else f"cannot reach the server at {self.options.server}: {reason(exc)}")
                fatal = self.connections == 0 or (isinstance(exc, OfferRejected) and exc.status == 401)
                if fatal:
                    raise BridgeError(message) from None
                if await self._sleep(delay, f"{message}; retrying"):
                    return
                delay = min(2 * delay, self.options.backoff_max)
                continue
            self._client = client
            self.connections += 1
            self.connected.set()
            logger.info("connected as stream %s (viewer page: %s/view?stream=%s)", client.stream,
                        self.options.server, client.stream)
            try:
                await self._apply_prompt(fatal=self.connections == 1)
                ended, delivered = await self._forward(client, track, pump, worker)
            finally:
                self.connected.clear()
                self._client = None
                track.stop()
                await client.close()
            if ended in (_Ended.STOPPED, _Ended.MAX_FRAMES):
                return
            if ended is _Ended.SOURCE_ENDED:
                if pump.error is not None:
                    raise pump.error
                logger.info("%s ended", self.source.describe())
                return
            if delivered == 0 and self.connections == 1 and ended is _Ended.STALLED:
                raise BridgeError(f"connected to {self.options.server} but no video came back within "
                                  f"{self.options.first_frame_timeout:g} s: WebRTC media (UDP) may be blocked "
                                  "between this machine and the server")
            if delivered:
                delay = self.options.backoff_initial
            if await self._sleep(delay, f"{ended.value} (stream {client.stream}); reconnecting"):
                return
            delay = min(2 * delay, self.options.backoff_max)

    async def _connect(self, track: SourceTrack) -> StreamClient:
        assert self._api is not None
        # the same stream id on reconnects: /view?stream=ID links and the server's stream survive
        client = await self._api.connect(track, self.stream_id, relay=self.options.relay)
        client.keep = 4  # the bridge forwards the newest frame only; don't hoard decoded frames
        self.stream_id = client.stream
        return client

    async def _sleep(self, delay: float, why: str) -> bool:
        """Logs ``why`` and waits about ``delay`` seconds (JITTER) unless stopped first; True when stopped."""
        seconds = delay * (1 - JITTER * random.random())
        logger.warning("%s in %.1f s", why, seconds)
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
            return True
        except asyncio.TimeoutError:
            return False

    async def _forward(self, client: StreamClient, track: SourceTrack, pump: FramePump,
                       worker: SinkWorker) -> tuple[_Ended, int]:
        """Hands each newest received frame to the sink until the connection ends; returns why, and how many
        frames this connection delivered."""
        seen, delivered = 0, 0
        last = time.monotonic()
        source_ended_at: float | None = None
        while True:
            if self._stop.is_set():
                return _Ended.STOPPED, delivered
            if worker.error is not None:
                if isinstance(worker.error, SinkClosed):
                    logger.info("%s", worker.error)
                    return _Ended.STOPPED, delivered
                raise worker.error
            if client.received > seen:
                seen = client.received
                self._deliver(client, client.frames[-1], track, worker)
                delivered += 1
                last = time.monotonic()
                if self.options.max_frames is not None and self.frames_out >= self.options.max_frames:
                    return _Ended.MAX_FRAMES, delivered
                continue
            if pump.ended:  # the last frames sent are still on their way back: wait for them a little
                source_ended_at = source_ended_at or time.monotonic()
                if pump.error is not None or time.monotonic() - max(source_ended_at, last) > 1.0:
                    return _Ended.SOURCE_ENDED, delivered
            if client.pc.connectionState in ("failed", "closed"):
                return _Ended.LOST, delivered
            limit = self.options.stall_timeout if delivered else self.options.first_frame_timeout
            if time.monotonic() - last > limit:
                return _Ended.STALLED, delivered
            client.new_frame.clear()
            if client.received > seen:
                continue
            try:
                await asyncio.wait_for(client.new_frame.wait(), 0.2)
            except asyncio.TimeoutError:
                pass

    def _deliver(self, client: StreamClient, frame: Received, track: SourceTrack, worker: SinkWorker) -> None:
        image, alpha = frame.image, None
        key = self.options.key
        if key is not None:
            mask = track.masks.for_pts(client.note(frame).get("source_pts"))
            if mask is not None:
                image, alpha = key.apply(image, mask)
        worker.put(image, alpha)
        self.frames_out += 1

    async def set_prompt(self, **changes: Any) -> dict[str, Any] | None:
        """Changes this bridge's stream (prompt, negative_prompt, seed, strength, guidance_scale, cfg_scale,
        control_scales) and remembers the change for later reconnects. Returns the server's settings for the
        stream, or None when not connected (the change is applied on connecting). Raises ``PromptRejected`` for
        a value the server refuses."""
        unknown = set(changes) - set(PROMPT_FIELDS)
        if unknown:
            raise ValueError(f"unknown prompt settings: {sorted(unknown)}")
        if not self.connected.is_set() or self._api is None or self.stream_id is None:
            self._prompt.update(changes)
            return None
        try:
            state = await self._post_prompt(changes)
        except httpx.TransportError as exc:
            self._prompt.update(changes)
            logger.warning("could not send the prompt change (%s); it is applied on reconnecting", reason(exc))
            return None
        self._prompt.update(changes)
        return state

    async def _post_prompt(self, changes: dict[str, Any]) -> dict[str, Any]:
        assert self._api is not None and self.stream_id is not None
        return await self._api.post_prompt(self.stream_id, changes)

    async def _apply_prompt(self, fatal: bool) -> None:
        """Sends the remembered settings to a new connection's stream (a restarted server forgot them). Settings
        the server refuses end the bridge on its first connection (a bad --strength), later they are logged."""
        if not self._prompt:
            return
        try:
            await self._post_prompt(dict(self._prompt))
        except PromptRejected as exc:
            if fatal:
                raise BridgeError(f"the server refused the prompt settings {self._prompt}: {exc}") from None
            logger.error("the server refused the prompt settings %s: %s", self._prompt, exc)
        except httpx.TransportError as exc:
            logger.warning("could not send the prompt settings: %s", reason(exc))
