"""Receive-only viewers (``POST /whep``, and ``POST /view/offer`` with the same offer in JSON): one stream's restyled
video, for the /view page (an OBS Browser Source) and WHEP players.

A viewer sends nothing, so it has no input to time out on: it is closed when its stream closes, when its
connection fails or closes, or when it does not connect within ``connect_timeout`` seconds. Viewers have
their own cap and do not count against the camera peers' ``max_peers``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field

from aiortc import MediaStreamTrack, RTCPeerConnection

from rtc.ice import admit_relayed_clients
from rtc.ice_config import IceConfig
from server.errors import ApiError
from server.keyed_locks import KeyedLocks
from server.metrics import StreamMeter
from server.offers import Wants, check_offer, undone_on_failure
from server.tracks import StreamOutputTrack, drain
from server.turn_status import ServerIce
from stream.pipeline import FramePipeline

logger = logging.getLogger(__name__)


@dataclass
class Viewer:
    id: str
    stream: str
    pc: RTCPeerConnection
    output: StreamOutputTrack
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class ViewerManager:
    """Creates, tracks and closes viewers. A viewer is set up holding its stream id's lock (``locks``, shared with
    the PeerManager), so its stream cannot close half-way; every failure closes and forgets it. The viewers of a
    stream share one meter (``meters``): what the stream sends to its viewers, together."""

    def __init__(self, pipeline: FramePipeline, max_viewers: int, connect_timeout: float = 30.0,
                 ice: ServerIce | None = None, locks: KeyedLocks | None = None) -> None:
        self.pipeline = pipeline
        self.ice = ice or ServerIce(IceConfig())  # the STUN/TURN servers of the server's own connections
        self.max_viewers = max_viewers
        self.connect_timeout = connect_timeout
        self.locks = locks or KeyedLocks()
        self.viewers: dict[str, Viewer] = {}
        self.meters: dict[str, StreamMeter] = {}  # stream id -> its viewers' meter, while the stream lives
        self._closing: dict[str, asyncio.Task[bool]] = {}

    async def accept(self, sdp: str, kind: str, stream_id: str, repeat: bool = True) -> tuple[Viewer, str]:
        """Answers a receive-only offer for ``stream_id``: 400/422 for an offer we cannot use, 404 for an unknown
        stream, 503 when full. ``repeat``: whether slow outputs are sent twice (StreamOutputTrack)."""
        offer = check_offer(sdp, kind, Wants.RECEIVE)
        async with self.locks.hold(stream_id):
            if stream_id not in self.pipeline.stream_ids():
                raise ApiError(404, "unknown_stream", f"no stream {stream_id!r} is live (streams are created by "
                               "POST /offer or /whip)")
            if len(self.viewers) >= self.max_viewers:
                raise ApiError(503, "server_full", f"the server is serving its maximum of {self.max_viewers} "
                               "viewers", {"Retry-After": "5"})
            viewer_id = uuid.uuid4().hex[:12]
            ice = self.ice.configuration()
            pc = RTCPeerConnection(ice)
            meter = self.meters.setdefault(stream_id, StreamMeter())
            output = StreamOutputTrack(self.pipeline, stream_id, meter, own_frames=True, repeat=repeat)
            viewer = Viewer(viewer_id, stream_id, pc, output)
            self.viewers[viewer.id] = viewer
            async with undone_on_failure(lambda: self.close(viewer.id)):
                self._wire(viewer)
                await pc.setRemoteDescription(offer)
                pc.addTrack(viewer.output)
                await pc.setLocalDescription(await pc.createAnswer())
                await self.ice.gathered(ice, pc.localDescription.sdp, f"viewer {viewer.id}")
                admit_relayed_clients(pc)  # a WHEP player that offered no candidates reaches our relay
        self._own(viewer, self._watch_connect(viewer))
        logger.info("viewer %s of stream %s connected; %d viewer(s)", viewer.id, stream_id, len(self.viewers))
        return viewer, pc.localDescription.sdp

    def _wire(self, viewer: Viewer) -> None:
        @viewer.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:  # a sendrecv offer: read what it sends, use none of it
            self._own(viewer, drain(track))

        @viewer.pc.on("connectionstatechange")
        async def on_state() -> None:
            state = viewer.pc.connectionState
            if state == "connected":
                viewer.connected.set()
            elif state in ("failed", "closed"):
                self.close_soon(viewer.id, f"connection {state}")

        @viewer.output.on("ended")
        def on_ended() -> None:  # the stream closed while this viewer watched it
            self.close_soon(viewer.id, "its stream ended")

    async def _watch_connect(self, viewer: Viewer) -> None:
        try:
            await asyncio.wait_for(viewer.connected.wait(), self.connect_timeout)
        except TimeoutError:
            self.close_soon(viewer.id, f"not connected within {self.connect_timeout:g} s")

    def _own(self, viewer: Viewer, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        viewer.tasks.add(task)
        task.add_done_callback(viewer.tasks.discard)

    def close_soon(self, viewer_id: str, reason: str) -> None:
        if viewer_id in self.viewers and viewer_id not in self._closing:
            logger.info("closing viewer %s: %s", viewer_id, reason)
            task = asyncio.ensure_future(self.close(viewer_id))
            self._closing[viewer_id] = task
            task.add_done_callback(lambda _: self._closing.pop(viewer_id, None))

    async def close(self, viewer_id: str, stream: str | None = None) -> bool:
        """Frees the viewer; with ``stream``, only a viewer of that stream (a WHEP Location names both)."""
        viewer = self.viewers.get(viewer_id)
        if viewer is None or (stream is not None and viewer.stream != stream):
            return False
        del self.viewers[viewer_id]
        current = asyncio.current_task()
        tasks = [t for t in viewer.tasks if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await viewer.pc.close()  # stops the sender's task first, so the output's frame iterator is not running
        viewer.output.stop()
        logger.info("viewer %s closed; %d viewer(s) left", viewer_id, len(self.viewers))
        return True

    async def close_stream(self, stream_id: str) -> None:
        """Closes every viewer of a stream (its camera peer has gone)."""
        self.meters.pop(stream_id, None)
        await asyncio.gather(*(self.close(vid) for vid, v in list(self.viewers.items()) if v.stream == stream_id))

    def count(self, stream_id: str) -> int:
        return sum(1 for v in self.viewers.values() if v.stream == stream_id)

    async def close_all(self) -> None:
        await asyncio.gather(*(self.close(vid) for vid in list(self.viewers)))
        await asyncio.gather(*list(self._closing.values()), return_exceptions=True)
