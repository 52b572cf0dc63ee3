"""A client's watch on its server: close the connection once the server has gone silent.

A server process that dies (a killed cluster worker, a crash) sends nothing more, and aiortc would wait for
aioice's consent checks to fail, about 30 s, before calling the connection failed. A live server is never
silent for long: once connected, its RTCP sender reports every 0.5-1.5 s (aiortc's RTCRtpSender), besides
the video. So a connection that received nothing for ``silence_s`` is closed; the bridge and other callers
then see ``connectionState == "closed"`` and reconnect. Silence counts only while this process's own event
loop kept time: if the loop itself stalled, the packets may be waiting in the socket.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiortc import RTCPeerConnection

logger = logging.getLogger(__name__)
SILENCE_S = 4.0  # two missed RTCP reports and more: a dead server, not a slow one
POLL_S = 0.25


async def packets_received(pc: RTCPeerConnection) -> int:
    """Datagrams the connection's DTLS transport received (RTP, RTCP and data channels alike)."""
    report = await pc.getStats()
    return sum(getattr(stats, "packetsReceived", 0) for stats in report.values() if stats.type == "transport")


async def close_when_silent(pc: RTCPeerConnection, silence_s: float = SILENCE_S, poll_s: float = POLL_S) -> None:
    """Runs until ``pc`` closes or fails; closes it after ``silence_s`` of silence while connected."""
    received, quiet_since, polled = -1, time.monotonic(), time.monotonic()
    while pc.connectionState not in ("closed", "failed"):
        await asyncio.sleep(poll_s)
        now = time.monotonic()
        lagged, polled = now - polled > poll_s + 1.0, now
        count = await packets_received(pc) if pc.connectionState == "connected" else -1
        if count != received or count < 0 or lagged:
            received, quiet_since = count, now
        elif now - quiet_since >= silence_s:
            logger.warning("nothing received from the server for %.1f s: closing the connection", now - quiet_since)
            await pc.close()
            return
