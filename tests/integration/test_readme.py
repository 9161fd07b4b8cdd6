"""The README walked as a newcomer would: every shell command it shows is run, in order, against a
database and a vhost that do not exist yet (the documented commands create them), with the API and
the other processes on free ports; the curl that sends a first message must end SENT.

Commands that run for minutes, change what other people's tests share, or need a container engine
are skipped, each with its reason (SKIPPED below). A skip that matches no command fails the test, so
the list cannot go stale.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest

from shared.db.migrate import drop_database
from shared.ops.management import Management
from shared.runtime.settings import Settings
from tools.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
API_DOC = ROOT / "docs" / "api.md"

SKIPPED = {
    "make demo": "a minute of load on the default database; tests/integration/test_demo.py runs the demo",
    "make test": "the test suite itself",
    "make chaos": "restarts RabbitMQ and PostgreSQL, which other test runs share; test_chaos.py runs it",
    "make bench": "minutes of load; tests/integration/test_bench.py runs it small",
}
# Long-running: started in the background, the rest waits for the API's /readyz.
BACKGROUND = ("make run",)
PORTS = {
    "8080": "SWITCHBOARD_API_PORT",
    "8081": "SWITCHBOARD_MOCK_PORT",
    "8082": "SWITCHBOARD_RECEIPTS_PORT",
    "8090": "SWITCHBOARD_DASHBOARD_PORT",
}


@dataclass(frozen=True)
class Command:
    text: str
    line: int


def shell_commands(markdown: str) -> list[Command]:
    """Every command of the ```sh blocks, continuation lines joined, comment-only lines dropped."""
    commands: list[Command] = []
    in_block, pending, start = False, "", 0
    for number, line in enumerate(markdown.splitlines(), 1):
        if line.startswith("```"):
            in_block = line.strip() == "```sh"
            continue
        if not in_block or (not pending and (not line.strip() or line.lstrip().startswith("#"))):
            continue
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        commands.append(Command((pending + line).strip(), start))
        pending = ""
    return commands


def skip_reason(command: Command) -> str | None:
    code = command.text.split(" #")[0]
    return next((reason for prefix, reason in SKIPPED.items() if prefix in code), None)


def test_every_curl_that_sends_a_body_says_it_is_json() -> None:
    # Given the curls of the README and the API reference
    for path in (README, API_DOC):
        for command in shell_commands(path.read_text(encoding="utf-8")):
            if command.text.startswith("curl") and re.search(r"\s-d\s|--data", command.text):
                # Then each one with a body says it is JSON (FastAPI answers 422 otherwise)
                assert "Content-Type: application/json" in command.text, f"{path.name}:{command.line}"


def test_the_front_section_is_short_and_shows_the_first_message() -> None:
    text = README.read_text(encoding="utf-8")
    front = text[: text.index("## How it works")]
    assert len(front.splitlines()) <= 45
    for needed in ("make demo", "make test", "Content-Type: application/json", "/v1/messages"):
        assert needed in front


def script(commands: list[Command], ports: dict[str, int], state: Path) -> tuple[str, list[Command]]:
    lines = ["set -uo pipefail", f"cd {ROOT}", 'export PATH="$PWD/.venv/bin:$PATH"']
    ran: list[Command] = []
    for index, command in enumerate(commands):
        if skip_reason(command):
            continue
        text = command.text
        for port, variable in PORTS.items():
            text = re.sub(rf"(127\.0\.0\.1|localhost):{port}\b", f"127.0.0.1:{ports[variable]}", text)
        ran.append(command)
        lines.append(f"echo '::: {index} README.md:{command.line}'")
        if any(text.startswith(b) for b in BACKGROUND):
            lines += [
                f"setsid {text} > {state}/background.log 2>&1 &",
                f"echo $! > {state}/background.pid",
                "for _ in $(seq 1 180); do",
                f"  curl -sf http://127.0.0.1:{ports['SWITCHBOARD_API_PORT']}/readyz > /dev/null && break",
                f"  kill -0 $(cat {state}/background.pid) 2>/dev/null"
                f" || {{ cat {state}/background.log; exit 3; }}",
                "  sleep 1",
                "done",
            ]
            continue
        lines += [
            text,
            "rc=$?",
            f"if [ $rc -ne 0 ]; then echo '::: FAILED README.md:{command.line}' rc=$rc; exit 1; fi",
        ]
        if text.startswith("KEY="):  # the first one is the key of the first message
            lines.append(f"[ -e {state}/key ] || printf '%s' \"$KEY\" > {state}/key")
    return "\n".join(lines) + "\n", ran


