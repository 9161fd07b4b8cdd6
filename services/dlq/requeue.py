"""Requeueing dead letters: what happens to each one (pure), and why it is safe to interrupt.

A requeue takes dead letters from the DLQ in batches. For each batch, in **one transaction**, it
locks the logs, decides per letter (:func:`plan_requeue`), resets the eligible logs to PENDING with
a fresh attempt budget, and commits; **then** it acks (removes) the requeued and the stale letters.
Everything else is given back to the DLQ untouched.

Crash points (the process, the broker connection or the database may go at any instant):

1. Before the commit: the transaction rolls back; the letters are still unacked, so the broker
   gives them back. Nothing happened; running again does the same work.
2. After the commit, before (all) acks reach the broker: the logs are PENDING, the letters return
   to the DLQ. Running again finds each of those logs no longer FAILED/BOUNCED (or with more
   attempts than the letter): the letter is *stale*, and is removed without touching the log.
   So a log is reset once, and a dead letter is removed only after its log was reset.
3. After the acks: done for that batch.

A log is reset only if it is FAILED or BOUNCED **and** its attempt count equals the letter's, so
an old letter (duplicate relay, or a letter from before an earlier requeue) never resets a log
that has moved on. The reset keeps ``attempts`` and raises ``max_attempts`` to
``attempts + budget``: the poller's next claim makes attempt ``attempts + 1``, whose idempotency
key ``<log id>-<attempt>`` the provider has never seen, and ``delivery_attempts`` (primary key
``(log_id, attempt)``) keeps every earlier row. The poller sends the log once, like any PENDING log.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from shared.core.models import Status

# An IN_DOUBT log is requeued only by an operator who checked that the provider did not send it.
REQUEUEABLE = frozenset({Status.FAILED, Status.BOUNCED, Status.IN_DOUBT})


class Verdict(StrEnum):
    REQUEUED = "requeued"  # log reset to PENDING; letter removed
    STALE = "stale, removed"  # the log moved on (requeued before, re-sent, cancelled): letter removed
    MISSING = "log missing, kept"  # no such log in the database: letter left in the DLQ
    INCONSISTENT = "log behind letter, kept"  # fewer attempts than the letter: left for a human
    POISON = "poison, skipped"  # nothing to requeue (purge it)
    STILL_FAILED = "log still failed, kept"  # settle: the letter is current, so it stays
    NOT_SELECTED = "not selected"  # outside the ids / filter: left in the DLQ

    @property
    def removes_letter(self) -> bool:
        return self in (Verdict.REQUEUED, Verdict.STALE)


@dataclass(frozen=True, slots=True)
class LogState:
    id: int
    status: Status
    attempts: int
    max_attempts: int
    campaign_id: int | None


def decide(attempt: int, log: LogState | None) -> Verdict:
    """What to do with a letter of ``attempt`` given its log's current state."""
    if log is None:
        return Verdict.MISSING
    if log.attempts > attempt:
        return Verdict.STALE
    if log.attempts < attempt:
        return Verdict.INCONSISTENT
    return Verdict.REQUEUED if log.status in REQUEUEABLE else Verdict.STALE


def plan_requeue(letters: Sequence[tuple[int, int]], logs: Mapping[int, LogState]) -> list[Verdict]:
    """A verdict per (log id, attempt), in order; a second letter for a log just reset is stale."""
    current = dict(logs)
    verdicts = []
    for log_id, attempt in letters:
        verdict = decide(attempt, current.get(log_id))
        if verdict == Verdict.REQUEUED:
            current[log_id] = replace(current[log_id], status=Status.PENDING)
        verdicts.append(verdict)
    return verdicts


@dataclass(slots=True)
class Tally:
    """Counts per verdict, for the summary."""

    counts: dict[Verdict, int]

    @classmethod
    def empty(cls) -> Tally:
        return cls({v: 0 for v in Verdict})

    def add(self, verdict: Verdict, n: int = 1) -> None:
        self.counts[verdict] += n

    @property
    def removed(self) -> int:
        return sum(n for v, n in self.counts.items() if v.removes_letter)
