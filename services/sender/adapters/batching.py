"""Bulk provider calls: the sends that reach an adapter together go out as one request.

A sender works on hundreds of messages at once, each in its own task, and each task calls
``adapter.send`` on its own. For a provider with a bulk API, one HTTP request per message is most of
the sender's CPU (and the provider's). :class:`BatchingAdapter` groups the requests by the adapter's
``batch_key`` and sends each group with one ``send_batch`` call, handing every caller its own result.

When a group goes: at most one flush per key every ``linger_s``. A request that finds the key idle
(its last flush ``linger_s`` or more ago) goes at the end of the current event-loop turn, with
whatever else arrived in that turn, so a lone message waits for nothing; under a steady stream the
requests of each ``linger_s`` go together, so a request waits at most ``linger_s``; a group that
reaches ``max_batch`` goes at once. Per-message semantics stay those of the single call (each
message keeps its own idempotency key and result; circuit breakers, rate limits and ordering are
decided per message before the call), so batching is invisible above the adapter seam.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Protocol

from services.sender.adapters.base import SendRequest, SendResult
from services.sender.metrics import PROVIDER_BATCH_SIZE


class BulkAdapter(Protocol):
    async def send(self, request: SendRequest) -> SendResult: ...

    def batch_key(self, request: SendRequest) -> Hashable: ...

    async def send_batch(self, requests: list[SendRequest]) -> list[SendResult]: ...

    async def close(self) -> None: ...


Waiting = list[tuple[SendRequest, "asyncio.Future[SendResult]"]]


class BatchingAdapter:
    def __init__(self, inner: BulkAdapter, max_batch: int, linger_s: float = 0.0) -> None:
        if max_batch < 2:
            raise ValueError("max_batch must be at least 2 (1 means: do not wrap the adapter)")
        self.inner = inner
        self.max_batch = max_batch
        self.linger_s = linger_s
        self._open: dict[Hashable, Waiting] = {}
        self._calls: set[asyncio.Task[None]] = set()
        self._last_flush: dict[Hashable, float] = {}

    async def send(self, request: SendRequest) -> SendResult:
        loop = asyncio.get_running_loop()
        key = self.inner.batch_key(request)
        group = self._open.get(key)
        if group is None:
            group = self._open[key] = []
            wait = self._last_flush.get(key, -self.linger_s) + self.linger_s - loop.time()
            if wait > 0:
                loop.call_later(wait, self._flush, key, group)
            else:
                loop.call_soon(self._flush, key, group)
        future: asyncio.Future[SendResult] = loop.create_future()
        group.append((request, future))
        if len(group) >= self.max_batch:
            self._flush(key, group)
        return await future

    def _flush(self, key: Hashable, group: Waiting) -> None:
        if self._open.get(key) is not group:
            return  # already sent (it filled up before its turn ended)
        del self._open[key]
        self._last_flush[key] = asyncio.get_running_loop().time()
        task = asyncio.get_running_loop().create_task(self._call(group))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def _call(self, group: Waiting) -> None:
        requests = [request for request, _ in group]
        PROVIDER_BATCH_SIZE.labels(provider=requests[0].provider).observe(len(requests))
        try:
            if len(requests) == 1:
                results = [await self.inner.send(requests[0])]
            else:
                results = await self.inner.send_batch(requests)
            if len(results) != len(group):
                raise RuntimeError(f"{len(results)} results for a batch of {len(group)}")
        except asyncio.CancelledError:
            for _, future in group:
                future.cancel()
            raise
        except Exception as exc:
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(group, results, strict=True):
            if not future.done():  # its caller may have been cancelled meanwhile
                future.set_result(result)

    async def close(self) -> None:
        for key, group in list(self._open.items()):  # lingering groups go now, not after closing
            self._flush(key, group)
        if self._calls:
            await asyncio.wait(list(self._calls), timeout=5)
        await self.inner.close()
