"""Received video frames complete on the RTP marker bit: one frame interval sooner than aiortc's own assembly.

aiortc's JitterBuffer hands a video frame to the decoder only when the first packet of the *next* frame
arrives, so every received frame waits one frame interval before it is decoded: 33 ms of a 30 fps camera at the
server, and a whole output interval (~0.4 s at a CPU server's 2-3 outputs a second) at an aiortc viewer. Senders
set the RTP marker bit on the last packet of each video frame (RFC 7741 4.1 for VP8, RFC 6184 5.1 for H.264;
Chromium, Firefox, OBS's WHIP output and aiortc all do), so a frame is complete as soon as its packets from the
first through the marked one are in. ``MarkerJitterBuffer`` emits it then; capacity, loss, reordering and PLI stay
aiortc's.

aiortc has no public hook for a receiver's jitter buffer, so ``assemble_on_marker`` replaces the private attribute
on each video receiver before any packet arrives. Should a later aiortc rename it, that is logged once as a
warning and frames complete aiortc's way (a frame later); nothing else changes.
"""

from __future__ import annotations

import logging

from aiortc import RTCPeerConnection, RTCRtpReceiver
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_gt

logger = logging.getLogger(__name__)
_RECEIVER_BUFFER = "_RTCRtpReceiver__jitter_buffer"  # RTCRtpReceiver.__jitter_buffer, name-mangled
_warned = False


class MarkerJitterBuffer(JitterBuffer):
    """aiortc's video JitterBuffer, plus: the frame at the buffer's start is emitted as soon as its packets are
    contiguous and the last carries the marker bit. A frame whose marker packet was lost still completes aiortc's
    way, when the next frame's first packet arrives; as ``add`` returns one frame per packet, single-packet frames
    after it stay a packet behind until a frame of several packets lets the buffer catch up."""

    def __init__(self, capacity: int = 512) -> None:  # packets, as aiortc's video buffer
        super().__init__(capacity=capacity, is_video=True)
        self._newest: int | None = None  # the highest sequence number added

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        # a frame completes with its marker packet, or with a packet that fills a gap behind it
        behind = self._newest is not None and uint16_gt(self._newest, packet.sequence_number)
        if not behind:
            self._newest = packet.sequence_number
        pli, frame = super().add(packet)
        if frame is not None and not frame.data:
            # padding-only packets (bandwidth probes) after a frame that completed on its marker: aiortc would
            # have joined them to that frame; alone they are no frame, and the decoder would fail on them
            frame = None
        if frame is None and (packet.marker or behind):
            frame = self._remove_marked_frame()
        return pli, frame

    def _remove_marked_frame(self) -> JitterFrame | None:
        assert self._origin is not None  # add() set it
        packets: list[RtpPacket] = []
        for count in range(self.capacity):
            packet = self._packets[(self._origin + count) % self.capacity]
            if packet is None or (packets and packet.timestamp != packets[0].timestamp):
                return None
            packets.append(packet)
            if packet.marker:
                self.remove(count + 1)
                return JitterFrame(data=b"".join(p._data for p in packets),  # type: ignore[attr-defined]
                                   timestamp=packets[0].timestamp)
        return None


def assemble_on_marker(pc: RTCPeerConnection) -> None:
    """Gives every video receiver of ``pc`` a MarkerJitterBuffer. Call it before media flows: after
    ``setRemoteDescription`` of an offer (the receivers exist from then), or after ``addTrack`` on the offering side."""
    for transceiver in pc.getTransceivers():
        if transceiver.kind == "video":
            _install(transceiver.receiver)


def _install(receiver: RTCRtpReceiver) -> None:
    global _warned
    current = getattr(receiver, _RECEIVER_BUFFER, None)
    if isinstance(current, MarkerJitterBuffer):
        return
    if type(current) is JitterBuffer and current._is_video:
        setattr(receiver, _RECEIVER_BUFFER, MarkerJitterBuffer(current.capacity))
    elif not _warned:
        _warned = True
        logger.warning("this aiortc's RTCRtpReceiver has no video jitter buffer at %s (found %r): received video "
                       "frames complete aiortc's way, one frame interval later", _RECEIVER_BUFFER, current)
