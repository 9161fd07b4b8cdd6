"""``python -m services.sender``: consume dispatch shards, call providers, publish outcomes, then ack."""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import uuid

import asyncpg
from prometheus_client import Counter, Histogram

from services.sender.adapters import AdapterPool
from services.sender.circuits import CircuitBoard
from services.sender.metrics import STALE_DISPATCHES
from services.sender.ordering import RecipientSerializer
from services.sender.pacing import PostgresPacing
from services.sender.ratelimit import PostgresBucketStore, RateLimiter
from services.sender.router import Router
from services.sender.settings import SenderSettings
from services.sender.starts import AttemptStarts, PostgresAttemptStarts
from shared.bus import wire
from shared.bus.amqp import AmqpBroker, RobustConnection
from shared.bus.consumer import MessageConsumer, Settle
from shared.bus.topology import (
    CIRCUIT_EVENTS_EXCHANGE,
    DISPATCH,
    LANES,
    RESPONSES,
    Lane,
    Topology,
    circuit_queue,
    lane_exchange,
    lane_of,
)
from shared.bus.transport import Broker, Channel, Delivery
from shared.core.circuit import CircuitEvent, CircuitPolicy
from shared.core.models import DispatchMessage, OutcomeMessage
from shared.core.recipients import recipient_hash
from shared.core.routing import RoutingConfig
from shared.db.routing_store import RoutingCache, load_success_rates
from shared.runtime import metrics
from shared.runtime.logs import get_logger
from shared.runtime.resilience import cancel_within, retry_until_stopped, sleep_or_stop
from shared.runtime.service import Health, backends, run_service

log = get_logger("sender")
# The one settings class this process loads (`python -m services.sender`, `switchboard`).
SETTINGS = SenderSettings


SENDER_OUT = metrics.MESSAGES_OUT.labels(stage="sender")


@functools.lru_cache(maxsize=1024)
def outcome_metrics(provider: str, outcome: str) -> tuple[Counter, Histogram]:
    """The per-(provider, outcome) metric children, looked up once (labels() takes a lock each time)."""
    return (
        metrics.OUTCOMES.labels(provider=provider, outcome=outcome),
        metrics.PROVIDER_LATENCY.labels(provider=provider, outcome=outcome),
    )


