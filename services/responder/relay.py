"""The dead-letter outbox relay: rows committed with the FAILED status are published to ``dlx``.

Two phases, so that a crash neither loses a dead letter nor puts a second copy in the DLQ:

1. claim: one committed statement marks up to ``batch`` rows ``relaying_until = now() + lease``;
2. publish them with confirms, then delete the confirmed rows (and unmark the refused ones).

A process killed between the two leaves its rows marked. Once the mark has run out such a row is
*in doubt*: the broker may have taken its letter before the crash. :func:`resolve_in_doubt` claims
in-doubt rows again, reads the DLQ once (nothing is removed: every message is given back) looking
for their message ids ``dl-<log id>-<attempt>``, deletes the rows whose letter is there and
publishes the others. Reading the DLQ costs one pass over it, and happens only after a crash.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg

from services.dlq.browse import DlqBrowser
from shared.bus import wire
from shared.bus.topology import DEAD_LETTER_EXCHANGE
from shared.bus.transport import Broker, Publisher
from shared.core.errors import InDoubtUnresolved, PublishRefused
from shared.core.models import DeadLetter
from shared.runtime import metrics
from shared.runtime.logs import get_logger

log = get_logger("responder.relay")

# $3: claim rows nobody relays (false) or rows whose relay mark ran out (true, in doubt)
CLAIM_OUTBOX_SQL = """
UPDATE dead_letter_outbox AS o SET relaying_until = now() + make_interval(secs => $2)
FROM (
    SELECT log_id, attempt FROM dead_letter_outbox
    WHERE CASE WHEN $3::bool THEN relaying_until < now() ELSE relaying_until IS NULL END
    ORDER BY created_at LIMIT $1 FOR UPDATE SKIP LOCKED
) AS c
WHERE o.log_id = c.log_id AND o.attempt = c.attempt
RETURNING o.log_id, o.attempt, o.body
"""
UNMARK_OUTBOX_SQL = """
UPDATE dead_letter_outbox AS o SET relaying_until = NULL
FROM unnest($1::bigint[], $2::int[]) AS d(log_id, attempt)
WHERE o.log_id = d.log_id AND o.attempt = d.attempt
"""
DELETE_OUTBOX_SQL = """
DELETE FROM dead_letter_outbox AS o USING unnest($1::bigint[], $2::int[]) AS d(log_id, attempt)
WHERE o.log_id = d.log_id AND o.attempt = d.attempt
"""


def refused_outright(error: BaseException) -> bool:
    """The broker answered and did not take the message (so it cannot be in the DLQ)."""
    return isinstance(error, PublishRefused)


async def relay_dead_letters(
    pool: asyncpg.Pool, publisher: Publisher, batch: int = 500, lease_s: float = 60.0
) -> int:
    """Publish up to ``batch`` outbox rows with confirms; returns how many were relayed."""
    rows = await pool.fetch(CLAIM_OUTBOX_SQL, batch, lease_s, False)
    if not rows:
        return 0
    return await _publish(pool, publisher, [DeadLetter.model_validate(r["body"]) for r in rows], lease_s)


async def resolve_in_doubt(
    pool: asyncpg.Pool,
    publisher: Publisher,
    letters_in_dlq: Callable[[set[str]], Awaitable[set[str]]],
    batch: int = 500,
    lease_s: float = 60.0,
) -> int:
    """Finish the rows a dead relay left marked: those whose letter the DLQ holds are deleted, the
    others published. ``letters_in_dlq(ids)`` says which of the message ids the DLQ holds."""
    rows = await pool.fetch(CLAIM_OUTBOX_SQL, batch, lease_s, True)
    if not rows:
        return 0
    letters = [DeadLetter.model_validate(r["body"]) for r in rows]
    held = await letters_in_dlq({wire.letter_id(x.log_id, x.attempt) for x in letters})
    there = [x for x in letters if wire.letter_id(x.log_id, x.attempt) in held]
    if there:
        await pool.execute(DELETE_OUTBOX_SQL, [x.log_id for x in there], [x.attempt for x in there])
    log.warning("dead_letters_in_doubt", rows=len(letters), already_in_dlq=len(there))
    missing = [x for x in letters if wire.letter_id(x.log_id, x.attempt) not in held]
    return len(there) + (await _publish(pool, publisher, missing, lease_s) if missing else 0)


async def letters_in_dlq(broker: Broker, wanted: set[str]) -> set[str]:
    """Which of these message ids the DLQ holds: one read of it, every message given back."""
    found: set[str] = set()
    async with DlqBrowser(broker) as browser:
        if browser.other_consumers:
            raise InDoubtUnresolved(f"{browser.other_consumers} other reader(s) of the DLQ hide letters")
        async for delivery in browser.deliveries():
            browser.keep(delivery)
            message_id = delivery.entry.message_id
            if message_id in wanted:
                found.add(message_id)
                if found == wanted:
                    return found
    if browser.incomplete:
        raise InDoubtUnresolved(f"{browser.incomplete} DLQ message(s) could not be read")
    return found


async def _publish(
    pool: asyncpg.Pool, publisher: Publisher, letters: list[DeadLetter], lease_s: float
) -> int:
    envelopes = [wire.dead_letter(letter) for letter in letters]
    # Confirms must come back well within the lease, or another relay could take the rows as in doubt.
    results = await publisher.publish(DEAD_LETTER_EXCHANGE, envelopes, timeout=lease_s / 3)
    done = [letter for letter, error in zip(letters, results, strict=True) if error is None]
    failed = [(letter, error) for letter, error in zip(letters, results, strict=True) if error is not None]
    # Refused outright (a nack, unroutable): publish again on the next pass. No answer (timeout,
    # lost channel): the broker may hold it, so the row stays marked and is resolved as in doubt.
    refused = [letter for letter, error in failed if refused_outright(error)]
    if failed:
        log.warning(
            "dead_letter_publish_failed",
            failed=len(failed),
            refused=len(refused),
            error=repr(failed[0][1])[:300],
        )
    if refused:
        await pool.execute(UNMARK_OUTBOX_SQL, [x.log_id for x in refused], [x.attempt for x in refused])
    if done:
        await pool.execute(DELETE_OUTBOX_SQL, [x.log_id for x in done], [x.attempt for x in done])
    for letter in done:
        metrics.DEAD_LETTERS.labels(reason=letter.reason.value).inc()
        log.info(
            "dead_lettered",
            log_id=letter.log_id,
            attempt=letter.attempt,
            reason=letter.reason.value,
            error_code=letter.error_code,
            provider=letter.provider,
        )
    return len(done)
