"""Whether the TURN servers work, and which of them the server's own connections use.

At start every TURN URL is tried once (a relay allocated with the configured credentials, then freed): each
failure is a warning naming the URL. aioice waits up to 5 s for a TURN server while it gathers a connection's
candidates, so a dead TURN server would make every offer 5 s slower; after a failure (at start, or a connection
that gathered no relay candidate) the server's own connections go without TURN for ``retry_after`` seconds, then
try again. A connection that got no relay is followed by one allocation that says why (unreachable, refused
credentials, or a full relay pool: 486/508). Clients are always given every configured server: their way to it may
work where the server's does not.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
import time

from aioice import stun, turn
from aiortc import RTCConfiguration

from rtc.ice import has_relay_candidate
from rtc.ice_config import IceConfig, IceScheme, IceUrl, TurnCredentials

logger = logging.getLogger(__name__)
TURN_CHECK_TIMEOUT_S = 3.0  # a TURN allocation over loopback or a LAN answers in milliseconds
TURN_RETRY_AFTER_S = 60.0  # how long the server's own connections go without a TURN server that failed


async def check_turn(url: IceUrl, credentials: TurnCredentials, timeout: float = TURN_CHECK_TIMEOUT_S) -> str | None:
    """Allocates a relay on ``url`` and frees it: None when that worked, else why not, in words."""
    context = ssl.create_default_context() if url.scheme is IceScheme.TURNS else None
    try:
        transport, _ = await asyncio.wait_for(turn.create_turn_endpoint(
            asyncio.DatagramProtocol, server_addr=(url.host, url.port), username=credentials.username,
            password=credentials.credential, ssl=context, transport=url.effective_transport.value), timeout)
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except stun.TransactionFailed as exc:
        return _refusal(exc.response.attributes.get("ERROR-CODE", (0, "error")))
    except (OSError, stun.TransactionError, ConnectionError) as exc:
        return f"unreachable ({type(exc).__name__}: {exc})" if str(exc) else f"unreachable ({type(exc).__name__})"
    transport.close()
    return None


def _refusal(code: tuple[int, str]) -> str:
    if code[0] == 401:
        return "it refused the credentials (401): --turn-secret must equal coturn's static-auth-secret " \
               "(or check --turn-username/--turn-credential)"
    if code[0] == 508:
        return "relay pool exhausted (508 Insufficient Capacity): every relay port is taken; widen coturn's " \
               "min-port..max-port or wait for relays to be freed"
    if code[0] == 486:
        return "allocation quota reached (486): coturn's user-quota or total-quota allows no more relays"
    return f"it answered {code[0]} {code[1]}"


async def check_turn_servers(config: IceConfig, timeout: float = TURN_CHECK_TIMEOUT_S) -> dict[str, str | None]:
    """Checks every TURN URL at once; logs each result (a warning naming the URL for each that fails) and returns
    {url: None or the reason}. Takes at most ``timeout`` seconds."""
    credentials = config.credentials()
    if credentials is None:
        return {}
    urls = config.turn_urls
    results = await asyncio.gather(*(check_turn(u, credentials, timeout) for u in urls))
    for url, reason in zip(urls, results):
        if reason is None:
            logger.info("TURN server %s: a relay was allocated with the configured credentials", url)
        else:
            logger.warning("TURN server %s: %s; clients that need a relay will not connect through it", url, reason)
    return {str(u): r for u, r in zip(urls, results)}


class ServerIce:
    """The ICE servers of the server's own peer connections: the STUN servers, and the first TURN server that
    passed the last check (aiortc uses one), unless TURN failed less than ``retry_after`` seconds ago."""

    def __init__(self, config: IceConfig, retry_after: float = TURN_RETRY_AFTER_S) -> None:
        self.config = config
        self.retry_after = retry_after
        self._turn = config  # the STUN servers and the TURN servers to use
        self._skip_turn_until = 0.0  # time.monotonic() before which connections go without TURN

    async def check(self, timeout: float = TURN_CHECK_TIMEOUT_S) -> dict[str, str | None]:
        if self.config.urls:
            logger.info("ICE servers: %s", ", ".join(str(u) for u in self.config.urls))
        results = await check_turn_servers(self.config, timeout)
        working = [u for u in self.config.turn_urls if results[str(u)] is None]
        if working:
            self._turn = dataclasses.replace(self.config, urls=(*self.config.stun_urls, working[0]))
        elif results:
            self._fail("no TURN server works")
        return results

    def configuration(self) -> RTCConfiguration:
        """A fresh configuration (TURN credentials minted for this connection alone) for one connection."""
        if self.config.turn_urls and time.monotonic() < self._skip_turn_until:
            return IceConfig(urls=self.config.stun_urls).rtc_configuration()
        return self._turn.rtc_configuration()

    async def gathered(self, configuration: RTCConfiguration, sdp: str, who: str,
                       timeout: float = TURN_CHECK_TIMEOUT_S) -> None:
        """After a connection gathered its candidates: a TURN server it was given but got no relay from counts as
        failed, and one more allocation there finds out why (aioice keeps the reason to itself) for the warning;
        one that gave a relay after a failure is announced as working again."""
        urls = [u for s in configuration.iceServers or [] for u in ([s.urls] if isinstance(s.urls, str) else s.urls)
                if u.startswith("turn")]
        if not urls:
            return
        if has_relay_candidate(sdp):
            if self._skip_turn_until:
                logger.info("TURN server %s gave a relay again", urls[0])
                self._skip_turn_until = 0.0
            return
        url = IceUrl.parse(urls[0])
        credentials = self.config.credentials()
        reason = None if credentials is None else await check_turn(url, credentials, timeout)
        self._fail(f"{who}: no relay candidate from {url}: {reason or 'a relay allocated just after worked'}")

    def _fail(self, reason: str) -> None:
        self._skip_turn_until = time.monotonic() + self.retry_after
        logger.warning("%s; the server's own connections go without TURN for %g s, then try it again", reason,
                       self.retry_after)
