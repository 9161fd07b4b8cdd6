"""Threat: a compromised service uses the database owner role to read or destroy what its job never
touches. Each service has a role of its own (``admin setup`` creates it), the deploy files connect each
process as its own role, and the database refuses the rest."""

from __future__ import annotations

import asyncpg
import pytest

from services.sender.starts import PostgresAttemptStarts, StartVerdict
from shared.db.pool import create_pool
from shared.db.roles import DatabaseRole, grant_statements, role_name, url_for
from tests.unit.test_deploy import database_users
from tools.stack import Environment

REFUSED: list[tuple[DatabaseRole, str]] = [
    (DatabaseRole.SENDER, "SELECT recipient, payload FROM communication_logs"),
    (DatabaseRole.SENDER, "UPDATE communication_logs SET status = 'SENT'"),
    (DatabaseRole.POLLER, "DELETE FROM communication_logs"),
    (DatabaseRole.POLLER, "SELECT key_hash FROM api_keys"),
    (DatabaseRole.RESPONDER, "SELECT key_hash FROM api_keys"),
    (DatabaseRole.RESPONDER, "DELETE FROM communication_logs"),
    (DatabaseRole.DASHBOARD, "UPDATE communication_logs SET status = 'FAILED'"),
    (DatabaseRole.DASHBOARD, "SELECT key_hash FROM api_keys"),
    (DatabaseRole.DLQ, "INSERT INTO api_keys (tenant) VALUES ('x')"),
    (DatabaseRole.API, "DROP TABLE communication_logs"),
    (DatabaseRole.API, "TRUNCATE communication_logs"),
    (DatabaseRole.API, "DELETE FROM schema_migrations"),
    (DatabaseRole.API, "DELETE FROM attempt_starts"),  # the sender's working tables are not the API's
    (DatabaseRole.API, "UPDATE provider_buckets SET tokens = 1e9"),
    (DatabaseRole.API, "TRUNCATE receipt_reports"),
    (DatabaseRole.DASHBOARD, "SELECT recipient FROM contacts"),
    (DatabaseRole.DASHBOARD, "DELETE FROM dead_letter_outbox"),
    (DatabaseRole.DLQ, "SELECT provider_status FROM delivery_receipts"),
    (DatabaseRole.RECEIPTS, "SELECT recipient, payload FROM communication_logs"),
    (DatabaseRole.RECEIPTS, "DELETE FROM communication_logs"),
    (
        DatabaseRole.RECEIPTS,
        "INSERT INTO delivery_receipts (log_id, attempt, provider, status) VALUES (1, 1, 'x', 'DELIVERED')",
    ),
    (DatabaseRole.RECEIPTS, "DROP TABLE receipt_reports"),
]

ALLOWED: list[tuple[DatabaseRole, str]] = [
    (DatabaseRole.POLLER, "SELECT count(*) FROM communication_logs"),
    (DatabaseRole.SENDER, "SELECT count(*) FROM providers"),
    (DatabaseRole.SENDER, "SELECT id, status, attempts FROM communication_logs"),  # a log's state only
    (DatabaseRole.SENDER, "DELETE FROM attempt_starts WHERE started_at < now() - interval '1 day'"),
    (DatabaseRole.RESPONDER, "SELECT count(*) FROM dead_letter_outbox"),
    (DatabaseRole.DASHBOARD, "SELECT count(*) FROM communication_logs"),
    (DatabaseRole.API, "SELECT count(*) FROM api_keys"),
    (DatabaseRole.API, "UPDATE providers SET active = active"),  # the trigger bumps routing_version
    (DatabaseRole.RECEIPTS, "DELETE FROM receipt_reports WHERE seen_at < now() - interval '1 day'"),
]


async def run_as(environment: Environment, role: DatabaseRole, sql: str) -> str:
    conn = await asyncpg.connect(url_for(environment.database_url, role))
    try:
        async with conn.transaction():
            await conn.execute(sql)
            raise RollbackOnly
    except RollbackOnly:
        return "ok"
    except asyncpg.InsufficientPrivilegeError:
        return "refused"
    finally:
        await conn.close()


class RollbackOnly(Exception):
    """Leave the database as it was, whatever the statement did."""


async def test_each_service_role_is_refused_what_its_job_never_does(environment: Environment) -> None:
    # Given the roles and grants admin setup made for this database
    # When each role tries what its service needs, and what it must never do
    allowed = {f"{role}: {sql}": await run_as(environment, role, sql) for role, sql in ALLOWED}
    refused = {f"{role}: {sql}": await run_as(environment, role, sql) for role, sql in REFUSED}
    # Then the first works and the database refuses every one of the rest
    assert set(allowed.values()) == {"ok"}, allowed
    assert set(refused.values()) == {"refused"}, refused


@pytest.mark.parametrize("role", list(DatabaseRole))
def test_no_role_but_the_api_is_granted_the_key_tables(role: DatabaseRole) -> None:
    tables = ["api_keys", "api_idempotency", "communication_logs", "schema_migrations"]
    granted = " ".join(s for s in grant_statements(role, tables) if s.startswith("GRANT"))
    assert ("api_keys" in granted) == (role == DatabaseRole.API)
    assert "schema_migrations" not in granted


async def test_the_sender_role_records_attempt_starts_reading_only_a_logs_state(
    environment: Environment,
) -> None:
    # Given a log PROCESSING at attempt 1, and the sender connected as its own role
    owner = await asyncpg.connect(environment.database_url)
    try:
        log_id = await owner.fetchval(
            "INSERT INTO communication_logs (channel, recipient, status, attempts)"
            " VALUES ('whatsapp', '+447700900123', 'PROCESSING', 1) RETURNING id"
        )
    finally:
        await owner.close()
    pool = await create_pool(url_for(environment.database_url, DatabaseRole.SENDER), max_size=1)
    try:
        # When it records the attempt's start twice (a redelivery), and prunes
        starts = PostgresAttemptStarts(pool)
        first = await starts.begin(log_id, 1, "wa")
        again = await starts.begin(log_id, 1, "wa")
        await starts.prune(3600)
    finally:
        await pool.close()
    # Then its grants were enough: the first start is recorded, the repeat is in doubt
    assert (first.verdict, again.verdict) == (StartVerdict.FIRST, StartVerdict.IN_DOUBT)


def test_the_deployed_processes_connect_as_their_own_roles() -> None:
    # Given the database user of every process in deploy/compose.yaml and deploy/k8s
    users = database_users()
    roles = {role_name(role) for role in DatabaseRole}
    # Then only the migrate job connects as the owner, and each other process as a role of its own (the
    # services of one process, such as its bulk-lane and urgent-lane ones, share that process's role)
    for deployment in ("compose", "k8s"):
        processes = {w: pu for w, pu in users.items() if w.startswith(deployment) and pu[0] != "admin"}
        assert processes and {u for _, u in processes.values()} <= roles, processes
        role_of = {package: user for package, user in processes.values()}
        assert len(role_of) == len(set(processes.values())), (
            f"{deployment}: a process has two roles: {processes}"
        )
        assert len(set(role_of.values())) == len(role_of), f"{deployment} shares a role: {processes}"
