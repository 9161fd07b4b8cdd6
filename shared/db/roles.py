"""A PostgreSQL role per service, with only the grants its SQL needs (created by ``admin setup``).

The database owner (the migrating user) keeps DDL; services connect as their own role
(``SWITCHBOARD_DATABASE_URL`` of each process, e.g. ``postgresql://switchboard_sender:...@db/switchboard``),
so a compromised sender cannot read communication logs, the dashboard can only read, and no service can
drop or alter a table. Roles are cluster-wide; grants are per database, so ``setup`` grants them in each
database it prepares. Passwords come from ``SWITCHBOARD_POSTGRES_<ROLE>_PASSWORD``; without one an existing
role keeps its password and a new role gets the documented development password.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

ROLE_PREFIX = "switchboard_"
READ = ("SELECT",)
WRITE = ("SELECT", "INSERT", "UPDATE", "DELETE")
ADD = ("SELECT", "INSERT")
CHANGE = ("SELECT", "INSERT", "UPDATE")
ROUTING_TABLES = (
    "routing_version",
    "providers",
    "channel_routes",
    "channel_policies",
    "tenant_routes",
    "tenant_channel_fallbacks",
)


class DatabaseRole(StrEnum):
    POLLER = "poller"
    SENDER = "sender"
    RESPONDER = "responder"
    API = "api"
    DLQ = "dlq"
    DASHBOARD = "dashboard"
    RECEIPTS = "receipts"


@dataclass(frozen=True, slots=True)
class Grant:
    table: str
    privileges: tuple[str, ...]
    columns: tuple[str, ...] = ()  # only these columns (a column privilege); empty: the whole table


# Exactly what each service's SQL needs (tests/security/test_database_grants.py reads the services' SQL
# and fails on a missing grant and on one no statement uses). Identity columns need no sequence grant,
# and triggers run with the privileges of whoever fires them (the routing tables' trigger updates
# routing_version). Nobody may TRUNCATE, and nobody but the owner may alter anything.
GRANTS: dict[DatabaseRole, tuple[Grant, ...]] = {
    DatabaseRole.POLLER: (Grant("communication_logs", ("SELECT", "UPDATE")),),
    # The sender never sees a log's content: it gets everything it needs in the dispatch message. It
    # reads only a log's state, to tell an in-doubt attempt from a stale copy (services/sender/starts.py).
    DatabaseRole.SENDER: (
        *(Grant(t, READ) for t in ROUTING_TABLES),
        Grant("delivery_attempts", READ),  # success rates for reliability routing
        Grant("provider_buckets", CHANGE),
        Grant("sender_pacing", CHANGE),
        Grant("attempt_starts", ("SELECT", "INSERT", "DELETE")),
        Grant("communication_logs", READ, columns=("id", "status", "attempts")),
    ),
    DatabaseRole.RESPONDER: (
        *(Grant(t, READ) for t in ROUTING_TABLES),
        Grant("communication_logs", ("SELECT", "UPDATE")),
        Grant("delivery_attempts", ADD),
        Grant("delivery_receipts", ADD),
        Grant("campaigns", ("SELECT", "UPDATE")),
        Grant("dead_letter_outbox", WRITE),
    ),
    DatabaseRole.DLQ: (
        Grant("communication_logs", ("SELECT", "UPDATE")),
        Grant("campaigns", ("SELECT", "UPDATE")),
        Grant("delivery_attempts", READ),
    ),
    # Ingest, status, campaigns, contact lists, templates, keys and the routing configuration; never the
    # sender's or responder's working tables (rate-limit buckets, pacing, attempt starts, receipts' replays).
    DatabaseRole.API: (
        Grant("api_keys", CHANGE),
        Grant("api_idempotency", WRITE),
        Grant("communication_logs", CHANGE),
        Grant("paused_logs", WRITE),
        Grant("delivery_attempts", READ),
        Grant("delivery_receipts", READ),
        Grant("dead_letter_outbox", ("SELECT", "DELETE")),  # a retried log's letter is settled
        Grant("campaigns", CHANGE),
        Grant("campaign_specs", CHANGE),
        Grant("campaign_runs", CHANGE),
        Grant("campaign_pacing", CHANGE),
        Grant("contact_lists", CHANGE),
        Grant("contacts", ADD),
        Grant("message_templates", ADD),
        Grant("routing_version", ("SELECT", "UPDATE")),  # bumped by the routing tables' trigger
        Grant("providers", WRITE),
        Grant("channel_routes", WRITE),
        Grant("channel_policies", CHANGE),
        Grant("tenant_routes", WRITE),
        Grant("tenant_channel_fallbacks", WRITE),
    ),
    # Read-only, and only what its panels show: never keys, contact lists, templates or payload copies.
    DatabaseRole.DASHBOARD: (
        Grant("communication_logs", READ),
        Grant("delivery_attempts", READ),
        Grant("delivery_receipts", READ),
        Grant("campaigns", READ),
        Grant("providers", READ),
    ),
    # The internet-facing receiver: the reports it has taken (replays), nothing else.
    DatabaseRole.RECEIPTS: (Grant("receipt_reports", WRITE),),
}


def role_name(role: DatabaseRole) -> str:
    return f"{ROLE_PREFIX}{role.value}"


def dev_password(role: DatabaseRole) -> str:
    """The documented development password: refused in production (shared/runtime/hardening.py)."""
    return f"switchboard-dev-{role.value}"


class RolePasswords(BaseSettings):
    """``SWITCHBOARD_POSTGRES_<ROLE>_PASSWORD``, read by ``admin migrate``/``setup`` (never by a service)."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_POSTGRES_", extra="ignore")

    poller_password: SecretStr | None = None
    sender_password: SecretStr | None = None
    responder_password: SecretStr | None = None
    api_password: SecretStr | None = None
    dlq_password: SecretStr | None = None
    dashboard_password: SecretStr | None = None
    receipts_password: SecretStr | None = None

    def by_role(self) -> dict[DatabaseRole, str]:
        """The passwords that are set."""
        found: dict[DatabaseRole, str] = {}
        for role in DatabaseRole:
            secret: SecretStr | None = getattr(self, f"{role.value}_password")
            if secret is not None and secret.get_secret_value():
                found[role] = secret.get_secret_value()
        return found


