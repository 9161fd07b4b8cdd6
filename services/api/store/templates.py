"""message_templates rows."""

from __future__ import annotations

import asyncpg

_COLUMNS = "id, name, channel, content, variables, created_at"


async def insert_template(
    conn: asyncpg.Connection,
    tenant: str,
    name: str,
    channel: str,
    content: dict[str, str],
    variables: list[str],
) -> asyncpg.Record | None:
    """The new row, or ``None`` when the tenant already has a template of that name."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "INSERT INTO message_templates (tenant, name, channel, content, variables)"
        f" VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant, name) DO NOTHING RETURNING {_COLUMNS}",
        tenant,
        name,
        channel,
        content,
        variables,
    )
    return row


async def get_template(conn: asyncpg.Connection, tenant: str, template_id: int) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM message_templates WHERE tenant = $1 AND id = $2", tenant, template_id
    )
    return row


async def list_templates(conn: asyncpg.Connection, tenant: str) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            f"SELECT {_COLUMNS} FROM message_templates WHERE tenant = $1 ORDER BY id LIMIT 1000", tenant
        )
    )
