"""contact_lists and contacts rows."""

from __future__ import annotations

import asyncpg

from services.api.contacts_csv import ContactFile

_COLUMNS = "id, name, channel, columns, contact_count, rejected_count, created_at"

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
        len(parsed.rejected),
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
