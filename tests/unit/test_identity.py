"""shared/runtime/identity.py: one name per process for RabbitMQ and PostgreSQL, read by the dashboard."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.dashboard.panels import processes
from shared.runtime import identity

HOSTS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=120).filter(
    lambda h: h[0].isalnum()
)
PROCESSES = st.sampled_from(["api", "dashboard", "poller", "sender", "responder", "receipts", "dlq"])


@given(host=HOSTS, process=PROCESSES)
def test_the_postgresql_name_fits_its_limit_keeps_the_pid_and_joins_the_broker_name(
    host: str, process: str
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(identity.socket, "gethostname", lambda: host)
        broker, database = identity.connection_name(process), identity.application_name(process)
    # Then PostgreSQL keeps the whole name (63 bytes), the pid is intact at its end...
    assert len(database.encode()) <= identity.APPLICATION_NAME_MAX
    assert database.startswith(f"{process}-") and database.endswith(f"-{os.getpid()}")
    # ... and the dashboard puts both connections of the process on one row
    (row,) = processes(
        [{"client_properties": {"connection_name": broker}, "channels": 1}],
        [{"name": database, "connections": 2, "since": None}],
    ) or [None]
    assert row is not None and (row["process"], row["pid"], row["host"]) == (process, os.getpid(), host)
    assert (row["broker_connections"], row["database_connections"]) == (1, 2)
