"""Threat: a service's database role can do more than its SQL needs (a compromised process reaches
tables its job never touches), or less (a grant forgotten when a statement was added fails only in
production, where each process runs as its own role). The grants of shared/db/roles.py are held to
what each service's SQL needs, read from the source (tests/security/sql_usage.py), in a database
prepared by ``admin setup``."""

from __future__ import annotations

import asyncpg
import pytest

from shared.db.roles import GRANTS, DatabaseRole, role_name, url_for
from tests.security.sql_usage import needs, reached, service_needs, tables
from tools.stack import Environment

ROOT_ROLES = {role.value for role in DatabaseRole}
COLUMN_PRIVILEGES = ("SELECT", "INSERT", "UPDATE")


async def granted(conn: asyncpg.Connection, role: DatabaseRole) -> set[tuple[str, str]]:
    """What the role may do in this database, table by table (a column privilege counts)."""
    rows = await conn.fetch(
        "SELECT privilege_type, table_name FROM information_schema.table_privileges"
        " WHERE grantee = $1 AND table_schema = 'public'"
        " UNION SELECT privilege_type, table_name FROM information_schema.column_privileges"
        " WHERE grantee = $1 AND table_schema = 'public'",
        role_name(role),
    )
    return {(r["privilege_type"], r["table_name"]) for r in rows}


async def test_each_role_is_granted_exactly_what_its_service_sql_needs(environment: Environment) -> None:
    # Given a database prepared by admin setup (migrations, roles, grants)
    conn = await asyncpg.connect(environment.database_url)
    try:
        have = {role: await granted(conn, role) for role in DatabaseRole}
    finally:
        await conn.close()
    # When each service's SQL is read for what it needs
    wanted = {role: service_needs(role.value) for role in DatabaseRole}
    # Then every need is granted, and nothing else is
    missing = {role.value: sorted(wanted[role] - have[role]) for role in DatabaseRole}
    extra = {role.value: sorted(have[role] - wanted[role]) for role in DatabaseRole}
    assert not any(missing.values()), f"grant these in shared/db/roles.py: {missing}"
    assert not any(extra.values()), f"no statement of the service uses these grants: {extra}"


async def test_the_database_refuses_each_role_what_it_is_not_granted(environment: Environment) -> None:
    # Given, for each role, a table its service never touches
    untouched = {
        role: sorted(tables() - {t for _, t in service_needs(role.value)} - {"schema_migrations"})[0]
        for role in DatabaseRole
    }
    refused = {}
    for role, table in untouched.items():
        conn = await asyncpg.connect(url_for(environment.database_url, role))
        try:
            # When the role reads it / Then PostgreSQL refuses
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch(f"SELECT 1 FROM {table} LIMIT 1")
            refused[role.value] = table
        finally:
            await conn.close()
    assert set(refused) == ROOT_ROLES


def test_every_role_belongs_to_a_service_with_sql() -> None:
    # A role named after no service would be read as needing nothing, and every grant would look extra
    for role in DatabaseRole:
        assert reached(role.value), f"no code under services/{role.value}/"
        assert service_needs(role.value), f"services/{role.value} issues no SQL: it needs no role"
    assert {g.table for grants in GRANTS.values() for g in grants} <= tables()


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            "SELECT a FROM campaigns c JOIN providers p ON true",
            {("SELECT", "campaigns"), ("SELECT", "providers")},
        ),
        (
            "INSERT INTO attempt_starts (log_id) VALUES ($1) ON CONFLICT DO NOTHING RETURNING log_id",
            {("INSERT", "attempt_starts"), ("SELECT", "attempt_starts")},
        ),
        (
            "INSERT INTO provider_buckets AS b (provider) VALUES ($1)"
            " ON CONFLICT (provider) DO UPDATE SET tokens = b.tokens - 1",
            {("INSERT", "provider_buckets"), ("SELECT", "provider_buckets"), ("UPDATE", "provider_buckets")},
        ),
        (
            "UPDATE communication_logs AS l SET status = 'SENT' FROM campaigns c WHERE c.id = l.campaign_id",
            {("UPDATE", "communication_logs"), ("SELECT", "communication_logs"), ("SELECT", "campaigns")},
        ),
        (
            "SELECT l.id FROM communication_logs l LEFT JOIN delivery_receipts r ON true FOR UPDATE OF l",
            {
                ("SELECT", "communication_logs"),
                ("SELECT", "delivery_receipts"),
                ("UPDATE", "communication_logs"),
            },
        ),
        (
            "DELETE FROM receipt_reports WHERE (a) IN"
            " (SELECT a FROM receipt_reports LIMIT 1 FOR UPDATE SKIP LOCKED)",
            {("DELETE", "receipt_reports"), ("SELECT", "receipt_reports"), ("UPDATE", "receipt_reports")},
        ),
        ("TRUNCATE tenant_routes, providers", {("TRUNCATE", "tenant_routes"), ("TRUNCATE", "providers")}),
        ("WITH x AS (SELECT 1) SELECT * FROM x", set()),
        ("the sender could not update the bucket, set it later", set()),
    ],
)
def test_the_reader_sees_the_privileges_a_statement_needs(sql: str, expected: set[tuple[str, str]]) -> None:
    assert needs(sql) == expected


def test_a_service_needs_what_the_triggers_its_statements_fire_do() -> None:
    # The API writes the routing tables, whose trigger bumps routing_version as the API's role
    assert {("UPDATE", "routing_version"), ("INSERT", "providers")} <= service_needs("api")
    # ... while the sender only reads them, and gets no write through a trigger
    assert not {p for p, _ in service_needs("sender") if p == "TRUNCATE"}
    assert ("UPDATE", "routing_version") not in service_needs("sender")
