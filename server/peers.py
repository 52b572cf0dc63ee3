"""WebRTC peers: one stream per camera peer, owned tasks, idle timeout, and cleanup of everything a peer held."""

from __future__ import annotations

import asyncio
import enum
import logging
import uuid
from dataclasses import dataclass, field

from aiortc import MediaStreamTrack, RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription

from server.errors import ApiError
from server.metrics import StreamMeter
from server.tracks import StreamOutputTrack, drain, read_camera
from stream.pipeline import FramePipeline

logger = logging.getLogger(__name__)


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
    got_input: asyncio.Event = field(default_factory=asyncio.Event)
    output: StreamOutputTrack | None = None
    has_video: bool = False


def _parse_offer(sdp: str, kind: str) -> RTCSessionDescription:
    if kind != "offer":
        raise ApiError(400, "invalid_sdp", f"type must be 'offer', got {kind!r}")
    if not sdp.startswith("v=0") or "m=video" not in sdp:
        raise ApiError(400, "invalid_sdp", "sdp must be an SDP offer (starting 'v=0') with a video m-line")
    return RTCSessionDescription(sdp=sdp, type="offer")


class PeerManager:
    """Creates, tracks and closes peers. Each camera peer gets its own pipeline stream (its id is the peer's)."""

    def __init__(self, pipeline: FramePipeline, max_peers: int, idle_timeout: float) -> None:
        self.pipeline = pipeline
        self.max_peers = max_peers
        self.idle_timeout = idle_timeout
        self.peers: dict[str, Peer] = {}
        self._closing: dict[str, asyncio.Task[None]] = {}

    async def accept(self, sdp: str, kind: str, peer_kind: PeerKind) -> tuple[Peer, str]:
        """Answers an offer; raises ApiError 503 when full, 400 when the offer is unusable."""
        offer = _parse_offer(sdp, kind)
        if len(self.peers) >= self.max_peers:
            raise ApiError(503, "server_full", f"the server is serving its maximum of {self.max_peers} peers",
                           {"Retry-After": "5"})
        peer = Peer(uuid.uuid4().hex[:12], peer_kind, RTCPeerConnection(RTCConfiguration(iceServers=[])))
        self.peers[peer.id] = peer
        try:
            await asyncio.to_thread(self.pipeline.open_stream, peer.id)  # encodes the prompt: keep the loop free
            self._wire(peer)
            await peer.pc.setRemoteDescription(offer)
            if not peer.has_video:
                raise ApiError(400, "invalid_sdp", "the offer sends no video track")
            await peer.pc.setLocalDescription(await peer.pc.createAnswer())
        except ApiError:
            await self.close(peer.id)
            raise
        except (ValueError, KeyError, IndexError) as exc:  # aiortc's SDP parser raises these on malformed input
            await self.close(peer.id)
            raise ApiError(400, "invalid_sdp", f"the offer could not be used: {exc}") from exc
        self._own(peer, self._watch_idle(peer))
        logger.info("peer %s (%s) connected; %d peer(s)", peer.id, peer.kind.value, len(self.peers))
        return peer, peer.pc.localDescription.sdp

    def _wire(self, peer: Peer) -> None:
        @peer.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind != "video" or peer.has_video:
                self._own(peer, drain(track))
                return
            peer.has_video = True
            self._own(peer, read_camera(track, self.pipeline, peer.id, peer.got_input.set))
            if peer.kind is PeerKind.CAMERA:
                peer.output = StreamOutputTrack(self.pipeline, peer.id, peer.meter)
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
                self.close_soon(peer.id, f"connection {state}")

    async def _watch_idle(self, peer: Peer) -> None:
        """Closes the peer when no input frame arrives for ``idle_timeout`` seconds (aiortc itself notices a
        vanished peer only after ~30 s of failed consent checks)."""
        while True:
            try:
                await asyncio.wait_for(peer.got_input.wait(), self.idle_timeout)
            except TimeoutError:
                self.close_soon(peer.id, f"no input for {self.idle_timeout:g} s")
                return
            peer.got_input.clear()

    def _own(self, peer: Peer, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        peer.tasks.add(task)
        task.add_done_callback(peer.tasks.discard)

    def close_soon(self, peer_id: str, reason: str) -> None:
        """Schedules ``close`` from a callback or one of the peer's own tasks."""
        if peer_id in self.peers and peer_id not in self._closing:
            logger.info("closing peer %s: %s", peer_id, reason)
            task = asyncio.ensure_future(self.close(peer_id))
            self._closing[peer_id] = task
            task.add_done_callback(lambda _: self._closing.pop(peer_id, None))

    async def close(self, peer_id: str) -> bool:
        """Frees everything the peer held: its tasks, its connection and its pipeline stream."""
        peer = self.peers.pop(peer_id, None)
        if peer is None:
            return False
        peer.state = PeerState.CLOSED
        current = asyncio.current_task()
        tasks = [t for t in peer.tasks if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if peer.output is not None:
            peer.output.stop()
        await peer.pc.close()
        self.pipeline.close_stream(peer.id)
        logger.info("peer %s closed; %d peer(s) left", peer.id, len(self.peers))
        return True

    async def close_all(self) -> None:
        await asyncio.gather(*(self.close(pid) for pid in list(self.peers)))
        await asyncio.gather(*list(self._closing.values()), return_exceptions=True)
