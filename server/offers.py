"""Checks an SDP offer before any connection, stream or slot is taken for it (``POST /offer``, ``/whip``,
``/view/offer``).

aiortc's own parser validates with ``assert`` and fails on malformed text with whatever exception its code hits
(AssertionError, AttributeError, KeyError, IndexError, RuntimeError, ValueError), and an offer of codecs it cannot
decode fails only inside ``setRemoteDescription``. So the lines are checked here first, each failure naming the
line, then parsed with aiortc's parser, then matched against aiortc's codecs the way ``setRemoteDescription``
matches them. An offer that passes can still fail in aiortc; the managers close the connection then too.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from aiortc import RTCSessionDescription
from aiortc.codecs import CODECS
from aiortc.exceptions import InvalidAccessError, InvalidStateError, OperationError
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.sdp import SessionDescription

from server.errors import ApiError
from stream.exceptions import StreamExistsError

try:
    from aiortc.rtcpeerconnection import find_common_codecs
except ImportError:  # a later aiortc may move it: fall back to matching codec names (below)
    find_common_codecs = None

logger = logging.getLogger(__name__)
MAX_MEDIA_SECTIONS = 8  # browsers send 1-3 (video, audio, data channel), OBS 2; each costs a transport
MEDIA_KINDS = ("audio", "video", "application")
SETUP_VALUES = ("actpass", "active", "passive")
RTP_PROFILES = ("UDP/TLS/RTP/SAVPF", "UDP/TLS/RTP/SAVP", "RTP/SAVPF", "RTP/SAVP")
FORBIDDEN_PAYLOAD_TYPES = range(72, 77)  # RFC 5761 4: they collide with RTCP packet types under rtcp-mux
_LINE = re.compile(r"[a-z]=.*")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # RFC 8866 5: no NUL or control characters
_M_LINE = re.compile(r"m=(\S+) (\d+)(?:/\d+)? (\S+)((?: \S+)*)")
_C_LINE = re.compile(r"c=IN IP[46] \S+")
_RTPMAP = re.compile(r"a=rtpmap:(\d+) [^/\s]+/\d+(?:/\d+)?")
_PT_ATTRIBUTE = re.compile(r"a=(rtpmap|fmtp|rtcp-fb):(\S+)")
_warned = False


class Wants(str, enum.Enum):
    """What the offer's video must do for the endpoint."""

    SEND = "send"  # /offer and /whip: the client sends its camera
    RECEIVE = "receive"  # /view/offer: the client receives a stream


class SdpError(ApiError):
    def __init__(self, detail: str) -> None:
        super().__init__(400, "invalid_sdp", detail)


@dataclass
class _Section:
    """What the line checks need of one m= section."""

    kind: str
    number: int  # 1-based, in the offer's order
    payload_types: set[str] = field(default_factory=set)
    attributes: set[str] = field(default_factory=set)  # ice-ufrag, ice-pwd, fingerprint, setup, rtcp-mux


def check_offer(sdp: str, kind: str, wants: Wants) -> RTCSessionDescription:
    """The offer as aiortc takes it; raises ApiError 400 (malformed SDP, no usable video) or 422 (codecs this
    server cannot decode), each detail naming what was wrong."""
    if kind != "offer":
        raise SdpError(f"type must be 'offer', got {kind!r}")
    sections = _check_lines(sdp)
    try:
        description = SessionDescription.parse(sdp)
    except Exception as exc:  # noqa: BLE001 - aiortc's parser fails with whatever its code hits; all mean bad SDP
        raise SdpError(f"the offer could not be parsed ({type(exc).__name__}: {exc})") from exc
    if [m.kind for m in description.media] != [s.kind for s in sections]:
        raise SdpError("the offer's m= lines could not all be parsed")
    _check_codecs(description)
    _check_video(description, wants)
    return RTCSessionDescription(sdp=sdp, type="offer")


