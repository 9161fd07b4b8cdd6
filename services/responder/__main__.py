"""``python -m services.responder``: apply outcomes in batches, one transaction each, then ack."""

from __future__ import annotations

import asyncio
import functools
import random

import asyncpg
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage, AbstractRobustConnection

from services.responder.plan import WritePlan, plan_writes
from services.responder.relay import letters_in_dlq, relay_dead_letters, resolve_in_doubt
from services.responder.store import lock_logs, write_plan
from shared import metrics
from shared.amqp import confirming_channel, declare, queue_has_consumer
from shared.backoff import BackoffPolicy
from shared.errors import MessageError
from shared.logs import get_logger
from shared.models import OutcomeMessage, ReceiptMessage, decode
from shared.poison import reject_poison
from shared.recipients import recipient_hash
from shared.resilience import Backoff, retry_until_stopped, sleep_or_stop
from shared.routing import RoutingConfig
from shared.routing_store import RoutingCache
from shared.runtime import Health, backends, run_service, subscribe_shards
from shared.settings import Settings
from shared.topology import (
    DEAD_LETTER_EXCHANGE,
    MESSAGE_TYPE_RECEIPT,
    RESPONSES_EXCHANGE,
    Topology,
    shard_queue,
)

log = get_logger("responder")
# What arrives on ``responses``: a sender's outcome, or a provider's delivery report (receipts).
Item = OutcomeMessage | ReceiptMessage


def decode_item(message: AbstractIncomingMessage, max_bytes: int) -> Item:
    """By the AMQP ``type`` property; without one, by the body's ``kind`` field."""
    if message.type == MESSAGE_TYPE_RECEIPT or (message.type is None and b'"kind":"receipt"' in message.body):
        return decode(ReceiptMessage, message.body, max_bytes)
    return decode(OutcomeMessage, message.body, max_bytes)


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


async def ack_batch(messages: list[AbstractIncomingMessage]) -> None:
    """One ``multiple`` ack per channel, on the batch's highest delivery tag.

    Safe because the inbox is filled in delivery order: every lower tag of that channel is in this
    batch or was settled by an earlier one (poison messages are settled one by one before).
    """
    highest: dict[int, AbstractIncomingMessage] = {}
    for message in messages:
        if message.processed or message.delivery_tag is None:
            continue
        key = id(message.channel)
        if key not in highest or message.delivery_tag > (highest[key].delivery_tag or 0):
            highest[key] = message
    for message in highest.values():
        await message.ack(multiple=True)


