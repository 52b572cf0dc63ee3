"""The bearer token: which requests carry it (``Authorization: Bearer <token>``, the scheme in any case)."""

from __future__ import annotations

import hmac

from server.errors import ApiError


def bearer_token(header: str) -> str | None:
    """The token of an ``Authorization`` header value, or None when it is not a bearer credential. The scheme
    is case-insensitive and separated by one or more spaces (RFC 9110 11.1, 11.4; RFC 6750 2.1)."""
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def require_token(expected: str | None, header: str) -> None:
    """Raises ApiError 401 unless ``header`` carries ``expected`` (compared in constant time); no-op without one."""
    if expected is None:
        return
    given = bearer_token(header)
    if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError(401, "unauthorized", "this endpoint needs 'Authorization: Bearer <token>'",
                       {"WWW-Authenticate": "Bearer"})
