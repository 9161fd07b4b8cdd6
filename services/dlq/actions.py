"""What each command does with the DLQ, independent of how it is shown (no typer, no rich here)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg
import httpx

from services.dlq.browse import Delivery, DlqBrowser
from services.dlq.entries import EntryKind
from services.dlq.filters import EntryFilter
from services.dlq.requeue import Tally, Verdict
from services.dlq.store import requeue_letters
from shared.bus.amqp import AmqpBroker, connect_plain
from shared.bus.topology import DEAD_LETTER_QUEUE
from shared.bus.transport import Broker
from shared.core.models import utcnow
from shared.ops.management import Management
from shared.ops.setup import DLQ_FORBIDDEN_KEYS, effective_policy
from shared.runtime.settings import Settings


class Progress(Protocol):
    def start(self, total: int) -> None: ...

    def advance(self, n: int) -> None: ...


class NoProgress:
    def start(self, total: int) -> None:
        pass

    def advance(self, n: int) -> None:
        pass


@dataclass(frozen=True, slots=True)
class ScanOptions:
    window: int = 1000
    idle_s: float = 2.0
    batch_size: int = 200


@dataclass(slots=True)
class ScanReport:
    expected: int = 0
    seen: int = 0
    matched: int = 0
    incomplete: int = 0
    other_consumers: int = 0
    peak_buffered: int = 0
    tally: Tally = field(default_factory=Tally.empty)

    def absorb(self, browser: DlqBrowser) -> None:
        self.expected, self.seen = browser.expected, browser.seen
        self.incomplete, self.other_consumers = browser.incomplete, browser.other_consumers
        self.peak_buffered = browser.peak_buffered


async def connect(settings: Settings) -> AmqpBroker:
    """The DLQ on a plain connection: a reconnect in the middle of a scan would start it over with
    other tags. Close it with ``await broker.close()``."""
    return AmqpBroker(await connect_plain(settings.amqp_url(), "dlq"))


async def dlq_guard(settings: Settings) -> str | None:
    """Why reading the DLQ would be unsafe (a delivery limit or TTL on it), or None; a warning if unknown.

    Worked out from the queue's arguments and the policies (user and operator) that match it, not
    from the queue's statistics, which lag behind a policy change by seconds.
    """
    vhost = settings.vhost()
    try:
        async with Management(settings, timeout=5) as management:
            info = await management.queue(vhost, DEAD_LETTER_QUEUE)
            policies = [
                effective_policy(DEAD_LETTER_QUEUE, await management.policies(vhost)),
                effective_policy(DEAD_LETTER_QUEUE, await management.operator_policies(vhost)),
            ]
    except httpx.HTTPError as exc:
        return f"warning: could not check the dlq's policies through the management API ({exc!r})"
    found: dict[str, Any] = {k.removeprefix("x-"): v for k, v in (info.get("arguments") or {}).items()}
    for policy in policies:
        found.update(policy["definition"] if policy else {})
    bad = [f"{k}={found[k]!r}" for k in DLQ_FORBIDDEN_KEYS if k in found]
    if bad:
        return (
            "refusing to read the dlq: it has " + ", ".join(bad) + "; every read counts as a delivery, so "
            "dead letters would be dropped. Remove that from its policy (`python -m services.admin check`)."
        )
    return None


async def _walk(
    broker: Broker,
    wanted: EntryFilter,
    on_match: Callable[[DlqBrowser, Delivery], Awaitable[bool]],
    options: ScanOptions | None,
    progress: Progress | None,
) -> ScanReport:
    """Read every message once; ``on_match`` returns True when it removed the message, else it is kept."""
    options, progress, report, now = (
        options or ScanOptions(),
        progress or NoProgress(),
        ScanReport(),
        utcnow(),
    )
    async with DlqBrowser(broker, window=options.window, idle_s=options.idle_s) as browser:
        progress.start(browser.expected)
        async for delivery in browser.deliveries():
            removed = False
            if wanted.matches(delivery.entry, now):
                report.matched += 1
                removed = await on_match(browser, delivery)
            if not removed:
                browser.keep(delivery)
            progress.advance(1)
    report.absorb(browser)
    return report


async def scan(
    broker: Broker,
    wanted: EntryFilter,
    on_match: Callable[[Delivery], Awaitable[None] | None],
    options: ScanOptions | None = None,
    progress: Progress | None = None,
) -> ScanReport:
    """Read every message, hand the matching ones to ``on_match``, remove nothing."""

    async def look(_: DlqBrowser, delivery: Delivery) -> bool:
        result = on_match(delivery)
        if result is not None:
            await result
        return False

    return await _walk(broker, wanted, look, options, progress)


async def requeue(
    broker: Broker,
    pool: asyncpg.Pool,
    wanted: EntryFilter,
    budget: int,
    *,
    dry_run: bool = False,
    stale_only: bool = False,
    options: ScanOptions | None = None,
    progress: Progress | None = None,
) -> ScanReport:
    """Reset the logs of the selected dead letters and remove those letters (see services.dlq.requeue).

    Per batch: one transaction for the logs, committed before any of the batch's letters is acked.
    With ``dry_run`` the database is only read and the DLQ is left as it was. With ``stale_only``
    (``settle``) no log is touched: only the letters whose logs moved on (a tenant's
    ``retry-failed``, an earlier requeue) are removed, the others kept.
    """
    options, progress, report, now = (
        options or ScanOptions(),
        progress or NoProgress(),
        ScanReport(),
        utcnow(),
    )
    async with DlqBrowser(broker, window=options.window, idle_s=options.idle_s) as browser:
        progress.start(browser.expected)
        async for batch in browser.batches(options.batch_size):
            verdicts: list[Verdict | None] = []
            letters: list[tuple[int, int]] = []
            for delivery in batch:
                entry = delivery.entry
                if not wanted.matches(entry, now):
                    verdicts.append(Verdict.NOT_SELECTED)
                    continue
                report.matched += 1
                if entry.kind == EntryKind.POISON or entry.log_id is None or entry.attempt is None:
                    verdicts.append(Verdict.POISON)
                    continue
                verdicts.append(None)
                letters.append((entry.log_id, entry.attempt))
            read_only = dry_run or stale_only
            decided = iter(await requeue_letters(pool, letters, budget, dry_run=read_only) if letters else [])
            for delivery, verdict in zip(batch, verdicts, strict=True):
                final = verdict if verdict is not None else next(decided)
                if stale_only and final == Verdict.REQUEUED:
                    final = Verdict.STILL_FAILED
                report.tally.add(final)
                if final.removes_letter and not dry_run:
                    await browser.ack(delivery)
                else:
                    browser.keep(delivery)
            progress.advance(len(batch))
    report.absorb(browser)
    return report


async def purge(
    broker: Broker,
    wanted: EntryFilter,
    *,
    dry_run: bool = False,
    options: ScanOptions | None = None,
    progress: Progress | None = None,
) -> ScanReport:
    """Remove the matching messages (dead letters and poison alike); the logs are not touched."""

    async def remove(browser: DlqBrowser, delivery: Delivery) -> bool:
        if dry_run:
            return False
        await browser.ack(delivery)
        return True

    return await _walk(broker, wanted, remove, options, progress)
