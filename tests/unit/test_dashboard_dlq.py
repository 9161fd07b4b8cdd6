"""services/dashboard/dlq.py: the dashboard's bounded look into the DLQ, against the memory broker."""

from __future__ import annotations

from datetime import UTC, datetime

from services.dashboard.dlq import look
from shared.bus import wire
from shared.bus.memory import MemoryBroker
from shared.bus.topology import DEAD_LETTER_EXCHANGE, DEAD_LETTER_QUEUE, Topology
from shared.core.models import DeadLetter, DeadLetterReason, OutcomeClass
from tests.helpers import dead_letter

WHEN = datetime(2026, 1, 1, tzinfo=UTC)


def letter(log_id: int, code: str) -> DeadLetter:
    return dead_letter(
        log_id=log_id,
        attempt=1,
        max_attempts=1,
        tenant="t",
        campaign_id=None,
        reason=DeadLetterReason.PERMANENT_ERROR,
        error_class=OutcomeClass.PERMANENT,
        error_code=code,
        error_message=None,
        created_at=WHEN,
        dead_lettered_at=WHEN,
    )


async def dlq_with(codes: list[str]) -> MemoryBroker:
    broker = MemoryBroker()
    broker.declare(Topology(shards=1))
    channel = await broker.channel()
    envelopes = [wire.dead_letter(letter(n, code)) for n, code in enumerate(codes, 1)]
    assert await channel.publish(DEAD_LETTER_EXCHANGE, envelopes) == [None] * len(envelopes)
    return broker


def held(broker: MemoryBroker) -> list[str]:
    return [e.message_id for e in broker.ready(DEAD_LETTER_QUEUE)]


async def test_a_dlq_within_the_limit_is_summarised_whole_and_left_as_it_was() -> None:
    # Given five letters, three of one code
    broker = await dlq_with(["INVALID_NUMBER", "BLOCKED", "INVALID_NUMBER", "BLOCKED", "INVALID_NUMBER"])
    before = held(broker)
    # When the dashboard looks with a limit above the depth
    summary = (await look(broker, limit=100, idle_s=0.2)).summary(100)
    # Then every message is counted by reason, nothing is truncated, and the DLQ is unchanged
    assert (summary["depth"], summary["scanned"], summary["truncated"]) == (5, 5, False)
    assert [(r["error_code"], r["count"]) for r in summary["reasons"]] == [
        ("INVALID_NUMBER", 3),
        ("BLOCKED", 2),
    ]
    assert held(broker) == before and broker.unacked(DEAD_LETTER_QUEUE) == 0


async def test_a_dlq_beyond_the_limit_is_summarised_from_its_head_and_says_so() -> None:
    # Given 30 letters
    broker = await dlq_with(["INVALID_NUMBER"] * 10 + ["BLOCKED"] * 20)
    before = held(broker)
    # When the dashboard may read 12
    summary = (await look(broker, limit=12, idle_s=0.2)).summary(12)
    # Then it read the first 12, says the DLQ holds 30, and gave every message back in order
    assert (summary["depth"], summary["scanned"], summary["truncated"]) == (30, 12, True)
    assert [(r["error_code"], r["count"]) for r in summary["reasons"]] == [
        ("INVALID_NUMBER", 10),
        ("BLOCKED", 2),
    ]
    assert held(broker) == before and not broker.queues[DEAD_LETTER_QUEUE].consumers
