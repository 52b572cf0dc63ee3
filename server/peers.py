"""WebRTC peers: one stream per camera peer, owned tasks, idle timeout, and cleanup of everything a peer held."""

from __future__ import annotations

import asyncio
import enum
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiortc import MediaStreamTrack, RTCDataChannel, RTCPeerConnection, RTCSessionDescription

from rtc.frame_assembly import assemble_on_marker
from rtc.ice import admit_relayed_clients
from rtc.ice_config import IceConfig
from server.errors import ApiError
from server.keyed_locks import KeyedLocks
from server.metrics import CounterRate, StreamMeter
from server.offers import Wants, check_offer, undone_on_failure
from server.tracks import StreamOutputTrack, drain, read_camera
from server.turn_status import ServerIce
from stream.engine import DEFAULT_STREAM
from stream.pipeline import FramePipeline

logger = logging.getLogger(__name__)
FIRST_INPUT_TIMEOUT_S = 10.0  # the least time a new peer gets for its first camera frame (Peers._watch_idle)


class PeerKind(str, enum.Enum):
    CAMERA = "camera"  # POST /offer: sends a camera, receives its restyled video
    WHIP = "whip"  # POST /whip (OBS): sends a camera only; the output is watched elsewhere


class PeerState(str, enum.Enum):
    CONNECTING = "connecting"
    STREAMING = "streaming"
    CLOSED = "closed"


@dataclass
class Peer:
    id: str
    kind: PeerKind
    pc: RTCPeerConnection
    meter: StreamMeter = field(default_factory=StreamMeter)
    state: PeerState = PeerState.CONNECTING
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    last_input: float = field(default_factory=time.monotonic)  # when the last camera frame arrived
    has_input: bool = False  # whether any camera frame arrived yet
    output: StreamOutputTrack | None = None
    has_video: bool = False
    repeat: bool = True  # whether its output track sends slow outputs twice (StreamOutputTrack)
    stream_open: bool = False  # whether it opened its pipeline stream (closing it frees that)
    received_rate: CounterRate = field(default_factory=CounterRate)  # camera frames per second (metrics)
    generated_rate: CounterRate = field(default_factory=CounterRate)  # restyled frames per second (metrics)

    def touch(self) -> None:
        self.last_input = time.monotonic()
        self.has_input = True


