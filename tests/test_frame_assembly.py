"""server.frame_assembly: video frames complete on their RTP marker packet, with aiortc's real VP8 packets and
between two real aiortc peers over loopback."""

from __future__ import annotations

import asyncio
import contextlib
import time
from fractions import Fraction

import av
import numpy as np
import pytest
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection
from aiortc.codecs import depayload
from aiortc.codecs.vpx import Vp8Decoder, Vp8Encoder
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from server.frame_assembly import MarkerJitterBuffer, assemble_on_marker
from server.ice import include_loopback_candidates
from tests.support import camera_frame
from tests.support.webrtc import FRAME_PTS, SyntheticCamera

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
SIZE = 192  # a keyframe spans several packets


def picture(k: int) -> np.ndarray:
    """A moving pattern with fixed fine noise, so a keyframe spans several packets."""
    noise = np.random.default_rng(0).integers(-40, 40, (SIZE, SIZE, 3))
    return np.clip(camera_frame(k, height=SIZE, width=SIZE) + np.roll(noise, 4 * k, axis=1), 0, 255).astype(np.uint8)


def coarse(image: np.ndarray) -> np.ndarray:
    return image.reshape(16, SIZE // 16, 16, SIZE // 16, 3).mean(axis=(1, 3))


def vp8_frames(count: int, keyframes: tuple[int, ...] = (0,)) -> list[list[RtpPacket]]:
    """``count`` frames of a moving pattern as aiortc's sender packetizes them: marker on each frame's last packet.
    Keyframes span several packets; the inter frames between them, one."""
    encoder, frames, sequence = Vp8Encoder(), [], 1000
    for k in range(count):
        image = av.VideoFrame.from_ndarray(picture(k), format="rgb24")
        image.pts, image.time_base = k * 3000, Fraction(1, 90000)
        payloads, timestamp = encoder.encode(image, force_keyframe=k in keyframes)
        packets = []
        for i, payload in enumerate(payloads):
            packet = RtpPacket(payload_type=96, marker=int(i == len(payloads) - 1), sequence_number=sequence,
                               timestamp=timestamp, payload=payload)
            packet._data = depayload(VP8, payload)  # type: ignore[attr-defined]  # as aiortc's receiver does
            packets.append(packet)
            sequence += 1
        frames.append(packets)
    return frames


def feed(buffer: JitterBuffer, packets: list[RtpPacket]) -> list[tuple[int, JitterFrame]]:
    """(index of the packet that completed it, frame) for every frame the buffer emits."""
    return [(i, frame) for i, packet in enumerate(packets) for _, frame in [buffer.add(packet)] if frame is not None]


def test_each_frame_completes_with_its_marker_packet_one_frame_sooner_than_aiortc():
    frames = vp8_frames(6)
    assert len(frames[0]) >= 3, "the keyframe should span several packets"
    packets = [p for f in frames for p in f]
    last_packet = np.cumsum([len(f) for f in frames]) - 1

    ours, aiortcs = feed(MarkerJitterBuffer(), packets), feed(JitterBuffer(capacity=512, is_video=True), packets)
    assert [i for i, _ in ours] == list(last_packet)
    assert [i for i, _ in aiortcs] == list(last_packet[:-1] + 1)  # each frame waits for the next one's first packet
    assert [f.data for _, f in ours[:-1]] == [f.data for _, f in aiortcs]
    decoder = Vp8Decoder()
    decoded = [decoder.decode(f)[0].to_ndarray(format="rgb24") for _, f in ours]
    for k, image in enumerate(decoded):
        assert np.abs(coarse(image) - coarse(picture(k))).mean() < 8


def test_a_frame_completes_when_the_last_of_its_reordered_packets_arrives():
    first, second = vp8_frames(2)
    # the marker packet overtakes the middle ones, and the gap fills with a packet that follows the one before it
    order = [first[0], first[-1], *first[1:-1], *second]
    emitted = feed(MarkerJitterBuffer(), order)
    assert [i for i, _ in emitted] == [len(first) - 1, len(order) - 1]
    assert emitted[0][1].data == b"".join(p._data for p in first)


def test_a_frame_that_lost_a_packet_is_not_emitted_and_one_without_marker_waits_as_in_aiortc():
    first, second, third, fourth = vp8_frames(4, keyframes=(0, 3))
    lost = feed(MarkerJitterBuffer(), [first[0], *first[2:]])
    assert lost == []

    unmarked = [*first[:-1], RtpPacket(payload_type=96, marker=0, sequence_number=first[-1].sequence_number,
                                       timestamp=first[-1].timestamp, payload=first[-1].payload)]
    unmarked[-1]._data = first[-1]._data  # type: ignore[attr-defined]
    emitted = feed(MarkerJitterBuffer(), [*unmarked, *second, *third, *fourth])
    # the unmarked frame completes with the next frame's first packet, as in aiortc. That packet is all of the next
    # frame, but one add() returns one frame, so single-packet frames stay a packet behind until a frame of several
    # packets (the keyframe) lets the buffer catch up
    n = len(first)
    assert (len(second), len(third)) == (1, 1) and len(fourth) > 1
    assert [i for i, _ in emitted] == [n, n + 1, n + 2, n + 2 + len(fourth) - 1]


def test_padding_after_a_completed_frame_is_not_emitted_as_a_frame():
    first, second = vp8_frames(2)
    # a bandwidth probe: no payload, the last frame's timestamp, the next sequence number; `second` follows it
    padding = RtpPacket(payload_type=96, marker=0, sequence_number=first[-1].sequence_number + 1,
                        timestamp=first[-1].timestamp, payload=b"")
    padding._data = b""  # type: ignore[attr-defined]  # as aiortc's receiver sets it for an empty payload
    for p in second:
        p.sequence_number += 1
    emitted = feed(MarkerJitterBuffer(), [*first, padding, *second])
    assert [i for i, _ in emitted] == [len(first) - 1, len(first) + len(second)]
    assert all(frame.data for _, frame in emitted)


async def delays(marker: bool, frames: int = 6) -> list[float]:
    """Send time -> decoded at the receiver, for frames 0.5 s apart between two aiortc peers on loopback."""
    sender, receiver = (RTCPeerConnection(RTCConfiguration(iceServers=[])) for _ in range(2))
    camera, got, readers = SyntheticCamera((SIZE, SIZE), interval=0.5), asyncio.Queue(), []

    async def read(track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):  # the track ended
            while True:
                frame = await track.recv()
                got.put_nowait((frame.pts, time.monotonic()))

    receiver.on("track", lambda track: readers.append(asyncio.ensure_future(read(track))))

    sender.addTrack(camera)
    await sender.setLocalDescription(await sender.createOffer())
    await receiver.setRemoteDescription(sender.localDescription)
    if marker:
        assemble_on_marker(receiver)
    await receiver.setLocalDescription(await receiver.createAnswer())
    await sender.setRemoteDescription(receiver.localDescription)
    try:
        received = [await asyncio.wait_for(got.get(), 10) for _ in range(frames)]
    finally:
        await sender.close()
        await receiver.close()
        await asyncio.gather(*readers)
    # the receiver's pts count from its first frame, the camera's from 0, at the same 90 kHz; the decoder's can be
    # a tick off
    return [at - camera.sent[round(pts / FRAME_PTS) * FRAME_PTS] for pts, at in received[1:]]


@pytest.mark.parametrize("marker", [True, False], ids=["marker", "aiortc"])
def test_frames_reach_an_aiortc_receiver_at_once_only_with_marker_assembly(marker):
    include_loopback_candidates()
    found = asyncio.run(delays(marker))
    if marker:
        assert np.median(found) < 0.15, found  # read ~0.01 s here
    else:
        assert np.median(found) > 0.4, found  # the next frame's first packet, 0.5 s later
