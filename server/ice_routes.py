"""HTTP endpoints for ICE: the STUN/TURN servers a client should use, and which route each connection took.

``GET /ice-servers`` hands each client the server's STUN/TURN URLs with fresh TURN credentials (minted from
``--turn-secret``, or the static ones); it needs a token when one is set (the view token will do: a viewer needs a
relay as much as a camera), since the credentials open the TURN server. ``GET /debug/connections`` says per peer
and viewer whether media is relayed; it shows candidate types only, no addresses, and needs the full token.
``GET /view-token`` gives the pages the token their ``/view`` share links carry.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, FastAPI
from pydantic import BaseModel, Field

from rtc.ice import SelectedPair, selected_pair
from server.auth import Scope, authorizer
from server.peers import PeerManager
from server.schemas import ViewToken
from server.settings import ServerSettings
from server.viewers import ViewerManager


class IceServer(BaseModel):
    """An RTCIceServer as browsers and aiortc take it."""

    urls: list[str]
    username: str | None = None
    credential: str | None = None


class IceServers(BaseModel):
    ice_servers: list[IceServer] = Field(description="pass as RTCPeerConnection({iceServers}); TURN entries carry "
                                                     "credentials for this client")
    expires_at: int | None = Field(description="unix time when minted TURN credentials expire (null: static or none)")
    relay: bool = Field(description="whether a TURN server is configured (iceTransportPolicy 'relay' can work)")


class Route(BaseModel):
    """The candidate pair a connection's media flows over; types are host, srflx, prflx or relay."""

    kind: str
    stream: str
    state: str = Field(description="the connection's state: new, connecting, connected, failed, closed")
    local: str | None = Field(description="this server's candidate type (null until ICE has chosen a pair)")
    remote: str | None = Field(description="the client's candidate type")
    relayed: bool | None = Field(description="whether a TURN server relays the media")


class Connections(BaseModel):
    peers: dict[str, Route]
    viewers: dict[str, Route]


def _route(kind: str, stream: str, state: str, pair: SelectedPair | None) -> Route:
    if pair is None:
        return Route(kind=kind, stream=stream, state=state, local=None, remote=None, relayed=None)
    return Route(kind=kind, stream=stream, state=state, local=pair.local.value, remote=pair.remote.value,
                 relayed=pair.relayed)


def add_ice_routes(app: FastAPI, settings: ServerSettings, peers: Callable[[], PeerManager],
                   viewers: Callable[[], ViewerManager]) -> None:
    add_token_routes(app, settings)

    @app.get("/debug/connections", response_model=Connections,
             dependencies=[Depends(authorizer(settings.token, settings.view_token_in_force, Scope.FULL))])
    async def connections() -> Connections:
        """Per camera peer and viewer: the connection state and the candidate pair in use (relayed or direct)."""
        return Connections(
            peers={pid: _route(p.kind.value, pid, p.pc.connectionState, selected_pair(p.pc))
                   for pid, p in list(peers().peers.items())},
            viewers={vid: _route("viewer", v.stream, v.pc.connectionState, selected_pair(v.pc))
                     for vid, v in list(viewers().viewers.items())})


def add_token_routes(app: FastAPI, settings: ServerSettings) -> None:
    """``/ice-servers`` and ``/view-token``, alike on the server and the cluster front."""
    ice = settings.ice

    @app.get("/ice-servers", response_model=IceServers,
             dependencies=[Depends(authorizer(settings.token, settings.view_token_in_force, Scope.VIEW))])
    async def ice_servers() -> IceServers:
        """The STUN/TURN servers to create one peer connection with, before POST /offer or /view/offer: minted
        TURN usernames are EXPIRY:NAME with a NAME the server picks per call (coturn's quotas count per NAME)."""
        servers, expires_at = ice.servers()
        return IceServers(ice_servers=[IceServer(**s) for s in servers], expires_at=expires_at,
                          relay=bool(ice.turn_urls))

    @app.get("/view-token", response_model=ViewToken,
             dependencies=[Depends(authorizer(settings.token, settings.view_token_in_force, Scope.FULL))])
    async def view_token() -> ViewToken:
        """The token for ``/view`` share links (``#token=``): it plays streams and does nothing else."""
        return ViewToken(view_token=settings.view_token_in_force)
