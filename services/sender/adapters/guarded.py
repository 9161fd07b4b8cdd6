"""HTTP to tenant-given URLs (webhooks) under the outbound policy (shared/net/outbound.py).

Every socket is checked by the address it is about to connect to, whatever the URL said (a numeric
host in any form, a name resolved now, a name that resolved elsewhere at ingest): that is where DNS
rebinding is caught. Answers are read up to ``max_response_bytes``, the rest is never read.

Tenants with an allowlist get a connection pool of their own, so that a connection opened to an
internal address allowed for one tenant is never reused for another.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping, Sequence

from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver

from services.sender.adapters.transport import AiohttpTransport, HttpRequest, HttpResponse
from shared.net.outbound import REFUSED_MARKER, Network, allowed_for, connect_refusal
from shared.runtime.logs import get_logger

log = get_logger("sender.outbound")

MAX_WEBHOOK_RESPONSE_BYTES = 64 * 1024


class AddressRefused(OSError):
    """The outbound policy refused the address a socket was about to connect to."""


def guarded_socket_factory(allowed: Sequence[Network]) -> Callable[[AddrInfoType], socket.socket]:
    def factory(addr_info: AddrInfoType) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        why = connect_refusal(str(sockaddr[0]), allowed)
        if why is not None:
            log.warning("outbound_refused", address=str(sockaddr[0]), reason=why)
            raise AddressRefused(f"{why} {REFUSED_MARKER}")
        return socket.socket(family=family, type=type_, proto=proto)

    return factory


class GuardedTransport:
    def __init__(
        self,
        timeout_s: float,
        concurrency: int,
        allowlist: Mapping[str, Sequence[Network]] | None = None,
        max_response_bytes: int = MAX_WEBHOOK_RESPONSE_BYTES,
        resolver: AbstractResolver | None = None,  # tests: a name that resolves where they say
    ) -> None:
        self.resolver = resolver
        self.timeout_s = timeout_s
        self.concurrency = concurrency
        self.allowlist = dict(allowlist or {})
        self.max_response_bytes = max_response_bytes
        self._pools: dict[tuple[Network, ...], AiohttpTransport] = {}

    def _pool(self, tenant: str) -> AiohttpTransport:
        allowed = allowed_for(self.allowlist, tenant)
        pool = self._pools.get(allowed)
        if pool is None:
            pool = self._pools[allowed] = AiohttpTransport(
                self.timeout_s,
                self.concurrency,
                max_response_bytes=self.max_response_bytes,
                socket_factory=guarded_socket_factory(allowed),
                resolver=self.resolver,
            )
        return pool

    async def request(self, request: HttpRequest) -> HttpResponse:
        return await self._pool(request.tenant).request(request)

    async def close(self) -> None:
        for pool in self._pools.values():
            await pool.close()
        self._pools.clear()
