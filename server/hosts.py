"""Which ``Host`` headers the server answers (DNS rebinding), and the middleware that refuses the others.

A web page the user visits can point its own domain at 127.0.0.1 and then call a local server as a same-origin
page; only the ``Host`` header (the page's domain) gives it away. So requests are answered only for the
server's own names: loopback names, the address it is bound to (or, bound to every interface, this machine's
name and addresses), and names added with ``--allowed-host`` (a reverse proxy's, a LAN name).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket

import ifaddr
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import error_body

logger = logging.getLogger(__name__)
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
WILDCARD_BINDS = ("0.0.0.0", "::", "")
_SEND = "sana_stream.send"  # scope key: the caller's send, for a request the host check lets through


def host_pattern(name: str) -> str:
    """A name as the ``Host`` header carries it: lower case, IPv6 literals in brackets; ``*.example.com``
    matches every subdomain. Raises ValueError for anything that is not a bare host name or address."""
    name = name.strip().lower()
    try:
        if ipaddress.ip_address(name.strip("[]")).version == 6:
            return f"[{name.strip('[]')}]"
        return name
    except ValueError:
        pass
    label = name.removeprefix("*.")
    if name == "*" or (label and all(c.isalnum() or c in "-._" for c in label) and "*" not in label):
        return name
    raise ValueError(f"allowed host {name!r} must be a host name or address without scheme, port or path "
                     "(e.g. stream.example.com, *.example.com, 192.168.1.20)")


def default_hosts(bind: str) -> list[str]:
    """Loopback names, and the bound address; bound to every interface, this machine's names and addresses."""
    hosts = list(LOOPBACK_HOSTS)
    if bind not in WILDCARD_BINDS:
        return list(dict.fromkeys([*hosts, host_pattern(bind)]))
    hosts += [host_pattern(name) for name in {socket.gethostname(), socket.getfqdn()} if name]
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            address = ip.ip if isinstance(ip.ip, str) else ip.ip[0]  # IPv6: (address, flowinfo, scope id)
            hosts.append(host_pattern(address.split("%")[0]))
    return list(dict.fromkeys(hosts))


class HostCheckMiddleware:
    """Starlette's TrustedHostMiddleware, answering a refused ``Host`` with the API's JSON error (400)."""

    def __init__(self, app: ASGIApp, allowed_hosts: list[str]) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts
        self.check = TrustedHostMiddleware(self._admit, allowed_hosts=allowed_hosts, www_redirect=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan; and websockets (none are served) get Starlette's own refusal
            await (self.app(scope, receive, send) if scope["type"] != "websocket"
                   else self.check({**scope, _SEND: send}, receive, send))
            return
        host = dict(scope.get("headers", [])).get(b"host", b"").decode("latin-1")

        async def refuse(message: Message) -> None:  # only a refused request's response comes this way
            if message["type"] != "http.response.start":
                return
            body = json.dumps(error_body(400, "invalid_host", f"this server does not answer to Host {host[:80]!r}; "
                                         "start it with --allowed-host NAME to add a name")).encode()
            await send({"type": "http.response.start", "status": 400,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        await self.check({**scope, _SEND: send}, receive, refuse)

    async def _admit(self, scope: Scope, receive: Receive, _: Send) -> None:
        send = scope.pop(_SEND)
        await self.app(scope, receive, send)
