"""Harness hygiene: chaos, bench and the demo stopped by SIGTERM (a CI timeout, a supervisor) stop every child
process and remove the vhost and database they created (chaos: the RabbitMQ node and PostgreSQL cluster of its
own, with their directory); ``make run`` stops its processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import asyncpg
import psutil
import pytest

from shared.ops.management import Management
from shared.runtime.settings import Settings
from tools.stack import Environment

ROOT = Path(__file__).resolve().parents[2]


def service_children(pid: int) -> list[psutil.Process]:
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            if any(part.startswith("services.") for part in child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


async def wait_for_children(
    harness: subprocess.Popen[bytes], at_least: int, timeout: float = 120
) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert harness.poll() is None, f"the harness exited early with {harness.returncode}"
        children = service_children(harness.pid)
        if len(children) >= at_least:
            return children
        await asyncio.sleep(0.5)
    raise AssertionError(f"fewer than {at_least} processes started within {timeout}s")


def created_by(child: psutil.Process) -> tuple[str, str]:
    """(vhost, database) the child was started against."""
    env = child.environ()
    vhost = unquote(urlsplit(env["SWITCHBOARD_RABBITMQ_URL"]).path.lstrip("/"))
    database = urlsplit(env["SWITCHBOARD_DATABASE_URL"]).path.lstrip("/")
    return vhost, database


async def exists(vhost: str, database: str) -> tuple[bool, bool]:
    settings = Settings()
    async with Management(settings) as management:
        response = await management.client.get(f"/vhosts/{management._v(vhost)}")
    conn = await asyncpg.connect(settings.database_dsn().rsplit("/", 1)[0] + "/postgres")
    try:
        has_db = bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database))
    finally:
        await conn.close()
    return response.status_code == 200, has_db


def listener(port: int) -> psutil.Process:
    """The process listening on ``port`` of the loopback."""
    for connection in psutil.net_connections("tcp"):
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port and connection.pid:
            return psutil.Process(connection.pid)
    raise AssertionError(f"nothing listens on {port}")


def private_servers(child: psutil.Process) -> tuple[list[psutil.Process], Path]:
    """The broker and database processes ``child`` was started against, and their directory."""
    env = child.environ()
    broker = listener(urlsplit(env["SWITCHBOARD_RABBITMQ_URL"]).port or 5672)
    database = listener(urlsplit(env["SWITCHBOARD_DATABASE_URL"]).port or 5432)
    directory = Path(broker.environ()["RABBITMQ_MNESIA_BASE"]).parent.parent
    return [broker, database], directory


HARNESSES = {
    "chaos": [
        "tools.chaos",
        "--no-restart-broker",
        "--no-restart-database",
        "--logs",
        "3000",
        "--recipients",
        "500",
        "--kills-per-type",
        "0",
        "--window",
        "5",
    ],
    "bench": ["tools.bench", "--scenario", "throughput", "--count", "20000", "--provider-latency", "200"],
}


@pytest.mark.e2e
@pytest.mark.timeout(240)
@pytest.mark.parametrize("harness", sorted(HARNESSES))
async def test_sigterm_mid_run_leaves_nothing_behind(harness: str, tmp_path: Path) -> None:
    # Given a harness running its processes against a vhost and database of its own
    args = [sys.executable, "-m", *HARNESSES[harness]]
    if harness == "chaos":
        args += ["--report", str(tmp_path / "chaos.json")]
    else:
        args += ["--output", str(tmp_path / "bench.json")]
    output = tmp_path / "harness.log"
    with output.open("wb") as log:
        running = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)  # noqa: ASYNC220
    try:
        children = await wait_for_children(running, at_least=3)
        if harness == "chaos":
            servers, directory = private_servers(children[0])
            assert directory.exists()
        else:
            vhost, database = created_by(children[0])
            assert await exists(vhost, database) == (True, True)
        # When it is sent SIGTERM mid-run
        running.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(running.wait, 90)
        # Then it exits 143, no process it started still runs, and what it created is gone
        assert code == 128 + signal.SIGTERM, output.read_text(errors="replace")[-3000:]
        if harness == "chaos":
            children += servers
        survivors = [c.pid for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        assert not survivors
        if harness == "chaos":
            assert not directory.exists()
        else:
            assert await exists(vhost, database) == (False, False)
    finally:
        if running.poll() is None:
            running.kill()
            running.wait(10)
        for child in service_children(running.pid):
            child.kill()


@pytest.mark.e2e
@pytest.mark.timeout(240)
async def test_the_demo_stopped_by_sigterm_stops_every_process(
    environment: Environment, tmp_path: Path
) -> None:
    # Given the demo delivering a campaign against a vhost and database of this test's own
    args = [sys.executable, "-m", "tools.demo", "--count", "20000", "--no-outage", "--log-dir", str(tmp_path)]
    output = tmp_path / "demo.out"
    with output.open("wb") as log:
        running = subprocess.Popen(  # noqa: ASYNC220
            args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **environment.env}
        )
    try:
        children = await wait_for_children(running, at_least=4)
        # When it is sent SIGTERM mid-run
        running.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(running.wait, 90)
        # Then it exits 143 and every process it started has stopped
        assert code == 128 + signal.SIGTERM, output.read_text(errors="replace")[-3000:]
        survivors = [c.pid for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        assert not survivors
    finally:
        if running.poll() is None:
            running.kill()
            running.wait(10)
        for child in service_children(running.pid):
            child.kill()