class Sender:
    """Dispatch messages in, one provider attempt each, the outcome out (confirmed), then the ack."""

    def __init__(
        self, settings: SenderSettings, broker: Broker, router: Router, starts: AttemptStarts | None = None
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.router = router
        self.starts = starts
        self.topology = Topology(shards=settings.shards, delivery_limit=settings.delivery_limit)
        self.lanes = [lane for lane in LANES if lane.value in settings.lanes]
        self.serializer = RecipientSerializer()
        max_bytes = settings.max_payload_bytes * 2
        prefetch = {Lane.URGENT: settings.urgent_prefetch, Lane.BULK: settings.prefetch}
        # One consumer per lane, each on a channel with its own prefetch, so bulk messages never fill
        # the window urgent ones need; their outcomes go out on a channel per lane too.
        self.dispatches = {
            lane: MessageConsumer(
                broker,
                self.handle,
                stage="sender",
                prefetch=prefetch[lane],
                decode=lambda message: wire.decode_dispatch(message, max_bytes),
                # The sender's user may not write to dlx (docs/security.md): a poison dispatch is
                # rejected and the shard queue's dead-letter policy moves it to the DLQ.
                dead_letter_poison=False,
            )
            for lane in self.lanes
        }
        self.publishers: dict[Lane, Channel] = {}
        self.circuits: MessageConsumer[CircuitEvent] | None = None
        self.stopping = False

    async def start(self) -> None:
        for lane in self.lanes:
            await self.dispatches[lane].start(self.topology if lane is self.lanes[0] else None)
            self.publishers[lane] = await self.broker.channel()

    async def listen_circuits(self, replica: str, board: CircuitBoard) -> None:
        """This replica's own queue on the circuit-events fanout (exclusive: gone with the connection)."""

        async def on_event(event: CircuitEvent, _: Delivery) -> Settle:
            board.apply(event)
            return Settle.ACK

        circuits = MessageConsumer(
            self.broker,
            on_event,
            stage="sender.circuits",
            prefetch=100,
            decode=wire.decode_circuit_event,
            dead_letter_poison=False,  # no dead-letter policy there: an unusable event is logged and dropped
            metered=False,
        )
        await circuits.start()
        self.circuits = circuits
        await circuits.subscribe_private(circuit_queue(replica), CIRCUIT_EVENTS_EXCHANGE)

    async def broadcast(self, event: CircuitEvent) -> None:
        (error,) = await self.publishers[self.lanes[-1]].publish(
            CIRCUIT_EVENTS_EXCHANGE, [wire.circuit_event(event)], timeout=5
        )
        if error is not None:
            raise error

    async def handle(self, dispatch: DispatchMessage, _: Delivery) -> Settle:
        return await self.serializer.run(dispatch.ordering_key, lambda: self.process(dispatch))

    async def process(self, dispatch: DispatchMessage) -> Settle:
        if self.stopping:
            return Settle.LEAVE  # the broker gives it back when this channel closes
        if not await self.live(dispatch):
            return Settle.ACK  # its outcome is known: nothing to send, nothing to report
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
        if not await self.publish_outcome(outcome, lane_of(dispatch.priority)):
            # Not confirmed: give the dispatch back; its redelivery is answered as a provider replay.
            return Settle.REQUEUE
        SENDER_OUT.inc()
        return Settle.ACK

    async def live(self, dispatch: DispatchMessage) -> bool:
        """False for a copy of an attempt whose outcome was applied already (services/sender/starts.py).
        A check that cannot be made lets the dispatch through, as before the check existed: its
        idempotency key still covers the usual copy, and a stopped sender would do no better."""
        if self.starts is None:
            return True
        try:
            live = await self.starts.live(dispatch.log_id, dispatch.attempt)
        except Exception as exc:
            log.warning("live_check_failed", log_id=dispatch.log_id, error=repr(exc)[:300])
            return True
        if not live:
            STALE_DISPATCHES.inc()
            log.info("stale_dispatch_skipped", log_id=dispatch.log_id, attempt=dispatch.attempt)
        return live

    async def publish_outcome(self, outcome: OutcomeMessage, lane: Lane) -> bool:
        """Into the responses lane of its message, so an urgent outcome never waits behind bulk ones."""
        envelope = wire.outcome(outcome)
        for delay in (0.0, 0.5, 1.0, 2.0):
            if delay:
                if self.stopping:
                    break
                await asyncio.sleep(delay)
            publisher = self.publishers.get(lane) or self.publishers[self.lanes[-1]]
            (error,) = await publisher.publish(lane_exchange(RESPONSES, lane), [envelope])
            if error is None:
                return True
            log.warning("outcome_publish_failed", log_id=outcome.log_id, error=repr(error))
        return False

    async def stop(self, grace_s: float) -> None:
        """Stop taking messages, let in-flight ones finish (they ack), return the rest to the queue."""
        self.stopping = True
        await asyncio.gather(*(consumer.stop(grace_s) for consumer in self.dispatches.values()))

    async def subscribe(
        self, settings: SenderSettings, stop: asyncio.Event
    ) -> dict[str, tuple[list[int], list[int]]]:
        """Every lane's shards (and standbys), the lanes side by side: a standby wait in one lane
        never delays the other."""
        lanes = await asyncio.gather(
            *(
                self.dispatches[lane].subscribe_shards(lane_exchange(DISPATCH, lane), settings, stop)
                for lane in self.lanes
            )
        )
        return {lane.value: shards for lane, shards in zip(self.lanes, lanes, strict=True)}


class Background:
    """Keeps the routing configuration, success rates and circuit gauges fresh."""

    def __init__(
        self,
        settings: SenderSettings,
        pool: asyncpg.Pool,
        cache: RoutingCache,
        board: CircuitBoard,
        starts: PostgresAttemptStarts,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.cache = cache
        self.board = board
        self.starts = starts
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

    async def prune_starts(self, stop: asyncio.Event) -> None:
        """Forget attempt starts of logs that moved on long ago (a late copy of a dispatch is long gone)."""
        while not await sleep_or_stop(stop, START_PRUNE_EVERY_S):
            try:
                await self.starts.prune(START_KEEP_S)
            except Exception as exc:  # next time
                log.warning("attempt_start_prune_failed", error=repr(exc)[:300])


START_KEEP_S = 24 * 3600.0
START_PRUNE_EVERY_S = 60.0


def circuit_policy(settings: SenderSettings) -> CircuitPolicy:
    return CircuitPolicy(
        window=settings.circuit_window,
        failure_ratio=settings.circuit_failure_ratio,
        min_calls=min(settings.circuit_min_calls, settings.circuit_window),
        open_s=settings.circuit_open_s,
        probe_grace_s=settings.circuit_probe_grace_s,
        probe_timeout_s=settings.provider_timeout_s + 5,
    )


async def main(settings: SenderSettings, health: Health, stop: asyncio.Event) -> None:
    async with backends(settings, "sender", stop, health, pool_size=8) as opened:
        if opened is None:
            return
        pool, connection = opened
        await serve(settings, stop, pool, connection)


async def serve(
    settings: SenderSettings, stop: asyncio.Event, pool: asyncpg.Pool, connection: RobustConnection
) -> None:
    replica = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    cache = RoutingCache(RoutingConfig.from_chains(settings.provider_chains), settings.routing_refresh_s)
    board = CircuitBoard(circuit_policy(settings), replica)
    starts = PostgresAttemptStarts(pool)
    background = Background(settings, pool, cache, board, starts)
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
        starts=starts,
    )
    sender = Sender(settings, AmqpBroker(connection), router, starts)
    board.publish = sender.broadcast
    tasks: list[asyncio.Task[None]] = []
    try:
        await retry_until_stopped("routing", lambda: cache.refresh(pool), stop)
        await background.load_rates()  # before any message: highest_reliability needs them
        await retry_until_stopped("topology", sender.start, stop)
        await retry_until_stopped("circuit-events", lambda: sender.listen_circuits(replica, board), stop)
        tasks = [
            asyncio.create_task(t(stop))
            for t in (background.routing, background.reliability, background.gauges, background.prune_starts)
        ]
        lanes = await sender.subscribe(settings, stop)
        active, standby = lanes[sender.lanes[-1].value]
        log.info(
            "sender_ready",
            replica=replica,
            shards=active,
            standby=standby,
            lanes=list(lanes),
            routing=cache.config.version,
        )
        await stop.wait()
        await sender.stop(grace_s=settings.stop_grace_s)
    finally:
        await asyncio.gather(*(cancel_within(task, "sender background") for task in tasks))
        await board.close()
        await adapters.close()


if __name__ == "__main__":
    run_service("sender", main, SETTINGS)