class PeerManager:
    """Creates, tracks and closes peers. Each camera peer gets its own pipeline stream (its id is the peer's). The
    peer table and the pipeline's streams change together, under the stream id's lock (``locks``), which viewers
    of that stream hold too: concurrent offers for one id take turns, the later replacing the earlier."""

    def __init__(self, pipeline: FramePipeline, max_peers: int, idle_timeout: float,
                 ice: ServerIce | None = None, locks: KeyedLocks | None = None) -> None:
        self.pipeline = pipeline
        self.ice = ice or ServerIce(IceConfig())  # the STUN/TURN servers of the server's own connections
        self.max_peers = max_peers
        self.idle_timeout = idle_timeout
        self.locks = locks or KeyedLocks()
        self.peers: dict[str, Peer] = {}
        self._closing: dict[str, asyncio.Task[bool]] = {}
        self.on_close: Callable[[str], Awaitable[None]] | None = None  # called with the id once a peer is freed
        # more consumers of each stream's output (serve --ndi): run with the stream id as tasks of its peer
        self.stream_tasks: list[Callable[[str], Awaitable[None]]] = []

    async def accept(self, sdp: str, kind: str, peer_kind: PeerKind, stream_id: str | None = None,
                     repeat: bool = True) -> tuple[Peer, str]:
        """Answers an offer; raises ApiError: 400/422 for an offer we cannot use (checked before anything is
        taken), 503 when full. A requested ``stream_id`` held by a live peer replaces that peer (a client
        reconnecting keeps its id, so links to ``/view?stream=ID`` stay valid). Whatever fails, the peer is closed
        and forgotten before the error is answered. ``repeat``: whether slow outputs are sent twice."""
        offer = check_offer(sdp, kind, Wants.SEND)
        if stream_id == DEFAULT_STREAM:
            raise ApiError(400, "invalid_stream", f"the stream id {DEFAULT_STREAM!r} is reserved")
        peer_id = stream_id or uuid.uuid4().hex[:12]
        async with self.locks.hold(peer_id):
            if peer_id in self.peers:
                logger.info("peer %s is replaced by a new connection for the same stream", peer_id)
                await self._close_held(peer_id)
            if len(self.peers) >= self.max_peers:
                raise ApiError(503, "server_full", f"the server is serving its maximum of {self.max_peers} peers",
                               {"Retry-After": "5"})
            ice = self.ice.configuration()
            peer = Peer(peer_id, peer_kind, RTCPeerConnection(ice), repeat=repeat)
            self.peers[peer.id] = peer
            async with undone_on_failure(lambda: self._close_held(peer.id)):
                await self._negotiate(peer, offer)
                await self.ice.gathered(ice, peer.pc.localDescription.sdp, f"peer {peer.id}")
                admit_relayed_clients(peer.pc)  # an OBS that offered no candidates reaches our relay
            self._own(peer, self._watch_idle(peer))
        logger.info("peer %s (%s) connected; %d peer(s)", peer.id, peer.kind.value, len(self.peers))
        return peer, peer.pc.localDescription.sdp

    async def _negotiate(self, peer: Peer, offer: RTCSessionDescription) -> None:
        await asyncio.to_thread(self.pipeline.open_stream, peer.id)  # encodes the prompt: keep the loop free
        peer.stream_open = True
        for consume in self.stream_tasks:
            self._own(peer, consume(peer.id))
        self._wire(peer)
        await peer.pc.setRemoteDescription(offer)
        if not peer.has_video:
            raise ApiError(400, "invalid_sdp", "the offer sends no video track")
        assemble_on_marker(peer.pc)  # the camera's frames reach the pipeline a frame interval sooner
        await peer.pc.setLocalDescription(await peer.pc.createAnswer())

    def _wire(self, peer: Peer) -> None:
        @peer.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind != "video" or peer.has_video:
                self._own(peer, drain(track))
                return
            peer.has_video = True
            self._own(peer, read_camera(track, self.pipeline, peer.id, peer.touch))
            if peer.kind is PeerKind.CAMERA:
                peer.output = StreamOutputTrack(self.pipeline, peer.id, peer.meter, repeat=peer.repeat)
                peer.pc.addTrack(peer.output)

        @peer.pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            if peer.output is not None:
                peer.output.channel = channel

        @peer.pc.on("connectionstatechange")
        async def on_state() -> None:
            state = peer.pc.connectionState
            if state == "connected":
                peer.state = PeerState.STREAMING
            elif state in ("failed", "closed"):
                self.close_soon(peer.id, f"connection {state}", only=peer)

    async def _watch_idle(self, peer: Peer) -> None:
        """Closes the peer when no input frame arrives for ``idle_timeout`` seconds (aiortc itself notices a
        vanished peer only after ~30 s of failed consent checks). Before its first frame a peer gets at least
        FIRST_INPUT_TIMEOUT_S: ICE, DTLS and the first keyframe took over a second under load, and a short
        ``--idle-timeout`` closed such peers before they had started."""
        # a plain sleep: on Python 3.11 asyncio.wait_for on an event set 30 times a second sometimes swallows the
        # cancellation from close(), which then waited a whole idle_timeout for this task
        while (idle := time.monotonic() - peer.last_input) < (limit := self._idle_limit(peer)):
            await asyncio.sleep(min(limit - idle, self.idle_timeout))  # the limit shrinks at the first frame
        self.close_soon(peer.id, f"no input for {limit:g} s", only=peer)

    def _idle_limit(self, peer: Peer) -> float:
        return self.idle_timeout if peer.has_input else max(self.idle_timeout, FIRST_INPUT_TIMEOUT_S)

    def _own(self, peer: Peer, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        peer.tasks.add(task)
        task.add_done_callback(peer.tasks.discard)

    def close_soon(self, peer_id: str, reason: str, only: Peer | None = None) -> None:
        """Schedules ``close`` from a callback or one of the peer's own tasks; with ``only``, just when that
        peer still holds the id (a late event of a replaced peer must not close its successor)."""
        if only is not None and self.peers.get(peer_id) is not only:
            return
        if peer_id in self.peers and peer_id not in self._closing:
            logger.info("closing peer %s: %s", peer_id, reason)
            task = asyncio.ensure_future(self.close(peer_id, only=only))
            self._closing[peer_id] = task
            task.add_done_callback(lambda _: self._closing.pop(peer_id, None))

    async def close(self, peer_id: str, only: Peer | None = None) -> bool:
        """Frees everything the peer held: its tasks, its connection, its pipeline stream and its viewers. With
        ``only``, just when that peer (not a successor with its id) still holds the id."""
        async with self.locks.hold(peer_id):
            if only is not None and self.peers.get(peer_id) is not only:
                return False
            return await self._close_held(peer_id)

    async def _close_held(self, peer_id: str) -> bool:
        """``close`` for a caller that holds the id's lock."""
        peer = self.peers.pop(peer_id, None)
        if peer is None:
            return False
        peer.state = PeerState.CLOSED
        try:
            current = asyncio.current_task()
            tasks = [t for t in peer.tasks if t is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await peer.pc.close()  # stops the sender's task first, so the output's frame iterator is not running
            if peer.output is not None:
                peer.output.stop()
        finally:
            if peer.stream_open:
                self.pipeline.close_stream(peer.id)
            if self.on_close is not None:
                await self.on_close(peer.id)
        logger.info("peer %s closed; %d peer(s) left", peer.id, len(self.peers))
        return True

    async def close_all(self) -> None:
        await asyncio.gather(*(self.close(pid) for pid in list(self.peers)))
        await asyncio.gather(*list(self._closing.values()), return_exceptions=True)
