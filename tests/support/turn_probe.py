"""A TURN client that asks coturn for what a misuser would: a TCP relay (RFC 6062), permissions toward any
address, relays until the quota stops it. aioice's own client only ever asks for UDP relays to media peers; this
reuses its protocol classes (long-term credentials, nonce handling) and sends the requests itself."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aioice import stun, turn

from rtc.ice_config import TurnCredentials

TCP_TRANSPORT = 0x06000000  # REQUESTED-TRANSPORT: protocol 6 in the first byte (RFC 6062 5.1)
UDP_TRANSPORT = turn.UDP_TRANSPORT


@contextlib.asynccontextmanager
async def turn_session(port: int, credentials: TurnCredentials, over: str = "udp"
                       ) -> AsyncIterator[turn.TurnClientProtocol]:
    """A control connection to the coturn on 127.0.0.1:``port`` over ``over`` (udp or tcp); closed on exit (which
    frees its allocation)."""
    loop = asyncio.get_running_loop()
    server = ("127.0.0.1", port)
    protocol: turn.TurnClientProtocol
    args = dict(username=credentials.username, password=credentials.credential, lifetime=600,
                channel_refresh_time=500)
    if over == "tcp":
        transport, protocol = await loop.create_connection(lambda: turn.TurnClientTcpProtocol(server, **args),
                                                           host=server[0], port=server[1])
    else:
        transport, protocol = await loop.create_datagram_endpoint(lambda: turn.TurnClientUdpProtocol(server, **args),
                                                                  remote_addr=server)
    try:
        yield protocol
    finally:
        transport.close()


async def answer(protocol: turn.TurnClientProtocol, request: stun.Message) -> int | None:
    """None when coturn granted ``request``, else its error code (403 forbidden, 442 unsupported transport,
    486 quota reached, 508 no capacity, ...)."""
    try:
        await asyncio.wait_for(protocol.request_with_retry(request), 10)
    except stun.TransactionFailed as exc:
        return int(exc.response.attributes["ERROR-CODE"][0])
    return None


async def allocate(protocol: turn.TurnClientProtocol, transport: int = UDP_TRANSPORT) -> int | None:
    request = stun.Message(message_method=stun.Method.ALLOCATE, message_class=stun.Class.REQUEST)
    request.attributes["LIFETIME"] = 600
    request.attributes["REQUESTED-TRANSPORT"] = transport
    return await answer(protocol, request)


async def permit(protocol: turn.TurnClientProtocol, peer: tuple[str, int]) -> int | None:
    """CreatePermission toward ``peer`` on an allocation (coturn checks allowed/denied-peer-ip here)."""
    request = stun.Message(message_method=stun.Method.CREATE_PERMISSION, message_class=stun.Class.REQUEST)
    request.attributes["XOR-PEER-ADDRESS"] = peer
    return await answer(protocol, request)
