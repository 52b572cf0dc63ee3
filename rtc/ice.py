"""ICE at run time: loopback host candidates, which candidate pair a connection uses, and a TURN permission for
clients relayed by the same TURN server (``admit_relayed_clients``).

aioice leaves 127.0.0.1 out of its host candidates, so on a machine (or network namespace) with only a
loopback interface a server bound to 127.0.0.1 offers no candidate at all and no peer can connect. When the
server is bound to loopback its clients are on this machine, so loopback is added to aioice's list.

aiortc has no public way to read the selected candidate pair (its getStats has no candidate-pair entries), so
``selected_pair`` reads aioice's nominated pair through two private attributes (and ``admit_relayed_clients``
reads its protocols); should a later aiortc or aioice
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


def _ice_connections(pc: RTCPeerConnection) -> list[object]:
    """aioice's Connection behind each of ``pc``'s transports (one under BUNDLE), or None where it moved."""
    transports = [t.sender.transport for t in pc.getTransceivers() if t.sender.transport is not None]
    if pc.sctp is not None:
        transports.append(pc.sctp.transport)
    connections: dict[int, object] = {}
    for dtls in transports:
        connection = getattr(dtls.transport, "_connection", None)  # RTCIceTransport -> aioice.Connection
        connections.setdefault(id(connection), connection)
    return list(connections.values())


def _warn_internals(what: str, effect: str) -> None:
    global _warned_internals
    if not _warned_internals:
        _warned_internals = True
        logger.warning("aiortc/aioice internals moved (%s): %s", what, effect)


def selected_pair(pc: RTCPeerConnection) -> SelectedPair | None:
    """The candidate pair ``pc``'s media flows over, or None before ICE has chosen one."""
    for connection in _ice_connections(pc):
        nominated = getattr(connection, "_nominated", None)
        if not isinstance(nominated, dict):
            _warn_internals("RTCIceTransport._connection._nominated",
                            "the selected candidate pair of connections cannot be read; media is not affected")
            return None
        pair = nominated.get(1)
        if pair is not None:
            return SelectedPair(_candidate_type(pair.local_candidate.type), _candidate_type(pair.remote_candidate.type))
    return None


def admit_relayed_clients(pc: RTCPeerConnection) -> int:
    """Lets clients relayed by the TURN server that relays ``pc`` reach it before their candidates are known.

    A WHIP or WHEP client that offers no candidates (OBS) is learnt from its checks; behind a symmetric NAT the only
    way in is this side's relay address, and a TURN server passes to it only what comes from an address with a
    permission (RFC 8656 9), which aioice installs only for candidates it was given. A client that got the same
    TURN server from the Link headers sends its checks from a relay address on that server, so each relay
    allocation gets a permission for its own server's address, by sending itself one zero byte (which neither
    DTLS nor RTP takes, so the receiving side drops it; an empty datagram would stop aiortc's DTLS reader).
    Returns how many allocations were opened."""
    opened = 0
    for connection in _ice_connections(pc):
        protocols = getattr(connection, "_protocols", None)
        if not isinstance(protocols, list):
            _warn_internals("aioice Connection._protocols", "clients that offer no candidates (OBS) cannot reach this "
                            "server through its TURN relay; those that send their candidates still can")
            return opened
        for protocol in protocols:
            candidate = getattr(protocol, "local_candidate", None)
            if candidate is not None and candidate.type == "relay" and protocol.transport is not None:
                protocol.transport.sendto(b"\x00", (candidate.host, candidate.port))
                opened += 1
    return opened


def has_relay_candidate(sdp: str) -> bool:
    return " typ relay" in sdp