async def wait_for_status(database_url: str, log_id: int, timeout: float = 60) -> tuple[str, int]:
    conn = await asyncpg.connect(database_url)
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            row = await conn.fetchrow("SELECT status, attempts FROM communication_logs WHERE id = $1", log_id)
            if row is not None and row["status"] not in ("PENDING", "PROCESSING"):
                return row["status"], row["attempts"]
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"log {log_id} not terminal after {timeout}s: {row}")
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


def stop_background(state: Path) -> list[int]:
    """SIGTERM the background command's process group; the pids of processes still running after it."""
    pid_file = state / "background.pid"
    if not pid_file.exists():
        return []
    pid = int(pid_file.read_text())
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return []
    _, alive = psutil.wait_procs([psutil.Process(pid), *children] if psutil.pid_exists(pid) else children, 45)
    for process in alive:
        process.kill()
    return [p.pid for p in alive]


@pytest.mark.e2e
@pytest.mark.timeout(300)
async def test_a_newcomer_follows_the_readme_and_the_first_message_ends_sent(tmp_path: Path) -> None:
    # Given a database and a vhost that do not exist yet, and free ports for every process
    name = f"sb-readme-{uuid.uuid4().hex[:10]}"
    base = Settings()
    database_url = base.database_dsn().rsplit("/", 1)[0] + "/" + name.replace("-", "_")
    ports = {variable: free_port() for variable in PORTS.values()}
    env = {
        **os.environ,
        "SWITCHBOARD_DATABASE_URL": database_url,
        "SWITCHBOARD_RABBITMQ_URL": base.with_vhost(name),
        **{variable: str(port) for variable, port in ports.items()},
    }
    commands = shell_commands(README.read_text(encoding="utf-8"))
    unused = [prefix for prefix in SKIPPED if not any(prefix in c.text for c in commands)]
    assert not unused, f"skips that match no README command any more: {unused}"
    body, ran = script(commands, ports, tmp_path)
    assert any("curl" in c.text and "/v1/messages" in c.text for c in ran)
    try:
        # When every README command runs in order, in one shell, as written
        result = await asyncio.to_thread(
            subprocess.run,
            ["bash", "-c", body],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        output = result.stdout + result.stderr
        # Then each one succeeds
        assert result.returncode == 0, output[-6000:]
        # ... the first message was accepted as log 1, and it ends SENT (DELIVERED once its receipt came),
        # on its first attempt
        assert '"id":1' in result.stdout, output[-4000:]
        status, attempts = await wait_for_status(database_url, 1)
        assert (status, attempts) in {("SENT", 1), ("DELIVERED", 1)}
        # ... and the key the README made answers for it over the API
        key = (tmp_path / "key").read_text()
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(
                f"http://127.0.0.1:{ports['SWITCHBOARD_API_PORT']}/v1/messages/1", headers={"X-API-Key": key}
            )
        assert response.status_code == 200 and response.json()["status"] in ("SENT", "DELIVERED")
    finally:
        # ... and `make run` stops every process on SIGTERM
        survivors = stop_background(tmp_path)
        async with Management(base) as management:
            await management.delete_vhost(name)
        await drop_database(database_url)
    assert not survivors, f"processes left running after SIGTERM: {survivors}"