def _check_lines(sdp: str) -> list[_Section]:
    control = _CONTROL.search(sdp)
    if control is not None:
        raise SdpError(f"the offer holds a control character ({control.group(0)!r}) at offset {control.start()}")
    lines = [line for line in sdp.split("\n") if line.strip("\r")]
    lines = [line.removesuffix("\r") for line in lines]
    if not lines or lines[0] != "v=0":
        raise SdpError("an SDP offer starts with the line 'v=0'")
    session: set[str] = set()
    sections: list[_Section] = []
    for number, line in enumerate(lines, 1):
        if not _LINE.fullmatch(line):
            raise SdpError(f"line {number} is not an SDP line ('<letter>=<value>'): {line[:60]!r}")
        if line.startswith("m="):
            sections.append(_media_section(line, len(sections) + 1))
            if len(sections) > MAX_MEDIA_SECTIONS:
                raise SdpError(f"the offer has more than {MAX_MEDIA_SECTIONS} m= sections")
        elif line.startswith("c=") and not _C_LINE.fullmatch(line):
            raise SdpError(f"line {number} is not a connection line ('c=IN IP4|IP6 <address>'): {line[:60]!r}")
        elif line.startswith("a="):
            _attribute(line, sections[-1] if sections else None, session)
    if not sections:
        raise SdpError("the offer has no m= section")
    for section in sections:
        _check_transport(section, session)
    return sections


def _media_section(line: str, number: int) -> _Section:
    match = _M_LINE.fullmatch(line)
    if match is None:
        raise SdpError(f"m= section {number} is malformed ('m=<kind> <port> <profile> <formats>'): {line[:60]!r}")
    kind, port, profile, formats = match.group(1), int(match.group(2)), match.group(3), match.group(4).split()
    if kind not in MEDIA_KINDS:
        raise SdpError(f"m= section {number} is of kind {kind!r}; this server takes {', '.join(MEDIA_KINDS)}")
    if port > 65535:
        raise SdpError(f"m= section {number} has port {port}, beyond 65535")
    if not formats:
        raise SdpError(f"m= section {number} ({kind}) lists no formats")
    section = _Section(kind, number, set(formats))
    if kind == "application":
        return section
    if profile not in RTP_PROFILES:
        raise SdpError(f"m= section {number} ({kind}) has profile {profile!r}; WebRTC media use "
                       f"{' or '.join(RTP_PROFILES)}")
    for pt in formats:
        if not pt.isdigit() or int(pt) > 127 or int(pt) in FORBIDDEN_PAYLOAD_TYPES:
            raise SdpError(f"m= section {number} ({kind}) lists payload type {pt!r}; RTP payload types are 0-127, "
                           "except 72-76")
    return section


def _attribute(line: str, section: _Section | None, session: set[str]) -> None:
    name, _, value = line[2:].partition(":")
    if name in ("ice-ufrag", "ice-pwd", "fingerprint", "setup", "rtcp-mux"):
        if name == "setup" and value not in SETUP_VALUES:
            raise SdpError(f"a=setup:{value[:20]} is not one of {', '.join(SETUP_VALUES)}")
        (section.attributes if section else session).add(name)
    pt_attribute = _PT_ATTRIBUTE.match(line)
    if pt_attribute is None or section is None or section.kind == "application":
        return
    attribute, pt = pt_attribute.groups()
    if pt not in section.payload_types and not (attribute == "rtcp-fb" and pt == "*"):
        raise SdpError(f"a={attribute}:{pt[:12]} names a payload type that m= section {section.number} "
                       f"({section.kind}) does not list")
    if attribute == "rtpmap" and not _RTPMAP.fullmatch(line):
        raise SdpError(f"{line[:60]!r} is malformed ('a=rtpmap:<type> <codec>/<clock rate>[/<channels>]')")


def _check_transport(section: _Section, session: set[str]) -> None:
    present = section.attributes | session
    needed = {"ice-ufrag": "ICE credentials (a=ice-ufrag)", "ice-pwd": "ICE credentials (a=ice-pwd)",
              "fingerprint": "a DTLS fingerprint (a=fingerprint)", "setup": "a DTLS role (a=setup)"}
    if section.kind != "application":
        needed["rtcp-mux"] = "a=rtcp-mux (WebRTC multiplexes RTP and RTCP)"
    missing = [what for name, what in needed.items() if name not in present]
    if missing:
        raise SdpError(f"m= section {section.number} ({section.kind}) has no {', '.join(missing)}")


