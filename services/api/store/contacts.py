"""contact_lists and contacts rows."""

from __future__ import annotations

import asyncpg

from services.api.contacts_csv import Contact, ContactFile

_COLUMNS = "id, name, channel, columns, contact_count, rejected_count, campaign_id, created_at"

INSERT_CONTACTS_SQL = """
INSERT INTO contacts (list_id, position, recipient, variables)
SELECT $1, pos, r, v FROM unnest($2::int[], $3::text[], $4::jsonb[]) AS x(pos, r, v)
"""


async def insert_list(
    conn: asyncpg.Connection, tenant: str, name: str, channel: str, parsed: ContactFile
) -> asyncpg.Record:
    row: asyncpg.Record = await conn.fetchrow(
        "INSERT INTO contact_lists (tenant, name, channel, columns, contact_count, rejected_count)"
        f" VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_COLUMNS}",
        tenant,
        name,
        channel,
        parsed.columns,
        len(parsed.contacts),
        parsed.rejected_count,
    )
    contacts = parsed.contacts
    await conn.execute(
        INSERT_CONTACTS_SQL,
        row["id"],
        list(range(len(contacts))),
        [c.recipient for c in contacts],
        [c.variables for c in contacts],
    )
    return row


async def get_list(conn: asyncpg.Connection, tenant: str, list_id: int) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM contact_lists WHERE tenant = $1 AND id = $2", tenant, list_id
    )
    return row


async def list_lists(conn: asyncpg.Connection, tenant: str) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            f"SELECT {_COLUMNS} FROM contact_lists WHERE tenant = $1 ORDER BY id DESC LIMIT 1000", tenant
        )
    )


async def contacts_of(conn: asyncpg.Connection, list_id: int) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            "SELECT position, recipient, variables FROM contacts WHERE list_id = $1 ORDER BY position",
            list_id,
        )
    )


async def create_campaign_list(
    conn: asyncpg.Connection,
    tenant: str,
    campaign_id: int,
    name: str,
    channel: str,
    copy_of: int | None,
) -> int:
    """The draft campaign's own list: empty, or a copy of list ``copy_of`` (the caller checked it)."""
    list_id: int = await conn.fetchval(
        "INSERT INTO contact_lists (tenant, name, channel, columns, contact_count, campaign_id)"
        " SELECT $1, $2, $3, COALESCE(src.columns, '{}'), COALESCE(src.contact_count, 0), $4"
        " FROM (SELECT 1) AS one LEFT JOIN contact_lists src ON src.id = $5 AND src.tenant = $1"
        " RETURNING id",
        tenant,
        name,
        channel,
        campaign_id,
        copy_of,
    )
    if copy_of is not None:
        await conn.execute(
            "INSERT INTO contacts (list_id, position, recipient, variables)"
            " SELECT $1, position, recipient, variables FROM contacts WHERE list_id = $2",
            list_id,
            copy_of,
        )
    return list_id


async def lock_list(conn: asyncpg.Connection, list_id: int) -> asyncpg.Record:
    row: asyncpg.Record = await conn.fetchrow(
        "SELECT id, columns, contact_count FROM contact_lists WHERE id = $1 FOR UPDATE", list_id
    )
    return row


async def existing_recipients(conn: asyncpg.Connection, list_id: int, recipients: list[str]) -> set[str]:
    rows = await conn.fetch(
        "SELECT recipient FROM contacts WHERE list_id = $1 AND recipient = ANY($2::text[])",
        list_id,
        recipients,
    )
    return {r["recipient"] for r in rows}


async def append_contacts(
    conn: asyncpg.Connection, list_id: int, contacts: list[Contact], columns: list[str]
) -> int:
    """Add ``contacts`` after the list's last one (the list locked by the caller); the new count."""
    start: int = await conn.fetchval(
        "SELECT COALESCE(max(position) + 1, 0) FROM contacts WHERE list_id = $1", list_id
    )
    await conn.execute(
        INSERT_CONTACTS_SQL,
        list_id,
        list(range(start, start + len(contacts))),
        [c.recipient for c in contacts],
        [c.variables for c in contacts],
    )
    count: int = await conn.fetchval(
        "UPDATE contact_lists SET contact_count = contact_count + $2,"
        " columns = ARRAY(SELECT DISTINCT unnest(columns || $3::text[]) ORDER BY 1)"
        " WHERE id = $1 RETURNING contact_count",
        list_id,
        len(contacts),
        columns,
    )
    return count
