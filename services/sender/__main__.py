"""``python -m services.sender``: consume dispatch shards, call providers, publish outcomes, then ack."""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import uuid

import asyncpg
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage, AbstractRobustConnection
from prometheus_client import Counter, Histogram

from services.sender.adapters import AdapterPool
from services.sender.circuits import CircuitBoard, decode_event, encode_event
from services.sender.ordering import RecipientSerializer
from services.sender.pacing import PostgresPacing
from services.sender.ratelimit import PostgresBucketStore, RateLimiter
from services.sender.router import Router
from shared import metrics
from shared.amqp import (
    confirming_channel,
    declare,
    make_message,
    publish_confirmed,
    queue_has_consumer,
)
from shared.circuit import CircuitEvent, CircuitPolicy
from shared.errors import MessageError, PublishError
from shared.logs import get_logger
from shared.models import DispatchMessage, OutcomeMessage, decode, encode
from shared.poison import reject_poison
from shared.recipients import recipient_hash, routing_key
from shared.resilience import retry_until_stopped, sleep_or_stop
from shared.routing import RoutingConfig
from shared.routing_store import RoutingCache, load_success_rates
from shared.runtime import Health, backends, run_service, subscribe_shards
from shared.settings import Settings
from shared.topology import (
    CIRCUIT_EVENTS_EXCHANGE,
    DEAD_LETTER_EXCHANGE,
    DISPATCH_EXCHANGE,
    MESSAGE_TYPE_CIRCUIT,
    MESSAGE_TYPE_OUTCOME,
    RESPONSES_EXCHANGE,
    Topology,
    circuit_queue,
    shard_queue,
)

log = get_logger("sender")


SENDER_IN = metrics.MESSAGES_IN.labels(stage="sender")
SENDER_OUT = metrics.MESSAGES_OUT.labels(stage="sender")


@functools.lru_cache(maxsize=1024)
def outcome_metrics(provider: str, outcome: str) -> tuple[Counter, Histogram]:
    """The per-(provider, outcome) metric children, looked up once (labels() takes a lock each time)."""
    return (
        metrics.OUTCOMES.labels(provider=provider, outcome=outcome),
        metrics.PROVIDER_LATENCY.labels(provider=provider, outcome=outcome),
    )


class Sender:
    def __init__(self, settings: Settings, connection: AbstractRobustConnection, router: Router) -> None:
        self.settings = settings
        self.connection = connection
        self.router = router
        self.topology = Topology(shards=settings.shards, delivery_limit=settings.delivery_limit)
        self.serializer = RecipientSerializer()
        self.in_flight: set[asyncio.Task[None]] = set()
        self.consumers: list[tuple[object, str]] = []
        self.queue_by_tag: dict[str, str] = {}
        self.channel: AbstractChannel | None = None
        self.responses: AbstractExchange | None = None
        self.circuit_events: AbstractExchange | None = None
        self.dlx: AbstractExchange | None = None
        self.stopping = False

    async def start(self) -> None:
        self.channel = await confirming_channel(self.connection)
        await declare(self.channel, self.topology)
        await self.channel.set_qos(prefetch_count=self.settings.prefetch)
        self.responses = await self.channel.get_exchange(RESPONSES_EXCHANGE)
        self.circuit_events = await self.channel.get_exchange(CIRCUIT_EVENTS_EXCHANGE)
        self.dlx = await self.channel.get_exchange(DEAD_LETTER_EXCHANGE)

    async def listen_circuits(self, replica: str, board: CircuitBoard) -> None:
        """This replica's own queue on the circuit-events fanout (exclusive: gone with the connection)."""
        assert self.channel is not None
        queue = await self.channel.declare_queue(circuit_queue(replica), exclusive=True, auto_delete=True)
        await queue.bind(CIRCUIT_EVENTS_EXCHANGE)

        async def on_event(message: AbstractIncomingMessage) -> None:
            async with message.process(requeue=False):
                try:
                    board.apply(decode_event(message.body))
                except (ValueError, KeyError, TypeError) as exc:
                    log.warning("circuit_event_unusable", error=repr(exc)[:300])

        await queue.consume(on_event)

    async def broadcast(self, event: CircuitEvent) -> None:
        assert self.circuit_events is not None
        message = make_message(
            encode_event(event), message_id=f"{event.origin}-{event.at}", message_type=MESSAGE_TYPE_CIRCUIT
        )
        (error,) = await publish_confirmed(self.circuit_events, [(message, "")], timeout=5)
        if error is not None:
            raise PublishError(str(error))

    async def subscribe(self, shards: list[int]) -> None:
        assert self.channel is not None
        for shard in shards:
            name = shard_queue(DISPATCH_EXCHANGE, shard)
            queue = await self.channel.get_queue(name, ensure=False)
            tag = await queue.consume(self.on_message)
            self.consumers.append((queue, tag))
            self.queue_by_tag[tag] = name
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
        SENDER_IN.inc()
        try:
            dispatch = decode(DispatchMessage, message.body, self.settings.max_payload_bytes * 2)
        except MessageError as exc:
            queue = self.queue_by_tag.get(message.consumer_tag or "")
            await reject_poison(message, exc, "sender", self.dlx, queue)
            return
        await self.serializer.run(dispatch.ordering_key, lambda: self.process(dispatch, message))

    async def process(self, dispatch: DispatchMessage, message: AbstractIncomingMessage) -> None:
        if self.stopping:
            return  # left unacked: the broker gives it back when this channel closes
        outcome = await self.router.attempt(dispatch)
        counted, timed = outcome_metrics(outcome.provider or "none", outcome.outcome.value)
        counted.inc()
        timed.observe(outcome.latency_ms / 1000)
        log.info(
            "attempted",
            log_id=dispatch.log_id,
            attempt=dispatch.attempt,
            recipient=recipient_hash(dispatch.recipient),
            provider=outcome.provider,
            outcome=outcome.outcome.value,
            error_code=outcome.error_code,
            replay=outcome.replay,
            fallback_reason=outcome.fallback_reason,
            latency_ms=round(outcome.latency_ms, 1),
        )
        if not await self.publish_outcome(outcome):
            # Not confirmed: give the dispatch back; its redelivery is answered as a provider replay.
            await message.nack(requeue=True)
            return
        await message.ack()
        SENDER_OUT.inc()

    async def publish_outcome(self, outcome: OutcomeMessage) -> bool:
        assert self.responses is not None
        amqp_message = make_message(
            encode(outcome),
            message_id=f"{outcome.log_id}-{outcome.attempt}",
            correlation_id=str(outcome.log_id),
            message_type=MESSAGE_TYPE_OUTCOME,
        )
        for delay in (0.0, 0.5, 1.0, 2.0):
            if delay:
                if self.stopping:
                    break
                await asyncio.sleep(delay)
            (error,) = await publish_confirmed(
                self.responses, [(amqp_message, routing_key(outcome.recipient))]
            )
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


