"""Bulk provider calls: the sends that reach an adapter together go out as one request.

A sender works on hundreds of messages at once, each in its own task, and each task calls
``adapter.send`` on its own. For a provider with a bulk API, one HTTP request per message is most of
the sender's CPU (and the provider's). :class:`BatchingAdapter` groups the requests by the adapter's
``batch_key`` and sends each group with one ``send_batch`` call, handing every caller its own result.

When a group goes (batching only when there is a queue, like Nagle's algorithm): each key has at most
``max_in_flight`` calls in flight. A request that finds a free slot goes at the end of the current
event-loop turn, with whatever else arrived in that turn, so a lone message waits for nothing. While
every slot is busy, requests gather and go together as soon as a call returns (a group that reaches
``max_batch`` is closed and waits its turn, the next request starts a new one). So under light load
nothing waits, and under load the requests of about one provider round trip share a call, with up to
``max_in_flight`` calls overlapping (one provider can take ``max_in_flight x max_batch`` messages per
round trip, not one group per linger period).
An urgent request (priority 0) never waits for a slot: it goes at the end of the turn, on its own call.
``max_in_flight=None`` never holds a group back (for providers whose pace the sender keeps: holding
their sends would release them together, beyond the pace they were let through at).

Per-message semantics stay those of the single call (each message keeps its own idempotency key and
result; circuit breakers, rate limits and ordering are decided per message before the call), so
batching is invisible above the adapter seam.
"""

from __future__ import annotations

import asyncio
from collections import deque
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
    def __init__(self, inner: BulkAdapter, max_batch: int, max_in_flight: int | None = 4) -> None:
        if max_batch < 2:
            raise ValueError("max_batch must be at least 2 (1 means: do not wrap the adapter)")
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1 (None: no limit)")
        self.inner = inner
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self._open: dict[Hashable, Waiting] = {}
        self._full: dict[Hashable, deque[Waiting]] = {}  # closed groups waiting for a slot, in order
        self._scheduled: set[Hashable] = set()  # keys whose open group goes at the end of this turn
        self._in_flight: dict[Hashable, int] = {}
        self._calls: set[asyncio.Task[None]] = set()

    def in_flight(self, key: Hashable) -> int:
        return self._in_flight.get(key, 0)

    def _has_slot(self, key: Hashable) -> bool:
        return self.max_in_flight is None or self.in_flight(key) < self.max_in_flight

    async def send(self, request: SendRequest) -> SendResult:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[SendResult] = loop.create_future()
        if request.urgent:  # a call of its own, beside the slots
            self._start(self.inner.batch_key(request), [(request, future)], slotted=False)
            return await future
        key = self.inner.batch_key(request)
        group = self._open.setdefault(key, [])
        group.append((request, future))
        if len(group) >= self.max_batch:
            del self._open[key]
            if self._has_slot(key) and key not in self._full:
                self._start(key, group)
            else:
                self._full.setdefault(key, deque()).append(group)
        elif key not in self._scheduled and self._has_slot(key):
            self._scheduled.add(key)
            loop.call_soon(self._flush_if_free, key)
        return await future

    def _flush_if_free(self, key: Hashable) -> None:
        self._scheduled.discard(key)
        if self._has_slot(key):
            self._flush(key)

    def _flush(self, key: Hashable) -> None:
        """Start the oldest waiting group of ``key``: a closed full one, else the open one."""
        waiting = self._full.get(key)
        if waiting:
            group = waiting.popleft()
            if not waiting:
                del self._full[key]
        else:
            group = self._open.pop(key, [])
        if group:
            self._start(key, group)

    def _start(self, key: Hashable, group: Waiting, slotted: bool = True) -> None:
        if slotted:
            self._in_flight[key] = self.in_flight(key) + 1
        task = asyncio.get_running_loop().create_task(self._call(group))
        self._calls.add(task)
        task.add_done_callback(lambda done: self._finished(key, done, slotted))

    def _finished(self, key: Hashable, task: asyncio.Task[None], slotted: bool) -> None:
        self._calls.discard(task)
        if not slotted:
            return
        left = self.in_flight(key) - 1
        if left > 0:
            self._in_flight[key] = left
        else:
            self._in_flight.pop(key, None)
        if (key in self._full or key in self._open) and key not in self._scheduled and self._has_slot(key):
            self._flush(key)  # what gathered while every slot was busy goes now, together

    async def _call(self, group: Waiting) -> None:
        live = [(request, future) for request, future in group if not future.done()]
        if not live:
            return  # every caller was cancelled before the group went
        requests = [request for request, _ in live]
        PROVIDER_BATCH_SIZE.labels(provider=requests[0].provider).observe(len(requests))
        try:
            if len(requests) == 1:
                results = [await self.inner.send(requests[0])]
            else:
                results = await self.inner.send_batch(requests)
            if len(results) != len(live):
                raise RuntimeError(f"{len(results)} results for a batch of {len(live)}")
        except asyncio.CancelledError:
            for _, future in live:
                future.cancel()
            raise
        except Exception as exc:
            for _, future in live:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(live, results, strict=True):
            if not future.done():  # its caller may have been cancelled meanwhile
                future.set_result(result)

    async def close(self) -> None:
        for key in {*self._full, *self._open}:  # waiting groups go now, not after closing
            for group in [*self._full.pop(key, []), self._open.pop(key, [])]:
                if group:
                    self._start(key, group)
        if self._calls:
            await asyncio.wait(list(self._calls), timeout=5)
        await self.inner.close()
