"""DTLS with senders whose certificates are RSA: GStreamer's webrtcbin (whipclientsink/whipsink on Raspberry Pi
and embedded cameras) and media servers such as ZLMediaKit.

aiortc offers only ECDHE-ECDSA cipher suites. Answering an offer, it takes the DTLS client role (``a=setup:active``)
and the sender is the DTLS server, whose certificate decides the suite: with an RSA certificate no suite is
shared, and the handshake fails with "no shared cipher" (aiortc issue #1434; PRs #1392 and #1421 are open
upstream). ``allow_rsa_senders`` adds ECDHE-RSA-AES128-GCM-SHA256 and ECDHE-RSA-AES256-GCM-SHA384 after aiortc's
own suites, and nothing else: aiortc's own certificate stays ECDSA, so these suites only ever authenticate the
other side.

aiortc has no public hook for its cipher list, so the private ``RTCCertificate._create_ssl_context`` is wrapped:
the context it builds keeps aiortc's suites in aiortc's order and gains the two above. Should a later aiortc move
or rename it, that is logged once as a warning and RSA senders fail as before; nothing else changes.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable

from aiortc.rtcdtlstransport import RTCCertificate
from OpenSSL import SSL

logger = logging.getLogger(__name__)
RSA_SUITES = ("ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384")
_HOOK = "_create_ssl_context"  # RTCCertificate._create_ssl_context(self, srtp_profiles) -> SSL.Context
_wrapped = False


def cipher_names(ctx: SSL.Context) -> list[str]:
    """The (D)TLS 1.2 suites a context offers, in its order (TLS 1.3 suites, which DTLS 1.2 never uses, left out).
    Reading them ties a Connection to ``ctx``, after which pyOpenSSL refuses to change it."""
    return [name for name in SSL.Connection(ctx).get_cipher_list() if not name.startswith("TLS_")]


def suite_list(own: list[str]) -> bytes:
    """An OpenSSL cipher list: ``own`` suites in their order, then RSA_SUITES."""
    return ":".join([*own, *(s for s in RSA_SUITES if s not in own)]).encode()


def allow_rsa_senders() -> bool:
    """Idempotent: after it, every new aiortc DTLS context also offers RSA_SUITES. False (and one warning) when
    this aiortc's RTCCertificate has no ``_create_ssl_context`` to wrap."""
    global _wrapped
    if _wrapped:
        return True
    original: Callable[..., SSL.Context] | None = getattr(RTCCertificate, _HOOK, None)
    if original is None:
        logger.warning("this aiortc's RTCCertificate has no %s: senders with RSA certificates (GStreamer "
                       "webrtcbin, ZLMediaKit) will fail the DTLS handshake with 'no shared cipher'", _HOOK)
        return False

    suites: bytes | None = None  # aiortc's suites read once from a context of its own, plus RSA_SUITES

    @functools.wraps(original)
    def create_ssl_context(self: RTCCertificate, *args: Any, **kwargs: Any) -> SSL.Context:
        nonlocal suites
        if suites is None:
            suites = suite_list(cipher_names(original(self, *args, **kwargs)))
        ctx = original(self, *args, **kwargs)
        ctx.set_cipher_list(suites)
        return ctx

    setattr(RTCCertificate, _HOOK, create_ssl_context)
    _wrapped = True
    logger.info("DTLS: %s offered after aiortc's own suites, for senders with RSA certificates",
                ", ".join(RSA_SUITES))
    return True