class Background:
    """Keeps the routing configuration, success rates and circuit gauges fresh."""

    def __init__(
        self, settings: Settings, pool: asyncpg.Pool, cache: RoutingCache, board: CircuitBoard
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.cache = cache
        self.board = board
        self.rates: dict[str, float] = {}

    async def routing(self, stop: asyncio.Event) -> None:
        while not await sleep_or_stop(stop, self.settings.routing_refresh_s):
            try:
                if await self.cache.refresh(self.pool):
                    log.info(
                        "routing_reloaded",
                        version=self.cache.config.version,
                        providers=sorted(self.cache.config.providers),
                    )
            except Exception as exc:  # keep the configuration we have
                log.warning("routing_reload_failed", error=repr(exc))

    async def load_rates(self) -> None:
        try:
            names = sorted(self.cache.config.providers)
            self.rates = await load_success_rates(self.pool, names, self.settings.reliability_window)
        except Exception as exc:  # keep the rates we have
            log.warning("reliability_refresh_failed", error=repr(exc))

    async def reliability(self, stop: asyncio.Event) -> None:
        while not await sleep_or_stop(stop, self.settings.reliability_refresh_s):
            await self.load_rates()

    async def gauges(self, stop: asyncio.Event) -> None:
        while not await sleep_or_stop(stop, 0.5):
            self.board.refresh()


def circuit_policy(settings: Settings) -> CircuitPolicy:
    return CircuitPolicy(
        window=settings.circuit_window,
        failure_ratio=settings.circuit_failure_ratio,
        min_calls=min(settings.circuit_min_calls, settings.circuit_window),
        open_s=settings.circuit_open_s,
        probe_grace_s=settings.circuit_probe_grace_s,
        probe_timeout_s=settings.provider_timeout_s + 5,
    )


async def main(settings: Settings, health: Health, stop: asyncio.Event) -> None:
    async with backends(settings, "sender", stop, health, pool_size=8) as opened:
        if opened is None:
            return
        pool, connection = opened
        await serve(settings, stop, pool, connection)


async def serve(
    settings: Settings, stop: asyncio.Event, pool: asyncpg.Pool, connection: AbstractRobustConnection
) -> None:
    replica = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    cache = RoutingCache(RoutingConfig.from_chains(settings.provider_chains), settings.routing_refresh_s)
    board = CircuitBoard(circuit_policy(settings), replica)
    background = Background(settings, pool, cache, board)
    adapters = AdapterPool(settings)
    router = Router(
        lambda: cache.config,
        lambda: background.rates,
        board,
        RateLimiter(PostgresBucketStore(pool), settings.rate_limit_lease_s),
        PostgresPacing(pool),
        adapters,
        max_payload_bytes=settings.max_payload_bytes,
        max_wait_s=settings.rate_limit_max_wait_s,
    )
    sender = Sender(settings, connection, router)
    board.publish = sender.broadcast
    tasks: list[asyncio.Task[None]] = []
    try:
        await retry_until_stopped("routing", lambda: cache.refresh(pool), stop)
        await background.load_rates()  # before any message: highest_reliability needs them
        await retry_until_stopped("topology", sender.start, stop)
        await retry_until_stopped("circuit-events", lambda: sender.listen_circuits(replica, board), stop)
        tasks = [
            asyncio.create_task(t(stop))
            for t in (background.routing, background.reliability, background.gauges)
        ]
        active, standby = await subscribe_shards(
            sender.subscribe,
            settings,
            stop,
            lambda n: queue_has_consumer(connection, shard_queue(DISPATCH_EXCHANGE, n)),
        )
        log.info(
            "sender_ready", replica=replica, shards=active, standby=standby, routing=cache.config.version
        )
        await stop.wait()
        await sender.stop(grace_s=8.0)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await board.close()
        await adapters.close()


if __name__ == "__main__":
    run_service("sender", main)