class Responder:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, connection: AbstractRobustConnection) -> None:
        self.settings = settings
        self.pool = pool
        self.connection = connection
        self.topology = Topology(shards=settings.shards, delivery_limit=settings.delivery_limit)
        self.policy = BackoffPolicy(settings.backoff_base_s, settings.backoff_cap_s, settings.backoff_jitter)
        self.rng = random.Random()
        self.routing = RoutingCache(
            RoutingConfig.from_chains(settings.provider_chains), settings.routing_refresh_s
        )
        self.inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self.channel: AbstractChannel | None = None
        self.dlx: AbstractExchange | None = None
        self.consumers: list[tuple[object, str]] = []
        self.queue_by_tag: dict[str, str] = {}
        self.db_ok = True

    async def start(self) -> None:
        self.channel = await confirming_channel(self.connection)
        await declare(self.channel, self.topology)
        await self.channel.set_qos(
            prefetch_count=max(self.settings.prefetch, self.settings.responder_batch_size)
        )
        self.dlx = await self.channel.get_exchange(DEAD_LETTER_EXCHANGE)

    async def subscribe(self, shards: list[int]) -> None:
        assert self.channel is not None
        for shard in shards:
            queue = await self.channel.get_queue(shard_queue(RESPONSES_EXCHANGE, shard), ensure=False)
            tag = await queue.consume(self.inbox.put)
            self.consumers.append((queue, tag))
            self.queue_by_tag[tag] = queue.name

    async def next_batch(self, stop: asyncio.Event) -> list[AbstractIncomingMessage]:
        """Wait for one message, then gather what else arrives within the batch window."""
        getter = asyncio.ensure_future(self.inbox.get())
        stopper = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if getter not in done:
            getter.cancel()
            return []
        stopper.cancel()
        batch = [getter.result()]
        deadline = asyncio.get_running_loop().time() + self.settings.responder_batch_wait_s
        while len(batch) < self.settings.responder_batch_size:
            if self.inbox.empty():
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.inbox.get(), remaining))
                except TimeoutError:
                    break
            else:
                batch.append(self.inbox.get_nowait())
        return batch

    async def decode_batch(
        self, batch: list[AbstractIncomingMessage]
    ) -> list[tuple[AbstractIncomingMessage, Item]]:
        good: list[tuple[AbstractIncomingMessage, Item]] = []
        for message in batch:
            try:
                good.append((message, decode_item(message, self.settings.max_payload_bytes)))
            except MessageError as exc:
                await reject_poison(
                    message, exc, "responder", self.dlx, self.queue_by_tag.get(message.consumer_tag or "")
                )
        return good

    async def apply(self, items: list[Item]) -> WritePlan:
        outcomes = [i for i in items if isinstance(i, OutcomeMessage)]
        receipts = [i for i in items if isinstance(i, ReceiptMessage)]
        async with self.pool.acquire() as conn:
            routing = await self.routing.get(conn)
            async with conn.transaction():
                logs = await lock_logs(conn, [i.log_id for i in items])
                plan = plan_writes(
                    outcomes, logs, self.policy, self.settings.provider_chains, self.rng, receipts, routing
                )
                await write_plan(conn, plan)
        return plan

    async def apply_until_done(self, outcomes: list[Item], stop: asyncio.Event) -> WritePlan | None:
        """Apply, retrying through a database outage; ``None`` only if asked to stop meanwhile."""
        backoff = Backoff()
        while True:
            try:
                plan = await self.apply(outcomes)
                self.db_ok = True
                return plan
            except DATABASE_UNAVAILABLE as exc:
                self.db_ok = False
                delay = backoff.next()
                log.warning("apply_failed", error=repr(exc), retry_in_s=round(delay, 2), batch=len(outcomes))
                if await sleep_or_stop(stop, delay):
                    return None

    async def apply_batch(
        self, decoded: list[tuple[AbstractIncomingMessage, Item]], stop: asyncio.Event
    ) -> list[WritePlan] | None:
        """Apply the batch in one transaction; if the database refuses it (not an outage), apply
        its outcomes one by one so that only the offending ones are dead-lettered."""
        try:
            plan = await self.apply_until_done([o for _, o in decoded], stop)
            return None if plan is None else [plan]
        except asyncpg.PostgresError as exc:
            log.error("batch_refused", error=repr(exc), batch=len(decoded), action="applying one by one")
        plans = []
        for message, outcome in decoded:
            try:
                plan = await self.apply_until_done([outcome], stop)
            except asyncpg.PostgresError as exc:
                await reject_poison(
                    message, exc, "responder", self.dlx, self.queue_by_tag.get(message.consumer_tag or "")
                )
                continue
            if plan is None:
                return None
            plans.append(plan)
        return plans

    def report(self, plan: WritePlan) -> None:
        metrics.APPLY_BATCH.observe(len(plan.attempts) + len(plan.ignored))
        for outcome, why in plan.ignored:
            log.info("outcome_ignored", log_id=outcome.log_id, attempt=outcome.attempt, why=why)
        for outcome, retry in plan.retries:
            metrics.RETRIES.labels(channel=outcome.channel, reason=outcome.outcome.value).inc()
            log.info(
                "retry_scheduled",
                log_id=outcome.log_id,
                attempt=outcome.attempt,
                recipient=recipient_hash(outcome.recipient),
                delay_s=round(retry.delay_s, 2),
                provider=retry.provider,
                error_code=outcome.error_code,
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
        assert self.dlx is not None
        lease = self.settings.dead_letter_lease_s
        while await relay_dead_letters(self.pool, self.dlx, lease_s=lease) > 0:
            pass
        if in_doubt_too:
            in_dlq = functools.partial(letters_in_dlq, self.connection)
            while await resolve_in_doubt(self.pool, self.dlx, in_dlq, lease_s=lease) > 0:
                pass

    async def relay_loop(self, stop: asyncio.Event) -> None:
        while not await sleep_or_stop(stop, RELAY_INTERVAL_S):
            try:
                await self.relay(in_doubt_too=True)
            except Exception as exc:
                log.warning("relay_failed", error=repr(exc))

    async def run(self, stop: asyncio.Event) -> None:
        relay_task = asyncio.create_task(self.relay_loop(stop))
        try:
            while not stop.is_set():
                batch = await self.next_batch(stop)
                if not batch:
                    continue
                metrics.MESSAGES_IN.labels(stage="responder").inc(len(batch))
                decoded = await self.decode_batch(batch)
                if not decoded:
                    continue
                plans = await self.apply_batch(decoded, stop)
                if plans is None:
                    return  # stopping: unacked messages go back to the queue when the channel closes
                await ack_batch([message for message, _ in decoded])
                metrics.MESSAGES_OUT.labels(stage="responder").inc(len(decoded))
                for plan in plans:
                    self.report(plan)
                if any(plan.dead_letters for plan in plans):
                    try:
                        await self.relay()
                    except Exception as exc:  # the relay loop will pick them up
                        log.warning("relay_failed", error=repr(exc))
        finally:
            relay_task.cancel()
            await asyncio.gather(relay_task, return_exceptions=True)

    async def stop_consuming(self) -> None:
        for queue, tag in self.consumers:
            try:
                await queue.cancel(tag)  # type: ignore[attr-defined]
            except Exception as exc:
                log.warning("cancel_failed", error=repr(exc))


async def main(settings: Settings, health: Health, stop: asyncio.Event) -> None:
    async with backends(settings, "responder", stop, health, pool_size=4) as opened:
        if opened is None:
            return
        pool, connection = opened
        responder = Responder(settings, pool, connection)
        health.add("postgres", lambda: responder.db_ok)
        await retry_until_stopped("topology", responder.start, stop)
        run = asyncio.create_task(responder.run(stop))
        active, standby = await subscribe_shards(
            responder.subscribe,
            settings,
            stop,
            lambda n: queue_has_consumer(connection, shard_queue(RESPONSES_EXCHANGE, n)),
        )
        log.info("responder_ready", shards=active, standby=standby)
        await run
        await responder.stop_consuming()


if __name__ == "__main__":
    run_service("responder", main)
