"""``python -m services.responder``: apply outcomes in batches, one transaction each, then ack."""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Sequence

import asyncpg

from services.responder.plan import Defaults, WritePlan, plan_writes
from services.responder.relay import letters_in_dlq, relay_dead_letters, resolve_in_doubt
from services.responder.settings import ResponderSettings
from services.responder.store import lock_logs, sent_attempts, write_plan
from shared.bus import wire
from shared.bus.amqp import AmqpBroker
from shared.bus.consumer import BatchConsumer
from shared.bus.topology import LANES, RESPONSES, Lane, Topology, lane_exchange
from shared.bus.transport import Broker, Channel
from shared.core.errors import BatchRefused, MessageRefused
from shared.core.models import OutcomeMessage, ReceiptMessage
from shared.core.recipients import recipient_hash
from shared.core.retry import RetryPolicy
from shared.core.routing import RoutingConfig
from shared.db.overdue import watch_overdue
from shared.db.routing_store import RoutingCache
from shared.runtime import metrics
from shared.runtime.logs import get_logger
from shared.runtime.resilience import (
    Backoff,
    cancel_within,
    finish_or_cancel,
    retry_until_stopped,
    sleep_or_stop,
)
from shared.runtime.service import Health, backends, run_service

log = get_logger("responder")
# The one settings class this process loads (`python -m services.responder`, `switchboard`).
SETTINGS = ResponderSettings

# What arrives on ``responses``: a sender's outcome, or a provider's delivery report (receipts).
Item = wire.Response

RELAY_INTERVAL_S = 2.0
# Errors that mean "the database is not there right now": wait and retry, never give the message up.
DATABASE_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
)


