"""The bridge loop: a local source -> WebRTC -> a sana-stream server -> restyled frames -> a sink.

    source --reader thread (paced to fps, newest wins)--> SourceTrack --WebRTC--> server
    server --WebRTC--> StreamClient --newest frame--> key mask (optional) --> SinkWorker thread --> sink

Nothing blocks the event loop: the source is read on its own thread, the sink written on another. The source
and the sink stay open across reconnects. The first connection must succeed (an unreachable server, a refused
token or a full server is reported and ends the bridge); after that a lost connection (server restart, network
drop, no frames for ``stall_timeout`` seconds) is retried with exponential backoff, asking for the same stream
id and re-applying the prompt settings, so viewer links (/view?stream=ID) and styles survive.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
import httpx
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from bridge.background import ColorKey
from bridge.errors import BridgeError, SinkClosed, SourceError
from bridge.sinks import FrameSink, SinkWorker
from bridge.sources import FrameSource
from stream.frames import fit_frame
from server.client import OfferRejected, Received, RelayUnavailable, StreamClient, connect

logger = logging.getLogger(__name__)

VIDEO_CLOCK = 90_000
PROMPT_FIELDS = ("prompt", "negative_prompt", "seed", "strength", "guidance_scale", "cfg_scale", "control_scales")


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
    backoff_max: float = 10.0
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


@dataclass
class _Captured:
    seq: int
    image: np.ndarray
    mask: np.ndarray | None


class FramePump:
    """Reads the source on its own thread, one frame per tick of ``fps``, fitted to ``size``; the newest frame
    wins. ``open`` runs the source's ``open`` on that thread and raises what it raised."""

    def __init__(self, source: FrameSource) -> None:
        self.source = source
        self.latest: _Captured | None = None
        self.ended = False
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._opened = threading.Event()
        self._go = threading.Event()
        self._stop = threading.Event()
        self._fps = 30.0
        self._size = (512, 512)
        self._key: ColorKey | None = None
        self._thread: threading.Thread | None = None

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wakeup = self._loop.create_future()
        self._thread = threading.Thread(target=self._run, name="bridge-source", daemon=True)
        self._thread.start()
        await asyncio.to_thread(self._opened.wait)
        if self.error is not None:
            raise self.error

    def start(self, fps: float, size: tuple[int, int], key: ColorKey | None) -> None:
        self._fps, self._size, self._key = fps, size, key
        self._go.set()

    def _run(self) -> None:
        try:
            self.source.open()
        except BaseException as exc:  # noqa: BLE001 - raised by open() on the loop
            self.error = exc
            self._opened.set()
            return
        self._opened.set()
        try:
            self._go.wait()
            period = 1.0 / self._fps
            next_tick = time.monotonic()
            seq = 0
            while not self._stop.is_set():
                frame = self.source.read()
                if frame is None:
                    break
                width, height = self._size
                image = fit_frame(frame, width, height)
                mask = self._key.mask(image) if self._key is not None else None
                seq += 1
                self.latest = _Captured(seq, image, mask)
                self._notify()
                next_tick += period
                delay = next_tick - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
                else:
                    next_tick = time.monotonic()  # behind (a slow camera): don't try to catch up
        except BaseException as exc:  # noqa: BLE001 - read by the bridge
            self.error = exc if isinstance(exc, SourceError) else SourceError(f"{self.source.describe()}: {exc}")
        finally:
            self.ended = True
            self._notify()
            self.source.close()

    def _notify(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._wake)
            except RuntimeError:  # the loop closed in between
                pass

    def _wake(self) -> None:
        assert self._loop is not None
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)
        self._wakeup = self._loop.create_future()

    async def next_after(self, seq: int) -> _Captured:
        """The newest frame later than ``seq``; raises MediaStreamError when the source has ended."""
        while True:
            latest = self.latest
            if latest is not None and latest.seq > seq:
                return latest
            if self.ended:
                raise MediaStreamError
            assert self._wakeup is not None
            await asyncio.shield(self._wakeup)

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._go.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)


class SourceTrack(MediaStreamTrack):
    """The video track sent to the server: each new frame of the pump once, pts on a 90 kHz clock from 0 (the
    server announces each output's input pts on that clock). Remembers the key masks of recent frames by pts."""

    kind = "video"

    def __init__(self, pump: FramePump) -> None:
        super().__init__()
        self._pump = pump
        self._seq = 0
        self._start: float | None = None
        self._last_pts = -1
        self.masks: OrderedDict[int, np.ndarray] = OrderedDict()
        self.sent = 0

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        captured = await self._pump.next_after(self._seq)
        self._seq = captured.seq
        now = time.monotonic()
        if self._start is None:
            self._start = now
        pts = max(self._last_pts + 1, int((now - self._start) * VIDEO_CLOCK))
        self._last_pts = pts
        frame = av.VideoFrame.from_ndarray(captured.image, format="rgb24")
        frame.pts, frame.time_base = pts, Fraction(1, VIDEO_CLOCK)
        if captured.mask is not None:
            self.masks[pts] = captured.mask
            while len(self.masks) > 120:
                self.masks.popitem(last=False)
        self.sent += 1
        return frame

    def mask_for(self, source_pts: int | None) -> np.ndarray | None:
        """The key mask of the input frame with this pts (within a frame), else the newest one."""
        if not self.masks:
            return None
        if source_pts is not None:
            exact = self.masks.get(source_pts)
            if exact is not None:
                return exact
            near = min(self.masks, key=lambda pts: abs(pts - source_pts))
            if abs(near - source_pts) <= VIDEO_CLOCK // 10:
                return self.masks[near]
        return next(reversed(self.masks.values()))


