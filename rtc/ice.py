"""ICE host candidates on loopback.

aioice leaves 127.0.0.1 out of its host candidates, so on a machine (or network namespace) with only a
loopback interface a server bound to 127.0.0.1 offers no candidate at all and no peer can connect. When the
server is bound to loopback its clients are on this machine, so loopback is added to aioice's list.
"""

from __future__ import annotations

import logging
from typing import Callable

import aioice.ice

logger = logging.getLogger(__name__)
_original: Callable[[bool, bool], list[str]] | None = None


def include_loopback_candidates() -> None:
    """Idempotent: after it, aioice offers 127.0.0.1 as well as the machine's other addresses."""
    global _original
    if _original is not None:
        return
    _original = aioice.ice.get_host_addresses

    def with_loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        assert _original is not None
        addresses = list(_original(use_ipv4, use_ipv6))
        if use_ipv4 and "127.0.0.1" not in addresses:
            addresses.append("127.0.0.1")
        return addresses

    aioice.ice.get_host_addresses = with_loopback
    logger.info("ICE: 127.0.0.1 added to the host candidates (server bound to loopback)")