class Responder:
    """Applies batches of outcomes and receipts (the :class:`BatchHandler` of its consumer)."""

    def __init__(self, settings: ResponderSettings, pool: asyncpg.Pool, broker: Broker) -> None:
        self.settings = settings
        self.pool = pool
        self.broker = broker  # also the DLQ reader of the in-doubt relay pass
        self.topology = Topology(shards=settings.shards, delivery_limit=settings.delivery_limit)
        self.defaults = Defaults(
            RetryPolicy.exponential(settings.backoff_base_s, settings.backoff_cap_s, settings.backoff_jitter),
            settings.failover_after,
            settings.retry_after_tolerance_s,
            settings.max_deferrals,
        )
        self.rng = random.Random()
        self.routing = RoutingCache(
            RoutingConfig.from_chains(settings.provider_chains), settings.routing_refresh_s
        )
        max_bytes = settings.max_payload_bytes
        prefetch = {Lane.URGENT: settings.urgent_prefetch, Lane.BULK: settings.prefetch}
        # One consumer per lane, each applying its own batches: an urgent outcome never waits for a
        # bulk batch to be gathered or written.
        self.consumers = {
            lane: BatchConsumer(
                broker,
                stage="responder",
                prefetch=prefetch[lane],
                decode=lambda message: wire.decode_response(message, max_bytes),
                batch_size=settings.responder_batch_size,
                batch_wait_s=settings.responder_batch_wait_s,
            )
            for lane in LANES
        }
        self.publisher: Channel | None = None  # dead letters
        self.stopping = asyncio.Event()
        self.db_ok = True

    async def start(self) -> None:
        for lane in LANES:
            await self.consumers[lane].start(self.topology if lane is LANES[0] else None)
        self.publisher = await self.broker.channel()

    async def apply(self, items: list[Item]) -> WritePlan:
        outcomes = [i for i in items if isinstance(i, OutcomeMessage)]
        receipts = [i for i in items if isinstance(i, ReceiptMessage)]
        async with self.pool.acquire() as conn:
            routing = await self.routing.get(conn)
            async with conn.transaction():
                logs = await lock_logs(conn, [i.log_id for i in items])
                senders = await sent_attempts(conn, sorted({(r.log_id, r.attempt) for r in receipts}))
                plan = plan_writes(
                    outcomes,
                    logs,
                    self.defaults,
                    self.settings.provider_chains,
                    self.rng,
                    receipts,
                    routing,
                    senders,
                )
                await write_plan(conn, plan)
        return plan

    async def apply_until_done(self, items: list[Item]) -> WritePlan | None:
        """Apply, retrying through a database outage; ``None`` only if asked to stop meanwhile."""
        backoff = Backoff()
        while True:
            try:
                plan = await self.apply(items)
                self.db_ok = True
                return plan
            except DATABASE_UNAVAILABLE as exc:
                self.db_ok = False
                delay = backoff.next()
                log.warning("apply_failed", error=repr(exc), retry_in_s=round(delay, 2), batch=len(items))
                if await sleep_or_stop(self.stopping, delay):
                    return None

    async def apply_batch(self, items: Sequence[Item]) -> WritePlan | None:
        """The whole batch in one transaction; a refusal that is not an outage is a BatchRefused."""
        try:
            return await self.apply_until_done(list(items))
        except asyncpg.PostgresError as exc:
            raise BatchRefused(repr(exc)) from exc

    async def apply_one(self, item: Item) -> WritePlan | None:
        try:
            return await self.apply_until_done([item])
        except asyncpg.PostgresError as exc:
            raise MessageRefused(f"the database refused it: {type(exc).__name__}: {exc}") from exc

    async def after_ack(self, plans: list[WritePlan], acked: int) -> None:
        metrics.MESSAGES_OUT.labels(stage="responder").inc(acked)
        for plan in plans:
            self.report(plan)
        if any(plan.dead_letters for plan in plans):
            try:
                await self.relay()
            except Exception as exc:  # the relay loop will pick them up
                log.warning("relay_failed", error=repr(exc))

    def report(self, plan: WritePlan) -> None:
        metrics.APPLY_BATCH.observe(len(plan.attempts) + len(plan.ignored))
        for outcome, why in plan.ignored:
            log.info("outcome_ignored", log_id=outcome.log_id, attempt=outcome.attempt, why=why)
        for outcome, retry in plan.retries:
            metrics.RETRIES.labels(channel=outcome.channel, reason=outcome.outcome.value).inc()
            if retry.channel is not None:
                metrics.CHANNEL_FALLBACKS.labels(channel=outcome.channel, to_channel=retry.channel).inc()
            log.info(
                "retry_scheduled",
                log_id=outcome.log_id,
                attempt=outcome.attempt,
                recipient=recipient_hash(outcome.recipient),
                delay_s=round(retry.delay_s, 2),
                provider=retry.provider,
                error_code=outcome.error_code,
                same_key=retry.key_attempt is not None,
                to_channel=retry.channel,
            )
        for outcome, deferral in plan.deferrals:
            metrics.DEFERRALS.labels(channel=outcome.channel, reason=deferral.code).inc()
            log.info(
                "deferred",
                log_id=outcome.log_id,
                attempt=outcome.attempt,
                delay_s=round(deferral.delay_s, 2),
                reason=deferral.code,
            )
        for letter in plan.dead_letters:
            metrics.FAILURES.labels(channel=letter.channel, error_class=letter.error_class.value).inc()
        for channel, seconds in plan.send_latencies:
            metrics.END_TO_END.labels(channel=channel).observe(max(seconds, 0.0))
        for outcome in plan.receipts:
            log.info(
                "sent",
                log_id=outcome.log_id,
                attempt=outcome.attempt,
                provider=outcome.provider,
                recipient=recipient_hash(outcome.recipient),
            )
        for receipt, status in plan.applied_receipts:
            log.info(
                "receipt_applied",
                log_id=receipt.log_id,
                attempt=receipt.attempt,
                status=status.value,
                provider=receipt.provider,
                provider_status=receipt.provider_status,
            )
        for receipt, why in plan.ignored_receipts:
            log.info(
                "receipt_recorded",
                log_id=receipt.log_id,
                attempt=receipt.attempt,
                status=receipt.status.value,
                why=why,
            )

    async def relay(self, in_doubt_too: bool = False) -> None:
        """Publish the outbox's dead letters; with ``in_doubt_too`` (the periodic pass, not the one
        after each batch) also the rows a dead relay left marked."""
        assert self.publisher is not None
        lease = self.settings.dead_letter_lease_s
        while await relay_dead_letters(self.pool, self.publisher, lease_s=lease) > 0:
            pass
        if in_doubt_too:
            in_dlq = functools.partial(letters_in_dlq, self.broker)
            while await resolve_in_doubt(self.pool, self.publisher, in_dlq, lease_s=lease) > 0:
                pass

    async def relay_loop(self, stop: asyncio.Event) -> None:
        while not await sleep_or_stop(stop, RELAY_INTERVAL_S):
            try:
                await self.relay(in_doubt_too=True)
            except Exception as exc:
                log.warning("relay_failed", error=repr(exc))

    async def run(self, stop: asyncio.Event) -> None:
        """Apply batches until ``stop``: unacked messages go back to the queue when the channel closes."""
        self.stopping = stop
        relay_task = asyncio.create_task(self.relay_loop(stop))
        overdue_task = asyncio.create_task(
            watch_overdue(self.pool, stop, self.settings.receipts_overdue_every_s)
        )
        try:
            await asyncio.gather(*(consumer.run(self, stop) for consumer in self.consumers.values()))
        finally:
            await asyncio.gather(
                cancel_within(relay_task, "dead-letter relay"),
                cancel_within(overdue_task, "overdue receipts"),
            )


async def main(settings: ResponderSettings, health: Health, stop: asyncio.Event) -> None:
    async with backends(settings, "responder", stop, health, pool_size=4) as opened:
        if opened is None:
            return
        pool, connection = opened
        responder = Responder(settings, pool, AmqpBroker(connection))
        health.add("applying", lambda: responder.db_ok)  # its last batch of outcomes was written
        await retry_until_stopped("topology", responder.start, stop)
        if stop.is_set():
            return
        run = asyncio.create_task(responder.run(stop))
        lanes = await asyncio.gather(
            *(
                responder.consumers[lane].subscribe_shards(lane_exchange(RESPONSES, lane), settings, stop)
                for lane in LANES
            )
        )
        active, standby = lanes[LANES.index(Lane.BULK)]
        log.info("responder_ready", shards=active, standby=standby, lanes=[lane.value for lane in LANES])
        # A batch being written when the database stops answering is cancelled after the grace period:
        # its transaction rolls back and its messages, unacked, return to their queue.
        await finish_or_cancel(run, stop, settings.stop_grace_s, "responder batches")
        for consumer in responder.consumers.values():
            await consumer.cancel()


if __name__ == "__main__":
    run_service("responder", main, SETTINGS)
