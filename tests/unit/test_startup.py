"""shared/runtime/startup.py and shared/ops/cli_errors.py: a failed connection explained in one line, with its
fix."""

from __future__ import annotations

import socket

import asyncpg
import pytest
from aiormq.exceptions import AMQPConnectionError, ProbableAuthenticationError
from hypothesis import given
from hypothesis import strategies as st
from pamqp.commands import Connection
from pamqp.exceptions import AMQPInternalError

from shared.bus.amqp import named_url
from shared.ops.cli_errors import EXIT_UNAVAILABLE, explain_line
from shared.runtime.identity import connection_name
from shared.runtime.logs import resolve_format
from shared.runtime.settings import Settings
from shared.runtime.startup import EXIT_CONFIGURATION, SETUP_COMMAND, Endpoint, explain

DATABASE = Endpoint.of_database("postgresql://app:s3cret-pw@db.example:5433/orders")
BROKER = Endpoint.of_broker("amqp://svc:s3cret-pw@mq.example:5673/prod")


def close(code: int, text: str) -> AMQPInternalError:
    return AMQPInternalError(
        "one of ['Connection.OpenOk']", Connection.Close(reply_code=code, reply_text=text)
    )


def test_endpoints_carry_no_password() -> None:
    assert (DATABASE.host, DATABASE.port, DATABASE.name, DATABASE.user) == (
        "db.example",
        5433,
        "orders",
        "app",
    )
    assert (BROKER.host, BROKER.port, BROKER.name, BROKER.user) == ("mq.example", 5673, "prod", "svc")
    assert "s3cret" not in repr(DATABASE) + repr(BROKER)


@pytest.mark.parametrize(
    ("endpoint", "exc", "permanent", "words"),
    [
        (
            DATABASE,
            asyncpg.InvalidCatalogNameError('database "orders" does not exist'),
            True,
            ["'orders'", SETUP_COMMAND],
        ),
        (
            DATABASE,
            asyncpg.InvalidPasswordError("password authentication failed"),
            True,
            ["'app'", "refused"],
        ),
        (
            DATABASE,
            ConnectionRefusedError(111, "Connect call failed ('db.example', 5433)"),
            False,
            ["db.example:5433"],
        ),
        (DATABASE, socket.gaierror(-2, "Name or service not known"), False, ["does not resolve"]),
        (BROKER, close(530, "NOT_ALLOWED - vhost prod not found"), True, ["vhost 'prod'", SETUP_COMMAND]),
        (
            BROKER,
            close(530, "NOT_ALLOWED - access to vhost 'prod' refused for user 'svc'"),
            True,
            ["may not use"],
        ),
        (
            BROKER,
            ProbableAuthenticationError("ACCESS_REFUSED - Login was refused"),
            True,
            ["'svc'", "refused"],
        ),
        (
            BROKER,
            AMQPConnectionError(111, "Connect call failed ('mq.example', 5673)"),
            False,
            ["mq.example:5673"],
        ),
    ],
)
def test_each_failure_gets_one_line_with_its_fix(
    endpoint: Endpoint, exc: BaseException, permanent: bool, words: list[str]
) -> None:
    # When a connection fails this way
    problem = explain(endpoint, exc)
    # Then it is recognised, permanent or not, and said in one line without the password
    assert problem is not None
    assert problem.permanent is permanent
    line = problem.line()
    assert "\n" not in line and "s3cret" not in line
    for word in words:
        assert word in line


def test_an_unknown_error_is_not_explained() -> None:
    assert explain(DATABASE, RuntimeError("boom")) is None
    assert explain(BROKER, ValueError("x")) is None


def test_cli_lines_find_the_backend_and_the_exit_status() -> None:
    settings = Settings(
        database_url="postgresql://postgres:pw@127.0.0.1:5439/switchboard",  # type: ignore[arg-type]
        rabbitmq_url="amqp://guest:guest@127.0.0.1:5679/switchboard",  # type: ignore[arg-type]
    )
    refused_db = ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5439)")
    line, status = explain_line(refused_db, settings) or ("", 0)
    assert "PostgreSQL" in line and status == EXIT_UNAVAILABLE
    line, status = explain_line(close(530, "NOT_ALLOWED - vhost switchboard not found"), settings) or ("", 0)
    assert "vhost 'switchboard'" in line and status == EXIT_CONFIGURATION
    assert explain_line(KeyError("not a backend"), settings) is None


@given(st.sampled_from(["poller", "sender", "dlq"]), st.sampled_from(["", "heartbeat=30", "name=old&x=1"]))
def test_named_url_sets_exactly_one_name(process: str, query: str) -> None:
    url = named_url(f"amqp://u:p@h:5672/v?{query}" if query else "amqp://u:p@h:5672/v", process)
    assert url.count("name=") == 1
    assert f"name={connection_name(process)}" in url
    assert url.startswith("amqp://u:p@h:5672/v?")
    assert connection_name(process).split("-")[0] == process


@pytest.mark.parametrize(
    ("chosen", "isatty", "expected"),
    [
        ("auto", True, "console"),
        ("auto", False, "json"),
        ("json", True, "json"),
        ("CONSOLE", False, "console"),
    ],
)
def test_log_format(chosen: str, isatty: bool, expected: str) -> None:
    assert resolve_format(chosen, isatty) == expected


def test_unknown_log_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log format"):
        resolve_format("xml", True)