class _Ended(enum.Enum):
    STOPPED = "stopped"
    SOURCE_ENDED = "the source ended"
    MAX_FRAMES = "the requested number of frames arrived"
    LOST = "the connection was closed"
    STALLED = "no frames arrived"


class _NoLeakHttp:
    """Lends ``server.client.connect`` our HTTP client. A transport error is kept in ``error`` and answered with
    a stand-in 503, so that ``connect`` closes the peer connection it made (it closes it on an error status, but
    not on an exception) instead of leaking its ICE sockets; the caller raises ``error`` again."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.error: httpx.TransportError | None = None

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self._send(self.http.post, url, **kwargs)

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self._send(self.http.get, url, **kwargs)

    async def _send(self, method: Any, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return await method(url, **kwargs)
        except httpx.TransportError as exc:
            self.error = exc
            return httpx.Response(503, json={"error": "unreachable", "detail": str(exc)})


def describe_rejection(exc: OfferRejected, server: str) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    detail = body.get("detail") or body.get("error") or exc.body
    if exc.status == 401:
        return f"the server at {server} refused the token (HTTP 401): pass the server's token with --token " \
               "or SANA_STREAM_TOKEN"
    if exc.status == 503:
        return f"the server at {server} is full (HTTP 503: {detail}); try again later or raise its --max-peers"
    return f"the server at {server} refused the connection: HTTP {exc.status}: {detail}"


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
        self._http: httpx.AsyncClient | None = None
        self._client: StreamClient | None = None

    def stop(self) -> None:
        self._stop.set()

    @property
    def prompt_settings(self) -> dict[str, Any]:
        return dict(self._prompt)

    async def run(self) -> None:
        pump, worker = FramePump(self.source), SinkWorker(self.sink)
        self._http = httpx.AsyncClient(base_url=self.options.server, timeout=self.options.http_timeout,
                                       headers=self.options.headers)
        try:
            await pump.open()
            config = await self._server_config()
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
            await self._http.aclose()
            self.connected.clear()

    async def _server_config(self) -> dict[str, Any]:
        assert self._http is not None
        try:
            r = await self._http.get("/config")
        except httpx.TransportError as exc:
            raise BridgeError(f"cannot reach the server at {self.options.server}: {_reason(exc)}") from None
        if r.status_code != 200:
            raise BridgeError(f"{self.options.server} does not look like a sana-stream server: GET /config "
                              f"answered HTTP {r.status_code}")
        try:
            return r.json()
        except ValueError:
            raise BridgeError(f"{self.options.server} does not look like a sana-stream server: GET /config "
                              "is not JSON") from None

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
                           else f"cannot reach the server at {self.options.server}: {_reason(exc)}")
                fatal = self.connections == 0 or (isinstance(exc, OfferRejected) and exc.status == 401)
                if fatal:
                    raise BridgeError(message) from None
                logger.warning("%s; retrying in %.1f s", message, delay)
                if await self._sleep(delay):
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
            logger.warning("%s (stream %s); reconnecting in %.1f s", ended.value, client.stream, delay)
            if await self._sleep(delay):
                return
            delay = min(2 * delay, self.options.backoff_max)

    async def _connect(self, track: SourceTrack) -> StreamClient:
        assert self._http is not None
        http = _NoLeakHttp(self._http)
        try:  # the same stream id on reconnects: /view?stream=ID links and the server's stream survive
            client = await connect(self.options.server, track, self.options.headers, http=http,  # type: ignore[arg-type]
                                   stream=self.stream_id, relay=self.options.relay)
        except OfferRejected:
            if http.error is not None:
                raise http.error from None
            raise
        except (KeyError, ValueError) as exc:  # an answer without our fields or with an SDP aiortc cannot use
            raise BridgeError(f"{self.options.server} gave an unusable answer to the offer: {_reason(exc)}") from None
        client.keep = 4  # the bridge forwards the newest frame only; don't hoard decoded frames
        self.stream_id = client.stream
        return client

    async def _sleep(self, seconds: float) -> bool:
        """Sleeps unless stopped first; True when stopped."""
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
            mask = track.mask_for(client.note(frame).get("source_pts"))
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
        if not self.connected.is_set() or self._http is None or self.stream_id is None:
            self._prompt.update(changes)
            return None
        try:
            state = await self._post_prompt(changes)
        except httpx.TransportError as exc:
            self._prompt.update(changes)
            logger.warning("could not send the prompt change (%s); it is applied on reconnecting", _reason(exc))
            return None
        self._prompt.update(changes)
        return state

    async def _post_prompt(self, changes: dict[str, Any]) -> dict[str, Any]:
        assert self._http is not None and self.stream_id is not None
        r = await self._http.post("/prompt", json={"stream": self.stream_id, **changes})
        if r.status_code != 200:
            try:
                body: Any = r.json()
            except ValueError:
                body = r.text
            raise PromptRejected(r.status_code, body)
        return r.json()["streams"][self.stream_id]

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
            logger.warning("could not send the prompt settings: %s", _reason(exc))


class PromptRejected(BridgeError):
    """POST /prompt answered with an error (a value out of range, a missing token)."""

    def __init__(self, status: int, body: Any) -> None:
        self.status, self.body = status, body
        detail = body.get("detail", body) if isinstance(body, dict) else body
        super().__init__(f"HTTP {status}: {detail}")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
