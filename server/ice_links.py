"""The ``Link: <URL>; rel="ice-server"`` headers of WHIP and WHEP (RFC 9725 4.6): how OBS learns STUN/TURN servers.

OBS (obs-webrtc's ``WHIPOutput::ParseLinkHeader``) never calls ``/ice-servers``; it reads these headers from the 201
only. Its parser splits every Link value at ``,`` and each link at ``;``, takes the URL only from a link that
starts with ``<stun:`` or ``<turn:`` (so ``turns:`` links are for other clients), and a value from between the first
and last ``"`` of ``username="..."`` / ``credential="..."``. So each URL gets a header of its own, every value is
quoted, and a TURN credential holding ``"``, ``,`` or ``;`` (possible only for a static one) is logged once as one
OBS cannot read. The TURN credentials are the ones ``/ice-servers`` hands out, minted per stream; the secret never
leaves the server.
"""

from __future__ import annotations

import logging

from rtc.ice_config import IceConfig

logger = logging.getLogger(__name__)
_OBS_UNREADABLE = ('"', ",", ";", "\\")
_warned = False


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _warn_unreadable(credential: str) -> None:
    global _warned
    if not _warned and any(c in credential for c in _OBS_UNREADABLE):
        _warned = True
        logger.warning("the static TURN credentials hold one of %s: OBS cannot read them from the WHIP Link headers; "
                       "use --turn-secret, or static credentials without those characters",
                       " ".join(_OBS_UNREADABLE))


def ice_links(ice: IceConfig) -> list[str]:
    """One Link header value per configured STUN/TURN URL, TURN ones with freshly minted (or the static)
    credentials; none without ICE servers."""
    servers, _ = ice.servers()
    links = []
    for server in servers:
        credentials = ""
        if server.get("username") is not None:
            _warn_unreadable(server["username"] + server["credential"])
            credentials = (f'; username={_quoted(server["username"])}; credential={_quoted(server["credential"])}'
                           '; credential-type="password"')
        links += [f'<{url}>; rel="ice-server"{credentials}' for url in server["urls"]]
    return links
