"""HTTP at the edge: a real transport (aiohttp) and a fake one for tests (httpx ``MockTransport`` style).

Adapters speak to :class:`HttpTransport` only, so their request building and answer mapping are
tested without sockets, and against the real mock provider with the real transport.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
import orjson


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    url: str
    headers: dict[str, str]
    content: bytes


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    content: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)  # names in lower case

    def json(self) -> object:
        try:
            return orjson.loads(self.content) if self.content else None
        except orjson.JSONDecodeError:
            return None


class TransportError(Exception):
    """No HTTP answer at all: ``code`` is TIMEOUT or CONNECTION_ERROR."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class HttpTransport(Protocol):
    async def request(self, request: HttpRequest) -> HttpResponse: ...

    async def close(self) -> None: ...


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class AiohttpTransport:
    def __init__(self, timeout_s: float, concurrency: int) -> None:
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            connector=aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency),
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
                content = await response.read()
                headers = {k.lower(): v for k, v in response.headers.items()}
                return HttpResponse(response.status, content, headers)
        except TimeoutError as exc:
            raise TransportError("TIMEOUT", "provider did not answer in time") from exc
        except aiohttp.ClientError as exc:
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
