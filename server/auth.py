"""The bearer tokens: which requests carry one (``Authorization: Bearer <token>``, the scheme in any case), and
what each token may do.

Two scopes (docs/server.md#tokens): the full ``--token`` may do everything; the view token (``--view-token``, or
derived from the full one) may only watch a stream: ``POST /view/offer`` and the TURN credentials a viewer needs
(``GET /ice-servers``). The ``/view`` share links carry the view token, never the full one.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
from dataclasses import dataclass, field

from fastapi import Request

from server.errors import ApiError

VIEW_TOKEN_CONTEXT = b"sana-stream view token v1"  # the HMAC message a derived view token is computed from


class Scope(enum.Enum):
    VIEW = "view"  # play a stream: /view/offer, /ice-servers
    FULL = "full"  # everything


def bearer_token(header: str) -> str | None:
    """The token of an ``Authorization`` header value, or None when it is not a bearer credential. The scheme
    is case-insensitive and separated by one or more spaces (RFC 9110 11.1, 11.4; RFC 6750 2.1)."""
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def derived_view_token(token: str) -> str:
    """The view token of a full token when no ``--view-token`` is given: base64url(HMAC-SHA256(token, context)),
    32 characters. One-way: a view link does not reveal the full token."""
    digest = hmac.new(token.encode(), VIEW_TOKEN_CONTEXT, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")[:32]


def _matches(given: str, expected: str | None) -> bool:
    return expected is not None and hmac.compare_digest(given.encode(), expected.encode())


def granted_scope(token: str | None, view_token: str | None, header: str) -> Scope | None:
    """The scope ``header`` grants (compared in constant time); FULL for everyone when no token is set."""
    if token is None:
        return Scope.FULL
    given = bearer_token(header)
    if given is None:
        return None
    if _matches(given, token):
        return Scope.FULL
    return Scope.VIEW if _matches(given, view_token) else None


def require_scope(token: str | None, view_token: str | None, header: str, needed: Scope) -> None:
    """Raises ApiError 401 unless ``header`` carries a token that grants ``needed``."""
    scope = granted_scope(token, view_token, header)
    if scope is Scope.FULL or scope is needed:
        return
    detail = "this endpoint needs 'Authorization: Bearer <token>'"
    if scope is Scope.VIEW:
        detail += " with the full token: the view token only plays streams"
    raise ApiError(401, "unauthorized", detail, {"WWW-Authenticate": "Bearer"})


def sees_details(token: str | None, view_token: str | None, header: str) -> bool:
    """For ``/health``: the details (streams, rates, workers) with the full token or when none is set; a request
    without an ``Authorization`` header gets the bare liveness answer (for probes), a wrong token a 401."""
    if token is None:
        return True
    if not header:
        return False
    require_scope(token, view_token, header, Scope.FULL)
    return True


@dataclass(frozen=True)
class Authorizer:
    """A FastAPI dependency that lets a request through when it carries a token granting ``needed``; its
    ``needed`` is what /openapi.json declares (server.openapi)."""

    token: str | None = field(repr=False)
    view_token: str | None = field(repr=False)
    needed: Scope

    def __call__(self, request: Request) -> None:
        require_scope(self.token, self.view_token, request.headers.get("authorization", ""), self.needed)


def authorizer(token: str | None, view_token: str | None, needed: Scope) -> Authorizer:
    return Authorizer(token, view_token, needed)
