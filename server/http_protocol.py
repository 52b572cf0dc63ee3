"""uvicorn's h11 protocol with two limits uvicorn lacks, so slow or idle clients cannot use up file descriptors.

uvicorn starts no timer when a connection opens, and restarts its keep-alive timer on every byte received, so a
client that connects and sends nothing, or sends its headers a byte a second, holds a socket for ever. Here a
connection must deliver each request's head within ``request_timeout`` seconds of connecting or of its previous
response, and connections beyond ``max_connections`` are closed as soon as they are accepted. (The body has its
own deadline: ``server.body_limit``.)

The subclass uses uvicorn's ``H11Protocol`` attributes ``cycle``, ``connections`` and ``transport`` and its
``handle_events`` and ``on_response_complete`` hooks. Should a later uvicorn change them, ``guarded_protocol``
logs a warning and returns uvicorn's protocol unchanged.
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger(__name__)
_HOOKS = ("handle_events", "on_response_complete", "connection_made", "connection_lost")


def guarded_protocol(request_timeout: float, max_connections: int) -> type[asyncio.Protocol]:
    """uvicorn's ``H11Protocol`` with a deadline for each request head and a cap on open connections."""
    if not all(callable(getattr(H11Protocol, hook, None)) for hook in _HOOKS):
        logger.warning("this uvicorn's H11Protocol lacks one of %s: no request-head deadline and no connection "
                       "cap; slow or idle clients can hold sockets", ", ".join(_HOOKS))
        return H11Protocol

    class GuardedH11Protocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None
        _refusing = False  # class-wide: log once per run of refused connections

        def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
            super().connection_made(transport)  # type: ignore[arg-type]
            if len(self.connections) > max_connections:
                if not GuardedH11Protocol._refusing:
                    logger.warning("closing new connections: %d are open (max_connections)", max_connections)
                GuardedH11Protocol._refusing = True
                self.transport.close()
                return
            GuardedH11Protocol._refusing = False
            self._await_head()

        def handle_events(self) -> None:
            cycle = self.cycle
            super().handle_events()
            if self.cycle is not cycle:  # a request's head arrived
                self._stop_timer()

        def on_response_complete(self) -> None:
            self._await_head()  # first: a pipelined request that starts below stops it again
            super().on_response_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_timer()
            super().connection_lost(exc)

        def _await_head(self) -> None:
            self._stop_timer()
            self._head_timer = self.loop.call_later(request_timeout, self._head_overdue)

        def _stop_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_overdue(self) -> None:
            self._head_timer = None
            if not self.transport.is_closing():
                logger.debug("closing a connection that sent no request head within %g s", request_timeout)
                self.transport.close()

    return GuardedH11Protocol
