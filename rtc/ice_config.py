"""STUN and TURN servers: the ``--ice-server`` URLs, TURN credentials, and what peers are given.

A server behind NAT (a rented cloud GPU) and a client behind its own NAT cannot reach each other's host
candidates; STUN tells each its public address and TURN relays the media (docs/deploy.md). TURN credentials are
static (``--turn-username``/``--turn-credential``) or, better, minted per client from a secret shared with the
TURN server (``--turn-secret``): the TURN REST API's time-limited credentials that coturn checks with
``use-auth-secret`` / ``static-auth-secret``. Secrets and credentials are kept out of every repr and log line.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rtc.secret_rules import MIN_TURN_SECRET_CHARS, require_length

if TYPE_CHECKING:
    from aiortc import RTCConfiguration

DEFAULT_TURN_TTL_S = 300  # clients fetch credentials right before each connection; coturn checks the expiry
# when a relay is allocated, so minutes are plenty and a leaked credential soon opens nothing (docs/deploy.md)
# host: a DNS name or an IPv4 address (aiortc's URL parser takes no IPv6 literal); port: 1-5 digits
_URL = re.compile(r"(?P<scheme>[a-z]+):(?P<host>[A-Za-z0-9.-]+)(?::(?P<port>[0-9]{1,5}))?"
                  r"(?:\?transport=(?P<transport>[a-z]+))?")
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class IceScheme(str, enum.Enum):
    STUN = "stun"
    TURN = "turn"
    TURNS = "turns"  # TURN over TLS (often on port 443, which gets through most firewalls)


class IceTransport(str, enum.Enum):
    UDP = "udp"
    TCP = "tcp"


DEFAULT_PORTS = {IceScheme.STUN: 3478, IceScheme.TURN: 3478, IceScheme.TURNS: 5349}  # RFC 7064, RFC 7065


@dataclass(frozen=True)
class IceUrl:
    """One ``stun:``, ``turn:`` or ``turns:`` URL (RFC 7064/7065), kept as given for browsers."""

    text: str
    scheme: IceScheme
    host: str
    port: int
    transport: IceTransport | None = None  # TURN only; None: udp for turn:, tcp for turns:

    @classmethod
    def parse(cls, text: str) -> IceUrl:
        """Raises ValueError naming the URL and what is wrong with it."""
        text = text.strip()
        if "@" in text:  # turn:user:password@host: the URL is not repeated, it holds a credential
            raise ValueError("an ICE server URL holds user@: write turn:HOST[:PORT][?transport=udp|tcp] and give "
                             "TURN credentials in SANA_STREAM_TURN_SECRET or --turn-username/--turn-credential")
        if "//" in text:
            raise ValueError(f"ICE server URL {text!r}: write stun:HOST[:PORT] or turn:HOST[:PORT][?transport=udp|tcp] "
                             "(no '//', no user@; TURN credentials go in --turn-secret or "
                             "--turn-username/--turn-credential)")
        match = _URL.fullmatch(text)
        if match is None:
            raise ValueError(f"ICE server URL {text!r} is malformed: expected stun:HOST[:PORT], turn:HOST[:PORT]"
                             "[?transport=udp|tcp] or turns:HOST[:PORT][?transport=tcp], HOST a name or IPv4 address")
        try:
            scheme = IceScheme(match["scheme"])
        except ValueError:
            raise ValueError(f"ICE server URL {text!r}: the scheme must be stun, turn or turns, got "
                             f"{match['scheme']!r}") from None
        port = int(match["port"]) if match["port"] else DEFAULT_PORTS[scheme]
        if not 1 <= port <= 65535:
            raise ValueError(f"ICE server URL {text!r}: the port must lie in 1..65535, got {port}")
        transport = IceTransport(match["transport"]) if match["transport"] in ("udp", "tcp") else None
        if match["transport"] is not None and transport is None:
            raise ValueError(f"ICE server URL {text!r}: transport must be udp or tcp, got {match['transport']!r}")
        if scheme is IceScheme.STUN and transport is not None:
            raise ValueError(f"ICE server URL {text!r}: a stun: URL takes no ?transport= (RFC 7064)")
        if scheme is IceScheme.TURNS and transport is IceTransport.UDP:
            raise ValueError(f"ICE server URL {text!r}: turns: runs over TLS, i.e. TCP; neither browsers nor aiortc "
                             "speak TURN over DTLS")
        return cls(text, scheme, match["host"], port, transport)

    @property
    def is_turn(self) -> bool:
        return self.scheme is not IceScheme.STUN

    @property
    def effective_transport(self) -> IceTransport:
        if self.transport is not None:
            return self.transport
        return IceTransport.TCP if self.scheme is IceScheme.TURNS else IceTransport.UDP

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class TurnCredentials:
    username: str
    credential: str = field(repr=False)
    expires_at: int | None = None  # unix time of a minted credential; None for static ones


def connection_name() -> str:
    """A fresh name for one minted credential, chosen here and never by a client: coturn counts its
    ``user-quota`` per name, so each credential (one connection's) gets at most that many relays."""
    return f"c{secrets.token_hex(8)}"


def mint_credentials(secret: str, name: str, ttl: float, now: float | None = None) -> TurnCredentials:
    """The TURN REST API's credentials: username ``EXPIRY:NAME`` (EXPIRY in unix seconds) and credential
    base64(HMAC-SHA1(secret, username)), which coturn's ``use-auth-secret`` recomputes from its
    ``static-auth-secret``; it refuses them once EXPIRY has passed."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"a TURN credential name must be 1-64 characters of A-Z a-z 0-9 _ . -, got {name!r}")
    expiry = int((time.time() if now is None else now) + ttl)
    username = f"{expiry}:{name}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return TurnCredentials(username, base64.b64encode(digest).decode("ascii"), expiry)


@dataclass(frozen=True)
class IceConfig:
    """The ICE servers every peer connection uses (the server's own, the pages', ``rtc.client``'s)."""

    urls: tuple[IceUrl, ...] = ()
    turn_username: str | None = None  # static TURN credentials
    turn_credential: str | None = field(default=None, repr=False)
    turn_secret: str | None = field(default=None, repr=False)  # shared with coturn's static-auth-secret
    turn_ttl: float = DEFAULT_TURN_TTL_S  # seconds a minted credential stays valid

    @classmethod
    def from_options(cls, urls: Iterable[str], turn_username: str | None = None, turn_credential: str | None = None,
                     turn_secret: str | None = None, turn_ttl: float = DEFAULT_TURN_TTL_S) -> IceConfig:
        """From command-line strings; empty values count as not given (compose files pass ``VAR:-``)."""
        return cls(tuple(IceUrl.parse(u) for u in urls if u.strip()), turn_username or None, turn_credential or None,
                   turn_secret or None, turn_ttl)

    def __post_init__(self) -> None:
        if not (60 <= self.turn_ttl <= 3600):  # longer-lived credentials outlast the quotas' point
            raise ValueError(f"turn_ttl must lie in 60..3600 seconds, got {self.turn_ttl}")
        static = self.turn_username is not None or self.turn_credential is not None
        if static and (self.turn_username is None or self.turn_credential is None):
            raise ValueError("--turn-username and --turn-credential go together")
        if static and self.turn_secret is not None:
            raise ValueError("give either --turn-secret (minted credentials) or --turn-username/--turn-credential "
                             "(static ones), not both")
        require_length("--turn-secret", self.turn_secret, MIN_TURN_SECRET_CHARS)
        if self.turn_urls and not (static or self.turn_secret):
            raise ValueError(f"TURN server {self.turn_urls[0]} needs credentials: pass --turn-secret (coturn's "
                             "static-auth-secret) or --turn-username and --turn-credential")
        if (static or self.turn_secret) and not self.turn_urls:
            raise ValueError("TURN credentials were given but no --ice-server turn: or turns: URL")

    @property
    def turn_urls(self) -> tuple[IceUrl, ...]:
        return tuple(u for u in self.urls if u.is_turn)

    @property
    def stun_urls(self) -> tuple[IceUrl, ...]:
        return tuple(u for u in self.urls if not u.is_turn)

    def credentials(self) -> TurnCredentials | None:
        """Fresh TURN credentials (minted for a new ``connection_name`` when a secret is set); None without TURN."""
        if self.turn_secret is not None:
            return mint_credentials(self.turn_secret, connection_name(), self.turn_ttl)
        if self.turn_username is not None and self.turn_credential is not None:
            return TurnCredentials(self.turn_username, self.turn_credential)
        return None

    def servers(self) -> tuple[list[dict[str, Any]], int | None]:
        """RTCIceServer dictionaries as browsers take them (TURN credentials minted for this one connection), and
        when their TURN credentials expire."""
        servers: list[dict[str, Any]] = []
        if self.stun_urls:
            servers.append({"urls": [str(u) for u in self.stun_urls]})
        creds = self.credentials()
        if creds is not None:
            servers.append({"urls": [str(u) for u in self.turn_urls], "username": creds.username,
                            "credential": creds.credential})
        return servers, None if creds is None else creds.expires_at

    def rtc_configuration(self) -> RTCConfiguration:
        """For one of the server's own aiortc connections (aiortc uses the first STUN and the first TURN URL)."""
        return rtc_configuration(self.servers()[0])


def rtc_configuration(servers: list[dict[str, Any]], relay: bool = False) -> RTCConfiguration:
    """An aiortc configuration from RTCIceServer dictionaries; ``relay`` gathers relay candidates only."""
    from aiortc import RTCConfiguration, RTCIceServer  # the CLI imports this module: aiortc only when used
    from aiortc.rtcconfiguration import RTCIceTransportPolicy

    ice = [RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential")) for s in servers]
    policy = RTCIceTransportPolicy.RELAY if relay else RTCIceTransportPolicy.ALL
    return RTCConfiguration(iceServers=ice, iceTransportPolicy=policy)
