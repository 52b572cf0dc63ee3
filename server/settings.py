"""Server settings: one frozen dataclass, filled from command-line options or SANA_STREAM_* variables."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field

from rtc.ice_config import IceConfig
from rtc.secret_rules import MIN_TOKEN_CHARS, require_length
from server.auth import derived_view_token
from server.hosts import default_hosts, host_pattern
from stream.config import StreamConfig

BODY_MAX_BYTES = 64 * 1024  # every request body: real offers are 4-6 KB; FastAPI itself has no body cap
KEEP_ALIVE_TIMEOUT_S = 5  # uvicorn's own default: an idle keep-alive connection is closed after it
DEFAULT_MODEL = "Efficient-Large-Model/Sana_Sprint_0.6B_1024px_diffusers"


@dataclass(frozen=True)
class ServerSettings:
    model: str | None = None  # None: cached Sana-Sprint weights if present, else the tiny demo model
    host: str = "127.0.0.1"
    port: int = 8080
    backend: str = "torch"
    stream: StreamConfig = field(default_factory=StreamConfig)
    # when set, every endpoint but /config, a bare /health and the pages needs "Authorization: Bearer <token>"
    token: str | None = field(default=None, repr=False)
    view_token: str | None = field(default=None, repr=False)  # plays streams only; None: derived from token
    max_peers: int = 4
    max_viewers: int | None = None  # receive-only /view connections; None: 4 x max_peers
    idle_timeout: float = 10.0  # seconds without input frames before a peer is closed
    cors_origins: tuple[str, ...] = ()
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    allow_public_without_token: bool = False
    # names the server answers to besides loopback and its bound address (server.hosts); "*" turns the check off
    allowed_hosts: tuple[str, ...] = ()
    request_timeout: float = 10.0  # seconds for a request's head, and again for its body, to arrive
    max_connections: int = 200  # open HTTP connections; more are closed at once (and uvicorn's limit_concurrency)
    pages: bool = True  # serve the web pages (missing pages stop the start); False: the API only
    ice: IceConfig = field(default_factory=IceConfig)  # STUN/TURN servers for every peer connection
    ndi: bool = False  # each stream's output also as an NDI source named after the stream (server.ndi_outputs)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must lie in 0..65535, got {self.port}")
        if self.max_peers < 1:
            raise ValueError(f"max_peers must be at least 1, got {self.max_peers}")
        if self.max_viewers is not None and self.max_viewers < 0:
            raise ValueError(f"max_viewers must be 0 or more, got {self.max_viewers}")
        if not math.isfinite(self.idle_timeout) or self.idle_timeout <= 0:
            raise ValueError(f"idle_timeout must be a positive number of seconds, got {self.idle_timeout}")
        require_length("--token", self.token, MIN_TOKEN_CHARS)
        require_length("--view-token", self.view_token, MIN_TOKEN_CHARS)
        if self.view_token is not None and (self.token is None or self.view_token == self.token):
            raise ValueError("--view-token needs a --token and must differ from it")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile must be given together")
        if "*" in self.cors_origins and self.token is not None:
            raise ValueError("cors_origins must not contain '*' when a token is set; list the origins")
        if not math.isfinite(self.request_timeout) or self.request_timeout <= 0:
            raise ValueError(f"request_timeout must be a positive number of seconds, got {self.request_timeout}")
        if self.max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {self.max_connections}")
        for name in self.allowed_hosts:
            host_pattern(name)  # raises ValueError naming a bad one
        if not self.is_loopback and self.token is None and not self.allow_public_without_token:
            raise ValueError(f"refusing to bind {self.host!r} without --token: anyone on the network could use "
                             "the GPU and change prompts (pass --allow-public-without-token to do it anyway)")
        if not self.is_loopback and self.token is None and self.ice.turn_urls:
            raise ValueError(f"refusing to bind {self.host!r} without --token while a TURN server is configured: "
                             "anyone on the network could take TURN credentials and relays "
                             "(--allow-public-without-token does not cover TURN; set --token)")

    @property
    def view_token_in_force(self) -> str | None:
        """The token ``/view`` links carry: ``view_token``, else derived from ``token``; None without a token."""
        if self.token is None:
            return None
        return self.view_token or derived_view_token(self.token)

    @property
    def viewer_cap(self) -> int:
        return 4 * self.max_peers if self.max_viewers is None else self.max_viewers

    @property
    def trusted_hosts(self) -> list[str]:
        """``Host`` names the server answers to: loopback, the bound address, ``allowed_hosts``."""
        return list(dict.fromkeys([*default_hosts(self.host), *(host_pattern(h) for h in self.allowed_hosts)]))

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False
