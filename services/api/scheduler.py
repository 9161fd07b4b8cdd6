"""The campaign scheduler, a loop inside the API process (safe to run in every replica).

Each tick, in short transactions:
1. cron campaigns whose ``next_run_at`` has come: claim the run (unique per campaign + run time),
   insert its logs, move ``next_run_at`` to the next cron time after now (missed runs are skipped;
   past ``end_at`` it becomes NULL). One campaign per transaction, locked with SKIP LOCKED.
2. one-off campaigns whose ``start_at`` has come: SCHEDULED -> RUNNING.
3. campaigns with no run to come and no open log: RUNNING -> COMPLETED.
4. paused campaigns (every 5 s): PENDING logs that came back (a retry that was in flight at the
   pause) are held too.
5. expired Idempotency-Key entries are purged.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from services.api import metrics
from services.api.campaign_runs import materialise
from services.api.errors import DatabaseUnavailable
from services.api.schedule import next_run
from services.api.store import campaigns as store
from services.api.store.idempotency import purge_expired
from shared.runtime.logs import get_logger
from shared.runtime.resilience import Backoff, sleep_or_stop

if TYPE_CHECKING:
    from services.api.context import ApiContext

log = get_logger("api.scheduler")
MAX_RUNS_PER_TICK = 20
PAUSED_SWEEP_S = 5.0  # how often paused campaigns are checked for logs that came back (retries)


@dataclass(slots=True)
class TickReport:
    runs: int = 0
    logs: int = 0
    started: int = 0
    completed: int = 0
    held: int = 0
    purged: int = 0


async def run_due_cron(context: ApiContext, report: TickReport) -> None:
    for _ in range(MAX_RUNS_PER_TICK):
        async with context.db.transaction() as conn:
            campaign = await store.due_cron_campaign(conn)
            if campaign is None:
                return
            run_at = campaign["next_run_at"]
            count = await materialise(conn, campaign, run_at, context.settings.max_attempts)
            following: datetime | None = next_run(
                campaign["cron"], campaign["timezone"], max(run_at, datetime.now(UTC))
            )
            if campaign["end_at"] is not None and following > campaign["end_at"]:
                following = None
            await store.set_next_run(conn, campaign["id"], following)
            if count is not None:
                await store.set_status(conn, campaign["id"], "RUNNING")
        if count is not None:
            report.runs += 1
            report.logs += count
            metrics.CAMPAIGN_RUNS.inc()
            log.info(
                "campaign_run",
                campaign_id=campaign["id"],
                run_at=run_at.isoformat(),
                logs=count,
                next_run_at=following.isoformat() if following else None,
            )


async def tick(context: ApiContext, sweep_paused: bool = True) -> TickReport:
    report = TickReport()
    await run_due_cron(context, report)
    async with context.db.transaction() as conn:
        report.started = len(await store.start_due(conn))
        report.completed = len(await store.complete_finished(conn))
    for campaign_id in await _paused(context) if sweep_paused else []:
        async with context.db.transaction() as conn:
            report.held += await store.pause_logs(conn, campaign_id)
    async with context.db.connection() as conn:
        report.purged = await purge_expired(conn)
    if report.started or report.completed or report.held:
        log.info("scheduler_tick", started=report.started, completed=report.completed, held=report.held)
    return report


async def _paused(context: ApiContext) -> list[int]:
    async with context.db.connection() as conn:
        return await store.paused_campaigns(conn)


async def run_scheduler(context: ApiContext, stop: asyncio.Event) -> None:
    interval = context.settings.api_scheduler_interval_s
    backoff = Backoff(first=interval, cap=30.0)
    last_sweep = 0.0
    while not stop.is_set():
        delay = interval
        try:
            sweep = time.monotonic() - last_sweep >= PAUSED_SWEEP_S
            await tick(context, sweep_paused=sweep)
            last_sweep = time.monotonic() if sweep else last_sweep
            backoff.reset()
        except asyncio.CancelledError:
            raise
        except DatabaseUnavailable:
            delay = backoff.next()
        except Exception as exc:
            delay = backoff.next()
            log.error("scheduler_tick_failed", error=repr(exc)[:500], exc_info=exc)
        if await sleep_or_stop(stop, delay):
            return
