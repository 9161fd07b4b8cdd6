"""Materialising a campaign run: one log per contact, the template rendered, in the caller's transaction.

The run is claimed first in ``campaign_runs`` (unique on campaign + run time), so whatever the
number of schedulers or retries a run produces its logs once; each log also carries the
idempotency key ``campaign:<id>:<run time>:<contact>``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

import asyncpg

from services.api.store import campaigns as campaign_store
from services.api.store import contacts as contact_store
from services.api.store import templates as template_store
from services.api.store.messages import NewLog, insert_logs
from services.api.templating import Template, render

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
    inserted = 0
    for start in range(0, len(logs), CHUNK):
        inserted += len(await insert_logs(conn, campaign["tenant"], logs[start : start + CHUNK]))
    await campaign_store.finish_run(conn, campaign["id"], run_at, inserted)
    return inserted
