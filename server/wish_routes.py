"""WHIP ingest (RFC 9725) and WHEP egress (draft-ietf-wish-whep): SDP in, 201 + SDP answer + ``Location`` + one
``Link: <...>; rel="ice-server"`` per STUN/TURN URL out (server.ice_links), ``DELETE`` on the Location to end the
session, and ``OPTIONS`` answering the same Link headers without taking a slot.

A WHEP session is a viewer (server.viewers): the viewer cap, the error format and the cleanup of ``/view/offer``
hold for it, and the ``/view`` page plays through it. Its Location is ``/whep/STREAM/VIEWER`` so that a front
(cluster/) can send the DELETE to the worker holding the stream without remembering viewers.
"""

from __future__ import annotations

from collections.abc import Callable
from fastapi import Depends, FastAPI, Query, Request, Response

from rtc.ice_config import IceConfig
from server.auth import Authorizer
from server.errors import ApiError
from server.ice_links import ice_links
from server.peers import PeerKind, PeerManager
from server.schemas import STREAM_ID_PATTERN
from server.viewers import ViewerManager

SDP = "application/sdp"


async def sdp_body(request: Request, what: str) -> str:
    """The offer of a WHIP or WHEP POST; 415 unless it is sent as application/sdp."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != SDP:
        raise ApiError(415, "unsupported_media_type", f"{what} offers must be sent as application/sdp")
    return (await request.body()).decode("utf-8", errors="replace")


def sdp_created(answer: str, location: str, links: list[str], extra: dict[str, str]) -> Response:
    response = Response(answer, status_code=201, media_type=SDP, headers={"Location": location, **extra})
    for link in links:
        response.headers.append("Link", link)
    return response


def options_answer(request: Request, authorize: Authorizer, ice: IceConfig) -> Response:
    """204 with Allow and Accept-Post; with the Link headers unless it is a CORS preflight (RFC 9725 4.6: those carry
    no token, and the links hold TURN credentials), so a token-less OPTIONS is refused like a POST."""
    response = Response(status_code=204, headers={"Allow": "OPTIONS, POST", "Accept-Post": SDP})
    if "access-control-request-method" in request.headers:
        return response
    authorize(request)
    for link in ice_links(ice):
        response.headers.append("Link", link)
    return response


def add_wish_routes(app: FastAPI, ice: IceConfig, authorize: Authorizer, authorize_view: Authorizer,
                    peers: Callable[[], PeerManager], viewers: Callable[[], ViewerManager]) -> None:
    """WHIP needs the full token, WHEP (playing a stream) the view token or the full one."""
    stream_query = Query(default=None, pattern=STREAM_ID_PATTERN, description="a fixed stream id, e.g. ?stream=obs")

    auth, auth_view = [Depends(authorize)], [Depends(authorize_view)]

    @app.post("/whip", status_code=201, dependencies=auth, responses={201: {"content": {SDP: {}}}})
    async def whip(request: Request, stream: str | None = stream_query) -> Response:
        """WHIP ingest (RFC 9725), e.g. OBS 30+: an SDP offer in, 201 + Location + SDP answer + Link headers out."""
        peer, answer = await peers().accept(await sdp_body(request, "WHIP"), "offer", PeerKind.WHIP, stream)
        return sdp_created(answer, f"/whip/{peer.id}", ice_links(ice), {"X-Stream-Id": peer.id})

    @app.options("/whip", status_code=204)
    async def whip_options(request: Request, stream: str | None = stream_query) -> Response:  # noqa: ARG001
        """The Link headers a WHIP POST would carry, without a session (``stream`` is checked as the POST's)."""
        return options_answer(request, authorize, ice)

    @app.delete("/whip/{peer_id}", dependencies=auth)
    async def whip_delete(peer_id: str) -> dict[str, str]:
        if not await peers().close(peer_id):
            raise ApiError(404, "unknown_session", f"no WHIP session {peer_id!r}")
        return {"status": "closed"}

    @app.post("/whep", status_code=201, dependencies=auth_view, responses={201: {"content": {SDP: {}}}})
    async def whep(request: Request, stream: str = Query(pattern=STREAM_ID_PATTERN, description="the stream to play"),
                   repeat: bool = Query(default=True, description="false: send slow outputs once (see /offer)")
                   ) -> Response:
        """WHEP egress: a receive-only SDP offer for ``stream`` in, 201 + Location + SDP answer + Link headers out;
        404 for a stream that is not live, 503 when the viewers are at their cap."""
        viewer, answer = await viewers().accept(await sdp_body(request, "WHEP"), "offer", stream, repeat)
        return sdp_created(answer, f"/whep/{stream}/{viewer.id}", ice_links(ice), {"X-Viewer-Id": viewer.id})

    @app.options("/whep", status_code=204)
    async def whep_options(request: Request, stream: str | None = stream_query) -> Response:  # noqa: ARG001
        """The Link headers a WHEP POST would carry, without a session (``stream`` is checked as the POST's)."""
        return options_answer(request, authorize_view, ice)

    @app.delete("/whep/{stream}/{viewer_id}", dependencies=auth_view)
    async def whep_delete(stream: str, viewer_id: str) -> dict[str, str]:
        if not await viewers().close(viewer_id, stream=stream):
            raise ApiError(404, "unknown_session", f"no WHEP session {viewer_id!r} of stream {stream!r}")
        return {"status": "closed"}