def url_for(dsn: str, role: DatabaseRole, password: str | None = None) -> str:
    """``dsn`` (the owner's) with ``role``'s user and password instead."""
    parts = urlsplit(dsn)
    netloc = f"{quote(role_name(role), safe='')}:{quote(password or dev_password(role), safe='')}"
    netloc += f"@{parts.hostname or 'localhost'}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def grant_statements(role: DatabaseRole, tables: list[str]) -> list[str]:
    """What ``role`` is granted in a database with ``tables`` (pure: unit-tested). Everything granted
    before is revoked first, so that narrowing a role in GRANTS narrows it in every database."""
    name = role_name(role)
    statements = [
        f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {name}",
        f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {name}",
    ]
    for grant in GRANTS[role]:
        if grant.table not in tables:
            continue
        columns = f" ({', '.join(grant.columns)})" if grant.columns else ""
        statements.append(f"GRANT {', '.join(grant.privileges)}{columns} ON TABLE {grant.table} TO {name}")
    return statements


@dataclass(frozen=True, slots=True)
class RoleOutcome:
    role: str
    password: str  # where it came from: "environment", "dev-only default" or "unchanged"


async def ensure_database_roles(
    dsn: str, passwords: Mapping[DatabaseRole, str] | None = None
) -> list[RoleOutcome]:
    """Create or update each service's role and grant it exactly its tables in ``dsn``'s database."""
    passwords = RolePasswords().by_role() if passwords is None else passwords
    outcomes: list[RoleOutcome] = []
    conn = await asyncpg.connect(dsn)
    try:
        database = await conn.fetchval("SELECT current_database()")
        tables = [
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ]
        for role in DatabaseRole:
            name = role_name(role)
            exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name)
            password = passwords.get(role)
            if not exists:
                # CREATE ROLE takes no parameters: the name is ours, the password a quoted literal.
                literal = await conn.fetchval("SELECT quote_literal($1)", password or dev_password(role))
                with contextlib.suppress(asyncpg.DuplicateObjectError):  # a concurrent setup made it
                    await conn.execute(f"CREATE ROLE {name} LOGIN PASSWORD {literal}")
                source = "environment" if password else "dev-only default"
            elif password:
                literal = await conn.fetchval("SELECT quote_literal($1)", password)
                await conn.execute(f"ALTER ROLE {name} LOGIN PASSWORD {literal}")
                source = "environment"
            else:
                source = "unchanged"
            await conn.execute(f'GRANT CONNECT ON DATABASE "{database}" TO {name}')
            await conn.execute(f"GRANT USAGE ON SCHEMA public TO {name}")
            async with conn.transaction():
                for statement in grant_statements(role, tables):
                    await conn.execute(statement)
            outcomes.append(RoleOutcome(name, source))
    finally:
        await conn.close()
    return outcomes
