"""ICE at run time: loopback host candidates, and which candidate pair a connection uses.

aioice leaves 127.0.0.1 out of its host candidates, so on a machine (or network namespace) with only a
loopback interface a server bound to 127.0.0.1 offers no candidate at all and no peer can connect. When the
server is bound to loopback its clients are on this machine, so loopback is added to aioice's list.

aiortc has no public way to read the selected candidate pair (its getStats has no candidate-pair entries), so
``selected_pair`` reads aioice's nominated pair through two private attributes; should a later aiortc or aioice
rename them, that is logged once as a warning and the pair reads as None; media flows as before.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import Callable

import aioice.ice
from aiortc import RTCPeerConnection

logger = logging.getLogger(__name__)
_original: Callable[[bool, bool], list[str]] | None = None
_warned_internals = False


def include_loopback_candidates() -> None:
    """Idempotent: after it, aioice offers 127.0.0.1 as well as the machine's other addresses."""
    global _original
    if _original is not None:
        return
    _original = aioice.ice.get_host_addresses

    def with_loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        assert _original is not None
        addresses = list(_original(use_ipv4, use_ipv6))
        if use_ipv4 and "127.0.0.1" not in addresses:
            addresses.append("127.0.0.1")
        return addresses

    aioice.ice.get_host_addresses = with_loopback
    logger.info("ICE: 127.0.0.1 added to the host candidates (server bound to loopback)")


class CandidateType(str, enum.Enum):
    HOST = "host"  # an address of the machine itself: direct, same network
    SRFLX = "srflx"  # the public address a STUN server saw (through a NAT)
    PRFLX = "prflx"  # an address learnt from a connectivity check
    RELAY = "relay"  # an address on a TURN server, which relays the media
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class SelectedPair:
    local: CandidateType  # this side's candidate
    remote: CandidateType  # the other side's

    @property
    def relayed(self) -> bool:
        return CandidateType.RELAY in (self.local, self.remote)


def _candidate_type(name: str) -> CandidateType:
    try:
        return CandidateType(name)
    except ValueError:
        return CandidateType.UNKNOWN


def selected_pair(pc: RTCPeerConnection) -> SelectedPair | None:
    """The candidate pair ``pc``'s media flows over, or None before ICE has chosen one."""
    global _warned_internals
    transports = [t.sender.transport for t in pc.getTransceivers() if t.sender.transport is not None]
    if pc.sctp is not None:
        transports.append(pc.sctp.transport)
    for dtls in transports:
        connection = getattr(dtls.transport, "_connection", None)  # RTCIceTransport -> aioice.Connection
        nominated = getattr(connection, "_nominated", None)
        if not isinstance(nominated, dict):
            if not _warned_internals:
                _warned_internals = True
                logger.warning("aiortc/aioice internals moved (RTCIceTransport._connection._nominated): the selected "
                               "candidate pair of connections cannot be read; media is not affected")
            return None
        pair = nominated.get(1)
        if pair is not None:
            return SelectedPair(_candidate_type(pair.local_candidate.type), _candidate_type(pair.remote_candidate.type))
    return None


def has_relay_candidate(sdp: str) -> bool:
    return " typ relay" in sdp