def _check_codecs(description: SessionDescription) -> None:
    for number, media in enumerate(description.media, 1):
        if media.kind not in ("audio", "video"):
            continue
        if not _common(media.kind, media.rtp.codecs):
            offered = sorted({f"{c.mimeType.split('/')[-1]}/{c.clockRate}" for c in media.rtp.codecs}) or ["none"]
            raise ApiError(422, "unsupported_codec", f"m= section {number} ({media.kind}) offers "
                           f"{', '.join(offered)}; this server decodes {media.kind} as {codecs_we_take(media.kind)}"
                           + ("" if media.kind == "video" else " (audio is read and dropped; or send none)"))


def _common(kind: str, offered: list[RTCRtpCodecParameters]) -> bool:
    global _warned
    if find_common_codecs is not None:
        return bool(find_common_codecs(CODECS[kind], offered))
    if not _warned:
        _warned = True
        logger.warning("this aiortc has no rtcpeerconnection.find_common_codecs: offers are matched by codec name "
                       "only, so an H.264 profile aiortc refuses is found out when the connection is set up")
    ours = {c.mimeType.lower() for c in CODECS[kind] if not c.mimeType.lower().endswith("/rtx")}
    return any(c.mimeType.lower() in ours for c in offered)


def codecs_we_take(kind: str) -> str:
    """aiortc's codecs of ``kind``, e.g. 'VP8 or H264 (packetization-mode=1, profile-level-id=42001f or 42e01f)'."""
    names: dict[str, dict[str, list[str]]] = {}  # codec -> fmtp parameter -> the values aiortc takes
    for codec in CODECS[kind]:
        name = codec.mimeType.split("/")[-1]
        if name.lower() == "rtx":
            continue
        for key in ("packetization-mode", "profile-level-id"):
            if key in codec.parameters:
                values = names.setdefault(name, {}).setdefault(key, [])
                values += [str(codec.parameters[key])] if str(codec.parameters[key]) not in values else []
        names.setdefault(name, {})
    parts = []
    for name, params in names.items():
        detail = ", ".join(f"{key}={' or '.join(values)}" for key, values in params.items())
        parts.append(f"{name} ({detail})" if detail else name)
    return ", ".join(parts[:-1]) + (" or " if len(parts) > 1 else "") + parts[-1]


def _check_video(description: SessionDescription, wants: Wants) -> None:
    directions = ("sendrecv", "sendonly") if wants is Wants.SEND else ("sendrecv", "recvonly")
    if not any(m.kind == "video" and (m.direction or "sendrecv") in directions for m in description.media):
        verb = "sends" if wants is Wants.SEND else "receives"
        raise SdpError(f"the offer {verb} no video (it needs a {' or '.join(directions)} m=video section)")


def offer_failed(exc: Exception) -> ApiError:
    """The answer to an offer that passed ``check_offer`` and still failed while the connection was set up."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, StreamExistsError):
        return ApiError(409, "stream_in_use", f"stream {exc.stream_id!r} is in use")
    if isinstance(exc, OSError):  # e.g. out of file descriptors for the connection's sockets
        return ApiError(503, "server_busy", f"the connection could not be set up: {exc}", {"Retry-After": "5"})
    return ApiError(400, "invalid_sdp", f"the offer could not be used ({type(exc).__name__}: {exc})")


# what aiortc raises on an offer it cannot use (its SDP handling asserts, indexes and looks up keys)
AIORTC_OFFER_ERRORS = (ValueError, KeyError, IndexError, AssertionError, InvalidAccessError, InvalidStateError,
                       OperationError, OSError)


@contextlib.asynccontextmanager
async def undone_on_failure(undo: Callable[[], Awaitable[object]]) -> AsyncIterator[None]:
    """Runs ``undo`` (closing and forgetting the peer or viewer) when the block fails in any way, cancellation
    included, so nothing stays behind; an offer aiortc could not use becomes its 4xx (``offer_failed``)."""
    try:
        yield
    except BaseException as exc:
        await asyncio.shield(undo())
        if isinstance(exc, (ApiError, *AIORTC_OFFER_ERRORS)):
            raise offer_failed(exc) from exc  # type: ignore[arg-type]
        raise
