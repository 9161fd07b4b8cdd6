"""``python -m services.responder``: apply outcomes in batches, one transaction each, then ack."""

from __future__ import annotations

import asyncio
import random

import asyncpg
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage, AbstractRobustConnection

from services.responder.plan import WritePlan, plan_writes
from services.responder.relay import relay_dead_letters
from services.responder.store import lock_logs, write_plan
from shared import metrics
from shared.amqp import confirming_channel, connect, declare
from shared.backoff import BackoffPolicy
from shared.db import create_pool
from shared.errors import MessageError
from shared.logs import get_logger
from shared.models import OutcomeMessage, decode
from shared.recipients import recipient_hash
from shared.resilience import Backoff, retry_until_stopped, sleep_or_stop
from shared.runtime import Health, run_service
from shared.settings import Settings
from shared.topology import DEAD_LETTER_EXCHANGE, RESPONSES_EXCHANGE, Topology, shard_queue

log = get_logger("responder")
RELAY_INTERVAL_S = 2.0


class Responder:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, connection: AbstractRobustConnection) -> None:
        self.settings = settings
        self.pool = pool
        self.connection = connection
        self.topology = Topology(shards=settings.shards, delivery_limit=settings.delivery_limit)
        self.policy = BackoffPolicy(settings.backoff_base_s, settings.backoff_cap_s, settings.backoff_jitter)
        self.rng = random.Random()
        self.inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self.channel: AbstractChannel | None = None
        self.dlx: AbstractExchange | None = None
        self.consumers: list[tuple[object, str]] = []
        self.db_ok = True

    async def start(self) -> None:
        self.channel = await confirming_channel(self.connection)
        await declare(self.channel, self.topology)
        await self.channel.set_qos(prefetch_count=max(self.settings.prefetch, self.settings.responder_batch_size))
        self.dlx = await self.channel.get_exchange(DEAD_LETTER_EXCHANGE)

    async def subscribe(self, shards: list[int]) -> None:
        assert self.channel is not None
        for shard in shards:
            queue = await self.channel.get_queue(shard_queue(RESPONSES_EXCHANGE, shard), ensure=False)
            tag = await queue.consume(self.inbox.put)
            self.consumers.append((queue, tag))

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
    ) -> list[tuple[AbstractIncomingMessage, OutcomeMessage]]:
        good = []
        for message in batch:
            try:
                good.append((message, decode(OutcomeMessage, message.body, self.settings.max_payload_bytes)))
            except MessageError as exc:
                metrics.POISON.labels(stage="responder", error=type(exc).__name__).inc()
                log.error("poison_message", queue=message.routing_key, message_id=message.message_id,
                          error=str(exc)[:500], action="rejected to dlq")
                await message.reject(requeue=False)
        return good

    async def apply(self, outcomes: list[OutcomeMessage]) -> WritePlan:
        async with self.pool.acquire() as conn, conn.transaction():
            logs = await lock_logs(conn, [o.log_id for o in outcomes])
            plan = plan_writes(outcomes, logs, self.policy, self.settings.provider_chains, self.rng)
            await write_plan(conn, plan)
        return plan

    async def apply_until_done(self, outcomes: list[OutcomeMessage], stop: asyncio.Event) -> WritePlan | None:
        """Apply, retrying through a database outage; ``None`` only if asked to stop meanwhile."""
        backoff = Backoff()
        while True:
            try:
                plan = await self.apply(outcomes)
                self.db_ok = True
                return plan
            except (asyncpg.PostgresConnectionError, OSError, asyncpg.InterfaceError,
                    asyncpg.CannotConnectNowError, asyncpg.DeadlockDetectedError,
                    asyncpg.SerializationError, TimeoutError) as exc:
                self.db_ok = False
                delay = backoff.next()
                log.warning("apply_failed", error=repr(exc), retry_in_s=round(delay, 2), batch=len(outcomes))
                if await sleep_or_stop(stop, delay):
                    return None

    def report(self, plan: WritePlan) -> None:
        metrics.APPLY_BATCH.observe(len(plan.attempts) + len(plan.ignored))
        for outcome, why in plan.ignored:
            log.info("outcome_ignored", log_id=outcome.log_id, attempt=outcome.attempt, why=why)
        for outcome, retry in plan.retries:
            metrics.RETRIES.labels(channel=outcome.channel, reason=outcome.outcome.value).inc()
            log.info("retry_scheduled", log_id=outcome.log_id, attempt=outcome.attempt,
                     recipient=recipient_hash(outcome.recipient), delay_s=round(retry.delay_s, 2),
                     provider=retry.provider, error_code=outcome.error_code)
        for letter in plan.dead_letters:
            metrics.FAILURES.labels(channel=letter.channel, error_class=letter.error_class.value).inc()
        for channel, seconds in plan.send_latencies:
            metrics.END_TO_END.labels(channel=channel).observe(max(seconds, 0.0))
        for outcome in plan.receipts:
            log.info("sent", log_id=outcome.log_id, attempt=outcome.attempt, provider=outcome.provider,
                     recipient=recipient_hash(outcome.recipient))

    async def relay(self) -> None:
        assert self.dlx is not None
        while await relay_dead_letters(self.pool, self.dlx) > 0:
            pass

    async def relay_loop(self, stop: asyncio.Event) -> None:
        while not await sleep_or_stop(stop, RELAY_INTERVAL_S):
            try:
                await self.relay()
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
                plan = await self.apply_until_done([o for _, o in decoded], stop)
                if plan is None:
                    return  # stopping: unacked messages go back to the queue when the channel closes
                for message, _ in decoded:
                    await message.ack()
                metrics.MESSAGES_OUT.labels(stage="responder").inc(len(decoded))
                self.report(plan)
                if plan.dead_letters:
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
    pool = await retry_until_stopped("postgres", lambda: create_pool(settings.database_dsn(), max_size=4), stop)
    if pool is None:
        return
    connection = await retry_until_stopped("rabbitmq", lambda: connect(settings.amqp_url(), "responder"), stop)
    if connection is None:
        await pool.close()
        return
    responder = Responder(settings, pool, connection)
    health.add("rabbitmq", lambda: not connection.is_closed)
    health.add("postgres", lambda: responder.db_ok)
    try:
        await retry_until_stopped("topology", responder.start, stop)
        await responder.subscribe(settings.shard_ids())
        log.info("responder_ready", shards=settings.shard_ids())
        await responder.run(stop)
        await responder.stop_consuming()
    finally:
        await connection.close()
        await pool.close()


if __name__ == "__main__":
    run_service("responder", main)
