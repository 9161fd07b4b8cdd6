"""The ``switchboard`` command and ``python -m services.<x>``: help that starts nothing, one-line errors with
the command that fixes them, exit statuses, named connections in the management UI."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest

from services.cli import PROCESSES
from shared.runtime.startup import EXIT_CONFIGURATION, SETUP_COMMAND
from tests.helpers import wait_until
from tools.stack import Environment, Stack

ROOT = Path(__file__).resolve().parents[2]
SWITCHBOARD = [sys.executable, "-m", "services.cli"]
# Pointing at a database and a vhost that do not exist: anything that starts would exit 78 at once.
NOWHERE = {
    "SWITCHBOARD_DATABASE_URL": "postgresql://postgres:pw-not-shown@127.0.0.1:5432/sb_no_such_database",
    "SWITCHBOARD_RABBITMQ_URL": "amqp://guest:guest@127.0.0.1:5672/sb-no-such-vhost",
    "SWITCHBOARD_LOG_FORMAT": "json",
}


def run(
    args: list[str], env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        cwd=ROOT,
        env={**os.environ, **(env or {}), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("process", PROCESSES, ids=lambda p: p.command)
def test_help_starts_nothing(process: object) -> None:
    command = process.command  # type: ignore[attr-defined]
    package = process.package  # type: ignore[attr-defined]
    # Given settings under which starting the process would fail at once
    for args in ([*SWITCHBOARD, command, "--help"], [sys.executable, "-m", f"services.{package}", "--help"]):
        # When its help is asked for
        result = run(args, NOWHERE)
        # Then it prints usage and exits 0 without trying to connect
        assert result.returncode == 0, result.stderr
        assert "Usage" in result.stdout
        assert "service_starting" not in result.stdout + result.stderr


def test_top_level_help_version_and_listing() -> None:
    result = run([*SWITCHBOARD, "--help"])
    assert result.returncode == 0
    for word in ("admin", "dlq", "api-keys", "poller", "sender", "mock-provider", "--install-completion"):
        assert word in result.stdout
    version = run([*SWITCHBOARD, "--version"])
    assert version.returncode == 0 and version.stdout.startswith("switchboard ")
    listing = run([*SWITCHBOARD, "processes", "--json"])
    rows = [orjson.loads(line) for line in listing.stdout.splitlines()]
    assert {row["command"] for row in rows} == {p.command for p in PROCESSES}


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["poller"], "database 'sb_no_such_database'"),
        (["api"], "database 'sb_no_such_database'"),
        # The receipts receiver opens PostgreSQL (its replay memory) before the broker, as the poller does
        (["receipts"], "database 'sb_no_such_database'"),
        (["api-keys", "list"], "database 'sb_no_such_database'"),
        (["dlq", "stats"], "vhost 'sb-no-such-vhost'"),
    ],
)
def test_missing_database_or_vhost_is_one_line_naming_the_fix(args: list[str], names: str) -> None:
    # Given settings that name a database and a vhost that do not exist
    # When a process or a tool starts
    result = run(SWITCHBOARD + args, NOWHERE)
    # Then it exits 78 at once (no retry) with a line naming what is missing and the command that fixes it
    assert result.returncode == EXIT_CONFIGURATION, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if names in line]
    assert lines, result.stderr
    assert SETUP_COMMAND in lines[0]
    assert "Traceback" not in result.stderr and "pw-not-shown" not in result.stdout + result.stderr


def test_wrong_port_is_one_line_without_the_password() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: the connection is refused
        result = run(
            [*SWITCHBOARD, "admin", "migrate"],
            {"SWITCHBOARD_DATABASE_URL": f"postgresql://postgres:pw-not-shown@127.0.0.1:{port}/switchboard"},
        )
    assert result.returncode != 0
    output = (result.stdout + result.stderr).strip()
    assert len(output.splitlines()) == 1, output
    assert f"127.0.0.1:{port}" in output and "SWITCHBOARD_DATABASE_URL" in output
    assert "pw-not-shown" not in output and "Traceback" not in output


async def test_connections_are_named_after_their_process(environment: Environment, stack: Stack) -> None:
    # Given a poller and a responder running
    stack.add("poller")
    stack.add("responder")
    await stack.start()
    expected = {
        f"{name}-{socket.gethostname()}-{stack.processes[name].pid}" for name in ("poller", "responder")
    }
    settings = environment.settings
    auth = (settings.rabbitmq_management_user, settings.rabbitmq_management_password.get_secret_value())
    seen: set[str] = set()

    async def named() -> bool:
        # When the management API lists the vhost's connections (its statistics lag a few seconds)
        async with httpx.AsyncClient(timeout=5) as client:
            response = await client.get(
                f"{settings.rabbitmq_management_url}/api/vhosts/{environment.vhost}/connections", auth=auth
            )
        seen.clear()
        seen.update(c.get("client_properties", {}).get("connection_name", "") for c in response.json())
        return expected <= seen

    # Then each connection carries <process>-<host>-<pid>
    await wait_until(named, timeout=30)
    assert expected <= seen


@pytest.mark.parametrize(
    ("args", "env", "names"),
    [
        (
            ["receipts"],
            {"SWITCHBOARD_RABBITMQ_URL": "amqp://guest:pw-not-shown@127.0.0.1:5672/switchboard"},
            "'guest'",
        ),
        (
            ["poller"],
            {"SWITCHBOARD_DATABASE_URL": "postgresql://sb_nobody:pw-not-shown@127.0.0.1:5432/postgres"},
            "'sb_nobody'",
        ),
    ],
)
def test_a_refused_login_is_a_configuration_error_in_one_line(
    args: list[str], env: dict[str, str], names: str
) -> None:
    # Given a process whose broker or database refuses its login
    result = run([*SWITCHBOARD, *args], {**env, "SWITCHBOARD_LOG_FORMAT": "json"})
    # Then it exits 78 at once, naming the user and the setting to check, without the password
    assert result.returncode == EXIT_CONFIGURATION, result.stdout + result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "refused the login" in line]
    assert names in line and "check the user and password" in line
    assert "pw-not-shown" not in result.stdout + result.stderr
