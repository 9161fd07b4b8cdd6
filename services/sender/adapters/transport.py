"""HTTP at the edge: a real transport (aiohttp) and a fake one for tests (httpx ``MockTransport`` style).

Adapters speak to :class:`HttpTransport` only, so their request building and answer mapping are
tested without sockets, and against the real mock provider with the real transport.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
import orjson
from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver

from shared.core.errors import DestinationRefused, TransientProviderError
from shared.net.outbound import REFUSED_MARKER


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    url: str
    headers: dict[str, str]
    content: bytes
    tenant: str = ""  # whose URL it is: the outbound policy's allowlist is per tenant


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    content: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)  # names in lower case
    truncated: bool = False  # the body went past the transport's limit and was cut there

    def json(self) -> object:
        try:
            return orjson.loads(self.content) if self.content else None
        except orjson.JSONDecodeError:
            return None


class TransportError(TransientProviderError):
    """No HTTP answer at all: ``code`` is TIMEOUT, CONNECTION_ERROR (no connection, nothing sent) or
    CONNECTION_LOST (lost once connected). An address the outbound policy refuses at connect time is a
    :class:`DestinationRefused` (``ADDRESS_NOT_ALLOWED``) instead.

    ``written`` is True when the request may have reached the provider (connected, and no answer came
    or the connection broke): the outcome is unknown, not a failure (see docs/design-notes.md).
    """

    def __init__(self, code: str, message: str = "", written: bool = False) -> None:
        super().__init__(code, message)
        self.written = written


class HttpTransport(Protocol):
    async def request(self, request: HttpRequest) -> HttpResponse: ...

    async def close(self) -> None: ...


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


MAX_PROVIDER_RESPONSE_BYTES = 1024 * 1024
READ_CHUNK = 16 * 1024


async def read_capped(content: aiohttp.StreamReader, limit: int) -> tuple[bytes, bool]:
    """At most ``limit`` bytes of a body, and whether there was more (the rest is never read)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in content.iter_chunked(READ_CHUNK):
        if size + len(chunk) > limit:
            chunks.append(chunk[: limit - size])
            return b"".join(chunks), True
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks), False


def _refused_by_policy(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if REFUSED_MARKER in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class AiohttpTransport:
    def __init__(
        self,
        timeout_s: float,
        concurrency: int,
        max_response_bytes: int = MAX_PROVIDER_RESPONSE_BYTES,
        socket_factory: Callable[[AddrInfoType], socket.socket] | None = None,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self.max_response_bytes = max_response_bytes
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            connector=aiohttp.TCPConnector(
                limit=concurrency,
                limit_per_host=concurrency,
                socket_factory=socket_factory,
                resolver=resolver,
            ),
        )

    async def request(self, request: HttpRequest) -> HttpResponse:
        try:
            async with self.session.request(
                request.method,
                request.url,
                data=request.content,
                headers=request.headers,
                allow_redirects=False,
            ) as response:
                content, truncated = await read_capped(response.content, self.max_response_bytes)
                headers = {k.lower(): v for k, v in response.headers.items()}
                return HttpResponse(response.status, content, headers, truncated)
        except aiohttp.ConnectionTimeoutError as exc:  # no connection in time: nothing was sent
            raise TransportError("TIMEOUT", "no connection to the provider in time") from exc
        except TimeoutError as exc:
            raise TransportError("TIMEOUT", "provider did not answer in time", written=True) from exc
        except (aiohttp.ClientError, OSError) as exc:
            if _refused_by_policy(exc):
                raise DestinationRefused("ADDRESS_NOT_ALLOWED", str(exc)[:300]) from exc
            if isinstance(exc, aiohttp.ClientError) and not isinstance(
                exc, aiohttp.ClientConnectorError | aiohttp.InvalidURL
            ):  # connected, then lost: the request may have been written
                raise TransportError("CONNECTION_LOST", repr(exc)[:300], written=True) from exc
            raise TransportError("CONNECTION_ERROR", repr(exc)[:300]) from exc

    async def close(self) -> None:
        await self.session.close()
        await asyncio.sleep(0)


Handler = Callable[[HttpRequest], HttpResponse | Awaitable[HttpResponse]]


class MockTransport:
    """Answers every request with ``handler(request)`` and keeps the requests for assertions."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[HttpRequest] = []

    async def request(self, request: HttpRequest) -> HttpResponse:
        self.requests.append(request)
        answer = self.handler(request)
        if inspect.isawaitable(answer):
            answer = await answer
        assert isinstance(answer, HttpResponse)
        return answer

    async def close(self) -> None:
        return None
