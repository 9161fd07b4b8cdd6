"""``python -m services.sender``: consume dispatch shards, call providers, publish outcomes, then ack."""

from __future__ import annotations

import asyncio

from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage, AbstractRobustConnection

from services.sender.adapters import HttpProviderAdapter, ProviderAdapter
from services.sender.ordering import RecipientSerializer
from services.sender.outcomes import attempt
from shared import metrics
from shared.amqp import confirming_channel, connect, declare, make_message, publish_confirmed
from shared.errors import MessageError
from shared.logs import get_logger
from shared.models import DispatchMessage, OutcomeMessage, decode, encode
from shared.recipients import recipient_hash, routing_key
from shared.resilience import retry_until_stopped, sleep_or_stop
from shared.runtime import Health, run_service
from shared.settings import Settings
from shared.topology import DISPATCH_EXCHANGE, MESSAGE_TYPE_OUTCOME, RESPONSES_EXCHANGE, Topology, shard_queue

log = get_logger("sender")


class Sender:
    def __init__(self, settings: Settings, connection: AbstractRobustConnection, adapter: ProviderAdapter) -> None:
        self.settings = settings
        self.connection = connection
        self.adapter = adapter
        self.topology = Topology(shards=settings.shards, delivery_limit=settings.delivery_limit)
        self.serializer = RecipientSerializer()
        self.in_flight: set[asyncio.Task[None]] = set()
        self.consumers: list[tuple[object, str]] = []
        self.channel: AbstractChannel | None = None
        self.responses: AbstractExchange | None = None
        self.stopping = False

    async def start(self) -> None:
        self.channel = await confirming_channel(self.connection)
        await declare(self.channel, self.topology)
        await self.channel.set_qos(prefetch_count=self.settings.prefetch)
        self.responses = await self.channel.get_exchange(RESPONSES_EXCHANGE)

    async def subscribe(self, shards: list[int]) -> None:
        assert self.channel is not None
        for shard in shards:
            name = shard_queue(DISPATCH_EXCHANGE, shard)
            queue = await self.channel.get_queue(name, ensure=False)
            tag = await queue.consume(self.on_message)
            self.consumers.append((queue, tag))
            log.info("consuming", queue=name)

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.in_flight.add(task)
        try:
            await self.handle(message)
        finally:
            if task is not None:
                self.in_flight.discard(task)

    async def handle(self, message: AbstractIncomingMessage) -> None:
        metrics.MESSAGES_IN.labels(stage="sender").inc()
        try:
            dispatch = decode(DispatchMessage, message.body, self.settings.max_payload_bytes * 2)
        except MessageError as exc:
            metrics.POISON.labels(stage="sender", error=type(exc).__name__).inc()
            log.error("poison_message", queue=message.routing_key, message_id=message.message_id,
                      error=str(exc)[:500], action="rejected to dlq")
            await message.reject(requeue=False)
            return
        await self.serializer.run(dispatch.recipient, lambda: self.process(dispatch, message))

    async def process(self, dispatch: DispatchMessage, message: AbstractIncomingMessage) -> None:
        if self.stopping:
            return  # left unacked: the broker gives it back when this channel closes
        outcome = await attempt(dispatch, self.adapter, self.settings.provider_chains,
                                self.settings.max_payload_bytes)
        metrics.OUTCOMES.labels(provider=outcome.provider or "none", outcome=outcome.outcome.value).inc()
        metrics.PROVIDER_LATENCY.labels(provider=outcome.provider or "none",
                                        outcome=outcome.outcome.value).observe(outcome.latency_ms / 1000)
        log.info("attempted", log_id=dispatch.log_id, attempt=dispatch.attempt,
                 recipient=recipient_hash(dispatch.recipient), provider=outcome.provider,
                 outcome=outcome.outcome.value, error_code=outcome.error_code, replay=outcome.replay,
                 latency_ms=round(outcome.latency_ms, 1))
        if not await self.publish_outcome(outcome):
            # Not confirmed: give the dispatch back; its redelivery is answered as a provider replay.
            await message.nack(requeue=True)
            return
        await message.ack()
        metrics.MESSAGES_OUT.labels(stage="sender").inc()

    async def publish_outcome(self, outcome: OutcomeMessage) -> bool:
        assert self.responses is not None
        amqp_message = make_message(
            encode(outcome),
            message_id=f"{outcome.log_id}-{outcome.attempt}",
            correlation_id=str(outcome.log_id),
            message_type=MESSAGE_TYPE_OUTCOME,
        )
        for delay in (0.0, 0.5, 1.0, 2.0):
            if delay and self.stopping:
                break
            await asyncio.sleep(delay)
            (error,) = await publish_confirmed(self.responses, [(amqp_message, routing_key(outcome.recipient))])
            if error is None:
                return True
            log.warning("outcome_publish_failed", log_id=outcome.log_id, error=repr(error))
        return False

    async def stop(self, grace_s: float) -> None:
        """Stop taking messages, let in-flight ones finish (they ack), return the rest to the queue."""
        self.stopping = True
        for queue, tag in self.consumers:
            try:
                await queue.cancel(tag)  # type: ignore[attr-defined]
            except Exception as exc:
                log.warning("cancel_failed", error=repr(exc))
        if self.in_flight:
            await asyncio.wait(list(self.in_flight), timeout=grace_s)


async def main(settings: Settings, health: Health, stop: asyncio.Event) -> None:
    connection = await retry_until_stopped("rabbitmq", lambda: connect(settings.amqp_url(), "sender"), stop)
    if connection is None:
        return
    adapter = HttpProviderAdapter(settings.provider_url, settings.provider_timeout_s, settings.provider_concurrency)
    sender = Sender(settings, connection, adapter)
    health.add("rabbitmq", lambda: not connection.is_closed)
    try:
        await retry_until_stopped("topology", sender.start, stop)
        preferred = settings.shard_ids()
        await sender.subscribe(preferred)
        others = [n for n in range(settings.shards) if n not in preferred]
        # Single-active-consumer: subscribe to the other shards late, so this replica is their standby.
        if others and settings.standby_all and not await sleep_or_stop(stop, settings.standby_delay_s):
            await sender.subscribe(others)
        log.info("sender_ready", shards=preferred, standby=others if settings.standby_all else [])
        await stop.wait()
        await sender.stop(grace_s=8.0)
    finally:
        await connection.close()
        await adapter.close()


if __name__ == "__main__":
    run_service("sender", main)
