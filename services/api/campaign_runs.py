"""Materialising a campaign run: one log per contact, the template rendered, in the caller's transaction.

The run is claimed first in ``campaign_runs`` (unique on campaign + run time), so whatever the
number of schedulers or retries a run produces its logs once; each log also carries the
idempotency key ``campaign:<id>:<run time>:<contact>``.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from services.api.campaign_pacing import schedule, sender_identity
from services.api.store import campaigns as campaign_store
from services.api.store import contacts as contact_store
from services.api.store import templates as template_store
from services.api.store.messages import NewLog, insert_logs
from services.api.templating import Template, render
from shared.core.routing import Pacing

CHUNK = 5000


def run_key(campaign_id: int, run_at: datetime, position: int) -> str:
    return f"campaign:{campaign_id}:{int(run_at.timestamp())}:{position}"


def build_logs(
    campaign: Mapping[str, Any], template: Template, contacts: list[Any], run_at: datetime, max_attempts: int
) -> Iterator[NewLog]:
    """The logs of one run (pure): contact variables rendered into the template's fields."""
    for contact in contacts:
        yield NewLog(
            channel=campaign["channel"],
            recipient=contact["recipient"],
            payload=render(template, contact["variables"]),
            priority=campaign["priority"],
            max_attempts=campaign["max_attempts"] or max_attempts,
            send_at=run_at,
            campaign_id=campaign["id"],
            idempotency_key=run_key(campaign["id"], run_at, contact["position"]),
        )


async def materialise(
    conn: asyncpg.Connection, campaign: Mapping[str, Any], run_at: datetime, max_attempts: int
) -> int | None:
    """Insert the run's logs (due at ``run_at``); ``None`` when that run exists already."""
    if not await campaign_store.record_run(conn, campaign["id"], run_at):
        return None
    template_row = await template_store.get_template(conn, campaign["tenant"], campaign["template_id"])
    contacts = await contact_store.contacts_of(conn, campaign["contact_list_id"])
    if template_row is None:
        raise LookupError(f"template {campaign['template_id']} of campaign {campaign['id']} is gone")
    template = Template(fields=dict(template_row["content"]), variables=tuple(template_row["variables"]))
    logs = list(build_logs(campaign, template, contacts, run_at, max_attempts))
    logs = await pace_run(conn, campaign, template, logs, run_at)
    inserted = 0
    for start in range(0, len(logs), CHUNK):
        inserted += len(await insert_logs(conn, campaign["tenant"], logs[start : start + CHUNK]))
    await campaign_store.finish_run(conn, campaign["id"], run_at, inserted)
    return inserted


async def pace_run(
    conn: asyncpg.Connection,
    campaign: Mapping[str, Any],
    template: Template,
    logs: list[NewLog],
    run_at: datetime,
) -> list[NewLog]:
    """A paced campaign's logs due one gap apart, from its sender identity's next free slot on."""
    preset = Pacing(campaign["pacing"])
    if preset is Pacing.NONE or not logs:
        return logs
    due = await reserve_slots(conn, campaign, template.fields, len(logs), run_at)
    return [dataclasses.replace(log, send_at=at) for log, at in zip(logs, due, strict=True)]


async def reserve_slots(
    conn: asyncpg.Connection,
    campaign: Mapping[str, Any],
    content: Mapping[str, Any],
    count: int,
    start: datetime,
    *,
    queue: bool = True,
) -> Sequence[datetime]:
    """``count`` paced due times for the campaign from ``start``, or (``queue``) from its identity's
    next free slot if later; the identity's slot moves past them (its row locked until commit)."""
    identity = sender_identity(campaign["channel"], content)
    slot = await campaign_store.pacing_slot(conn, campaign["tenant"], identity, start)
    first = slot if queue else start
    planned = schedule(first, count, Pacing(campaign["pacing"]), random.Random())
    await campaign_store.set_pacing_slot(conn, campaign["tenant"], identity, max(slot, planned.next_slot))
    return planned.due


async def repace(conn: asyncpg.Connection, campaign: Mapping[str, Any], now: datetime) -> int:
    """After a resume: a paced campaign's pending logs due one gap apart again, from now on (the
    slots it held before the pause were its own, so it does not queue behind them)."""
    if Pacing(campaign["pacing"]) is Pacing.NONE:
        return 0
    ids = await campaign_store.pending_ids(conn, campaign["id"])
    if not ids:
        return 0
    template_row = await template_store.get_template(conn, campaign["tenant"], campaign["template_id"])
    content = dict(template_row["content"]) if template_row is not None else {}
    due = await reserve_slots(conn, campaign, content, len(ids), now, queue=False)
    await campaign_store.reschedule(conn, ids, list(due))
    return len(ids)
