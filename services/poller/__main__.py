"""``python -m services.poller``: claim, publish with confirms, reclaim expired leases, apply backpressure."""

from __future__ import annotations

import asyncio
import time

import asyncpg
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from services.poller.claims import ClaimedLog, claim, expire_leases, reclaim_expired
from services.poller.dispatch import publish_order, to_dispatch
from shared import metrics
from shared.bus import wire
from shared.bus.amqp import AmqpBroker
from shared.bus.transport import Channel
from shared.logs import get_logger
from shared.models import utcnow
from shared.resilience import Backoff, retry_until_stopped, sleep_or_stop
from shared.runtime import Health, backends, run_service
from shared.settings import Settings
from shared.topology import DISPATCH_EXCHANGE, Topology, shard_queue

log = get_logger("poller")


class Poller:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, connection: AbstractRobustConnection) -> None:
        self.settings = settings
        self.pool = pool
        self.connection = connection
        self.topology = Topology(shards=settings.shards, delivery_limit=settings.delivery_limit)
        self.broker = AmqpBroker(connection)
        self.publish_channel: Channel | None = None
        self.depth_channel: AbstractChannel | None = None

    async def open_channels(self) -> None:
        self.publish_channel = await self.broker.channel()
        await self.publish_channel.declare(self.topology)
        self.depth_channel = await self.connection.channel()

    async def dispatch_depth(self) -> int:
        assert self.depth_channel is not None
        total = 0
        for shard in range(self.settings.shards):
            name = shard_queue(DISPATCH_EXCHANGE, shard)
            queue = await self.depth_channel.declare_queue(name, passive=True)
            count = queue.declaration_result.message_count or 0
            metrics.QUEUE_DEPTH.labels(queue=name).set(count)
            total += count
        return total

    async def publish(self, rows: list[ClaimedLog]) -> int:
        """Publish ``rows``; those the broker does not confirm get their lease expired for a retry."""
        assert self.publish_channel is not None
        claimed_at = utcnow()
        ordered = publish_order(rows)
        envelopes = [wire.dispatch(to_dispatch(row, claimed_at)) for row in ordered]
        results = await self.publish_channel.publish(DISPATCH_EXCHANGE, envelopes)
        failed = [row.id for row, error in zip(ordered, results, strict=True) if error is not None]
        published_ids = [row.id for row, error in zip(ordered, results, strict=True) if error is None]
        if published_ids:
            log.info("published", count=len(published_ids), log_ids=published_ids)
        if failed:
            first = next(e for e in results if e is not None)
            log.warning("publish_failed", count=len(failed), error=repr(first))
            async with self.pool.acquire() as conn:
                await expire_leases(conn, failed)
        published = len(rows) - len(failed)
        metrics.MESSAGES_OUT.labels(stage="poller").inc(published)
        return published

    async def poll_once(self) -> int:
        """One cycle; returns how many rows it handled (0 means: nothing due, sleep)."""
        s = self.settings
        depth = await self.dispatch_depth()
        if depth >= s.max_dispatch_depth:
            metrics.BACKPRESSURE.set(1)
            return 0
        metrics.BACKPRESSURE.set(0)
        room = min(s.batch_size, s.max_dispatch_depth - depth)
        async with self.pool.acquire() as conn:
            reclaimed = await reclaim_expired(conn, batch_size=room, lease_s=s.lease_s)
            rows = (
                await claim(
                    conn,
                    batch_size=max(room - len(reclaimed), 0),
                    lease_s=s.lease_s,
                    ordering=s.ordering,
                    starvation_after_s=s.starvation_after_s,
                    starvation_share=s.starvation_share,
                )
                if room > len(reclaimed)
                else []
            )
        if reclaimed:
            metrics.RECLAIMED.inc(len(reclaimed))
            log.info("leases_reclaimed", count=len(reclaimed), log_ids=[r.id for r in reclaimed[:20]])
        metrics.CLAIM_BATCH.observe(len(rows))
        metrics.MESSAGES_IN.labels(stage="poller").inc(len(rows))
        batch = reclaimed + rows
        if batch:
            await self.publish(batch)
        return len(batch)

    async def run(self, stop: asyncio.Event) -> None:
        backoff = Backoff()
        while not stop.is_set():
            started = time.monotonic()
            try:
                handled = await self.poll_once()
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = backoff.next()
                log.warning("poll_failed", error=repr(exc), retry_in_s=round(delay, 2))
                if await sleep_or_stop(stop, delay):
                    break
                await self._reopen_if_needed()
                continue
            if handled < self.settings.batch_size:
                elapsed = time.monotonic() - started
                await sleep_or_stop(stop, max(self.settings.poll_interval_s - elapsed, 0.0))

    async def _reopen_if_needed(self) -> None:
        for channel in (self.publish_channel, self.depth_channel):
            if channel is None or channel.is_closed:
                try:
                    await self.open_channels()
                except Exception as exc:
                    log.warning("channel_reopen_failed", error=repr(exc))
                return


async def main(settings: Settings, health: Health, stop: asyncio.Event) -> None:
    async with backends(settings, "poller", stop, health, pool_size=4) as opened:
        if opened is None:
            return
        pool, connection = opened
        poller = Poller(settings, pool, connection)
        await retry_until_stopped("topology", poller.open_channels, stop)
        log.info("poller_ready", ordering=settings.ordering.value, batch_size=settings.batch_size)
        await poller.run(stop)


if __name__ == "__main__":
    run_service("poller", main)
