"""``python -m services.poller``: claim per lane, publish with confirms, reclaim expired leases, keep each
lane's broker backlog within its time budget, wake on LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from services.poller.budget import LaneBudget, claim_room, poll_again
from services.poller.claims import ClaimedLog, claim, expire_leases, reclaim_expired
from services.poller.dispatch import publish_order, to_dispatch
from services.poller.settings import PollerSettings
from services.poller.wakeup import DueSignal
from shared.bus import wire
from shared.bus.amqp import AmqpBroker
from shared.bus.topology import DISPATCH, LANES, Lane, Topology, lane_exchange, lane_of, lane_queue
from shared.bus.transport import Broker, Channel
from shared.core.models import utcnow
from shared.runtime import metrics
from shared.runtime.logs import get_logger
from shared.runtime.resilience import Backoff, finish_or_cancel, retry_until_stopped, sleep_or_stop
from shared.runtime.service import Health, backends, run_service

log = get_logger("poller")
# The one settings class this process loads (`python -m services.poller`, `switchboard`).
SETTINGS = PollerSettings


# Between two measurements of a lane's depth the poller counts what it published on top of the last
# one (an upper bound: consumers only take messages away), so most cycles ask the broker nothing: it
# asks at most every DEPTH_REFRESH_S, and only when that bound is above the lane's refill level (or the
# last answer is older than DEPTH_MAX_AGE_S: the drain rate and the depth gauges stay fresh).
DEPTH_REFRESH_S = 0.1
DEPTH_MAX_AGE_S = 2.0


class Poller:
    def __init__(
        self,
        settings: PollerSettings,
        pool: asyncpg.Pool,
        broker: Broker,
        signal: DueSignal | None = None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.signal = signal
        self.topology = Topology(shards=settings.shards, delivery_limit=settings.delivery_limit)
        self.broker = broker
        self.publish_channel: Channel | None = None
        self.depth_channel: Channel | None = None
        self.lanes = [lane for lane in LANES if lane.value in settings.lanes]
        self.budgets = {
            lane: LaneBudget(
                settings.dispatch_budget_s, settings.dispatch_min_backlog, settings.max_dispatch_depth
            )
            for lane in LANES
        }
        self.depths: dict[Lane, int] = dict.fromkeys(LANES, 0)
        self.depths_at: dict[Lane, float] = dict.fromkeys(LANES, -DEPTH_REFRESH_S)
        for lane in self.lanes:  # a served lane's reclaim counter reads 0, not "no data", until it counts
            metrics.RECLAIMED.labels(lane=lane.value)

    async def open_channels(self) -> None:
        self.publish_channel = await self.broker.channel()
        await self.publish_channel.declare(self.topology)
        self.depth_channel = await self.broker.channel()

    async def lane_depth(self, lane: Lane) -> int:
        assert self.depth_channel is not None
        total = 0
        for shard in range(self.settings.shards):
            name = lane_queue(DISPATCH, lane, shard)
            count = (await self.depth_channel.queue_depth(name)).ready
            metrics.QUEUE_DEPTH.labels(queue=name).set(count)
            total += count
        return total

    async def measure(self, lane: Lane) -> None:
        now = time.monotonic()
        age = now - self.depths_at[lane]
        budget = self.budgets[lane]
        if age < DEPTH_REFRESH_S or (age < DEPTH_MAX_AGE_S and not budget.needs_depth(self.depths[lane])):
            return
        depth = await self.lane_depth(lane)
        budget.observe(depth, now)
        self.depths[lane] = depth
        self.depths_at[lane] = now
        metrics.LANE_DRAIN_RATE.labels(lane=lane.value).set(round(budget.rate, 1))
        metrics.LANE_BACKLOG_ALLOWED.labels(lane=lane.value).set(budget.allowed())

    async def publish(self, rows: list[ClaimedLog]) -> int:
        """Publish ``rows`` into their lanes; those the broker does not confirm get their lease expired."""
        channel = self.publish_channel
        assert channel is not None
        claimed_at = utcnow()
        by_lane: dict[Lane, list[ClaimedLog]] = {}
        for row in publish_order(rows):
            by_lane.setdefault(lane_of(row.priority), []).append(row)
        lanes = list(by_lane)
        outcomes = await asyncio.gather(
            *(
                channel.publish(
                    lane_exchange(DISPATCH, lane),
                    [wire.dispatch(to_dispatch(r, claimed_at)) for r in by_lane[lane]],
                )
                for lane in lanes
            )
        )
        failed: list[int] = []
        for lane, results in zip(lanes, outcomes, strict=True):
            lane_rows = by_lane[lane]
            published_ids = [row.id for row, error in zip(lane_rows, results, strict=True) if error is None]
            lane_failed = [row.id for row, error in zip(lane_rows, results, strict=True) if error is not None]
            self.budgets[lane].published(len(published_ids))
            self.depths[lane] += len(published_ids)
            if published_ids:
                log.info("published", lane=lane.value, count=len(published_ids), log_ids=published_ids)
            if lane_failed:
                first = next(e for e in results if e is not None)
                log.warning("publish_failed", lane=lane.value, count=len(lane_failed), error=repr(first))
                failed.extend(lane_failed)
        if failed:
            async with self.pool.acquire() as conn:
                await expire_leases(conn, failed)
        published = len(rows) - len(failed)
        metrics.MESSAGES_OUT.labels(stage="poller").inc(published)
        return published

    async def poll_once(self, lane: Lane) -> bool:
        """One cycle of ``lane``; True when it filled the lane's room (poll again at once).

        Within the room the lane's budget leaves (at most ``batch_size``), the lane's own expired leases
        come first (older work, re-published with the same attempt), then new claims with what is left.
        """
        s = self.settings
        await self.measure(lane)
        room = min(self.budgets[lane].room(self.depths[lane]), s.batch_size)
        if lane is Lane.BULK:
            metrics.BACKPRESSURE.set(1 if room <= 0 else 0)
        reclaimed: list[ClaimedLog] = []
        rows: list[ClaimedLog] = []
        if room > 0:
            async with self.pool.acquire() as conn:
                reclaimed = await reclaim_expired(conn, lane=lane, limit=room, lease_s=s.lease_s)
                rows = await claim(
                    conn,
                    lane=lane,
                    batch_size=claim_room(room, len(reclaimed)),
                    lease_s=s.lease_s,
                    ordering=s.ordering,
                    starvation_after_s=s.starvation_after_s,
                    starvation_share=s.starvation_share,
                )
        if reclaimed:
            metrics.RECLAIMED.labels(lane=lane.value).inc(len(reclaimed))
            log.info(
                "leases_reclaimed",
                lane=lane.value,
                count=len(reclaimed),
                log_ids=[r.id for r in reclaimed[:20]],
            )
        metrics.CLAIM_BATCH.observe(len(rows))
        metrics.MESSAGES_IN.labels(stage="poller").inc(len(rows))
        batch = reclaimed + rows
        if batch:
            await self.publish(batch)
        return poll_again(room, len(batch))

    async def run(self, stop: asyncio.Event) -> None:
        """One loop per lane, side by side: a long bulk claim never delays an urgent one."""
        await asyncio.gather(*(self.run_lane(lane, stop) for lane in self.lanes))

    async def run_lane(self, lane: Lane, stop: asyncio.Event) -> None:
        backoff = Backoff()
        while not stop.is_set():
            started = time.monotonic()
            if self.signal is not None and lane is self.lanes[-1]:  # one lane (re)opens the LISTEN
                await self.signal.ensure_listening()
            try:
                more = await self.poll_once(lane)
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = backoff.next()
                log.warning("poll_failed", lane=lane.value, error=repr(exc), retry_in_s=round(delay, 2))
                if await sleep_or_stop(stop, delay):
                    break
                await self._reopen_if_needed()
                continue
            if more:
                continue
            # Batching under load: at most one cycle per poll_min_interval_s however often logs arrive.
            elapsed = time.monotonic() - started
            if elapsed < self.settings.poll_min_interval_s and await sleep_or_stop(
                stop, self.settings.poll_min_interval_s - elapsed
            ):
                break
            remaining = self.settings.poll_interval_s - (time.monotonic() - started)
            if self.signal is not None:
                await self.signal.wait(lane, remaining, stop)
            else:
                await sleep_or_stop(stop, max(remaining, 0.0))

    async def _reopen_if_needed(self) -> None:
        for channel in (self.publish_channel, self.depth_channel):
            if channel is None or channel.is_closed:
                try:
                    await self.open_channels()
                except Exception as exc:
                    log.warning("channel_reopen_failed", error=repr(exc))
                return


async def main(settings: PollerSettings, health: Health, stop: asyncio.Event) -> None:
    async with backends(settings, "poller", stop, health, pool_size=4) as opened:
        if opened is None:
            return
        pool, connection = opened
        signal = DueSignal(settings.database_dsn())
        poller = Poller(settings, pool, AmqpBroker(connection), signal)
        await retry_until_stopped("topology", poller.open_channels, stop)
        log.info(
            "poller_ready",
            ordering=settings.ordering.value,
            batch_size=settings.batch_size,
            lanes=[lane.value for lane in poller.lanes],
            budget_s=settings.dispatch_budget_s,
        )
        try:
            # A lane checks ``stop`` between cycles; a cycle stuck on a database or broker that stopped
            # answering is cancelled after the grace period. Safe: a claim is one transaction (rolled
            # back), and claimed rows not yet confirmed by the broker are re-published with the same
            # attempt when their lease runs out.
            await finish_or_cancel(poller.run(stop), stop, settings.stop_grace_s, "poller lanes")
        finally:
            await signal.close()


if __name__ == "__main__":
    run_service("poller", main, SETTINGS)
