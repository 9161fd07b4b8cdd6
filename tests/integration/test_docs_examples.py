"""The runnable examples of docs/*.md (the README has tests/integration/test_readme.py), run as written.

- docs/api.md: every ``sh`` block, in order, in one bash shell, against a database that does not exist
  yet (its first command makes it) and an API on a free port. A ``curl`` must end with a comment whose
  first word is the HTTP status it answers; the test checks that status. Values come from earlier
  commands through shell variables, as the page says (``$KEY``, ``$OPS``).
- docs/benchmark.md: the ``sh`` lines that do not start minutes of load.
- docs/operations.md and README.md: every ``sql`` statement, on a freshly migrated database (``$1``,
  where a query takes one, is the campaign id: the test passes 1).
- docs/deploy.md: nothing runs here (a container engine, a cluster, the files of a compose deployment);
  each command is listed in SKIPPED with its reason.

A command that is neither run nor skipped fails the test, and so does a skip that matches nothing: a new
example cannot go untested by accident, and the list of skips cannot go stale.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import uuid
from pathlib import Path

import asyncpg
import psutil
import pytest

from shared.db.migrate import drop_database
from shared.runtime.settings import Settings
from tests.integration.test_readme import Command, shell_commands
from tools.ports import free_port
from tools.stack import ROOT

DOCS = ROOT / "docs"
API_PORT = "8080"
# Long-running: started in the background; the rest waits for its /readyz.
BACKGROUND = {"python -m services.api"}
SKIPPED: dict[str, dict[str, str]] = {
    "benchmark.md": {
        "make bench": "minutes of load; tests/integration/test_bench.py runs the benchmark small",
    },
    "deploy.md": {
        "docker ": "needs a container engine (tests/unit/test_deploy.py checks the files statically)",
        "cp deploy/.env.example": "part of the compose deployment (docker compose) on the reader's machine",
        "kubectl ": "needs a Kubernetes cluster (kubernetes-validate checks the manifests in make lint)",
        "set -a; . deploy/.env": "reads the .env of a compose deployment",
        "--passwords-from-env --output deploy/definitions.local.json": "writes into the reader's deploy/",
        "echo RABBITMQ_DEFINITIONS": "appends to the .env of a compose deployment",
        "id=12345": "the log id of the reader's own incident",
        "all.log": "greps the reader's own collected logs",
    },
}
STATUS = re.compile(r"#\s*(\d{3})\b")


def covered(name: str) -> list[Command]:
    return shell_commands((DOCS / name).read_text(encoding="utf-8"))


def skip_reason(doc: str, command: Command) -> str | None:
    return next((why for prefix, why in SKIPPED.get(doc, {}).items() if prefix in command.text), None)


def split_comment(text: str) -> tuple[str, str]:
    """The command without its trailing comment, and the comment (a ``#`` starting a word, unquoted)."""
    quote = ""
    for index, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or text[index - 1].isspace()):
            return text[:index].rstrip(), text[index:]
    return text, ""


def documented_status(command: Command) -> int:
    _, comment = split_comment(command.text)
    match = STATUS.match(comment)
    assert match, f"docs/api.md:{command.line}: a curl must end with `# <HTTP status> ...`: {command.text}"
    return int(match.group(1))


def api_script(commands: list[Command], port: int, state: Path) -> tuple[str, int]:
    """One bash script that runs every command of docs/api.md; curls print and check their status."""
    lines = ["set -uo pipefail", f"cd {ROOT}", 'export PATH="$PWD/.venv/bin:$PATH"']
    curls = 0
    for index, command in enumerate(commands):
        code, _ = split_comment(command.text)
        code = re.sub(rf"(localhost|127\.0\.0\.1):{API_PORT}\b", f"127.0.0.1:{port}", code)
        where = f"docs/api.md:{command.line}"
        lines.append(f"echo '::: {index} {where}'")
        if code in BACKGROUND:
            lines += [
                f"setsid {code} > {state}/background.log 2>&1 &",
                f"echo $! > {state}/background.pid",
                "for _ in $(seq 1 120); do",
                f"  curl -sf http://127.0.0.1:{port}/readyz > /dev/null && break",
                f"  kill -0 $(cat {state}/background.pid) 2>/dev/null"
                f" || {{ cat {state}/background.log; exit 3; }}",
                "  sleep 0.5",
                "done",
            ]
            continue
        if code.startswith("curl "):
            curls += 1
            expected = documented_status(command)
            lines += [
                f"status=$({code} -sS -o {state}/body -w '%{{http_code}}')",
                f"if [ \"$status\" != {expected} ]; then echo '::: FAILED {where}' status=$status"
                f" expected={expected}; cat {state}/body; exit 1; fi",
            ]
            continue
        lines += [code, "rc=$?", f"if [ $rc -ne 0 ]; then echo '::: FAILED {where}' rc=$rc; exit 1; fi"]
    return "\n".join(lines) + "\n", curls


def stop_background(state: Path) -> None:
    pid_file = state / "background.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    _, alive = psutil.wait_procs([psutil.Process(pid)] if psutil.pid_exists(pid) else [], 30)
    for process in alive:
        process.kill()


@pytest.mark.e2e
@pytest.mark.timeout(240)
async def test_every_command_and_curl_of_the_api_reference_runs_as_documented(tmp_path: Path) -> None:
    # Given a database that does not exist yet, and a free port for the API
    name = f"sb_docs_api_{uuid.uuid4().hex[:10]}"
    database_url = Settings().database_dsn().rsplit("/", 1)[0] + "/" + name
    port = free_port()
    env = {**os.environ, "SWITCHBOARD_DATABASE_URL": database_url, "SWITCHBOARD_API_PORT": str(port)}
    commands = covered("api.md")
    body, curls = api_script(commands, port, tmp_path)
    assert curls >= 10 and any(c.text.startswith("python -m services.admin migrate") for c in commands)
    try:
        # When every command runs in order, in one bash shell, as written
        result = await asyncio.to_thread(
            subprocess.run, ["bash", "-c", body], env=env, capture_output=True, text=True, timeout=200
        )
        output = result.stdout + result.stderr
        # Then each succeeds, and each curl answers the status the page gives it
        assert result.returncode == 0, output[-6000:]
        assert output.count(":::") == len(commands), output[-3000:]
        # ... and what they did is in the database: the keys (one revoked) and the routing they wrote
        conn = await asyncpg.connect(database_url)
        try:
            keys = await conn.fetch("SELECT tenant, admin, revoked_at IS NOT NULL AS revoked FROM api_keys")
            providers = await conn.fetchval("SELECT count(*) FROM providers")
        finally:
            await conn.close()
        assert sorted((k["tenant"], k["admin"], k["revoked"]) for k in keys) == [
            ("acme", False, False),
            ("acme", False, False),
            ("acme", False, True),
            ("ops", True, False),
        ]
        assert providers == 3
    finally:
        stop_background(tmp_path)
        await drop_database(database_url)


def test_the_benchmark_page_commands_run_or_say_why_not() -> None:
    # Given the benchmark page's commands that start no load
    commands = covered("benchmark.md")
    runnable = [c for c in commands if skip_reason("benchmark.md", c) is None]
    assert runnable, "nothing to run on docs/benchmark.md"
    for command in runnable:
        # When each runs as written / Then it succeeds
        code, _ = split_comment(command.text)
        result = subprocess.run(
            ["bash", "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, env=os.environ
        )
        assert result.returncode == 0, f"docs/benchmark.md:{command.line}: {result.stderr[-2000:]}"


def test_every_example_of_the_docs_is_run_or_skipped_with_a_reason() -> None:
    # Given every doc page with sh blocks, and the skips
    for path in sorted(DOCS.glob("*.md")):
        commands = covered(path.name)
        if not commands:
            continue
        # Then each page is covered here, and a skip that matches nothing fails (it went stale)
        assert path.name in {"api.md", *SKIPPED}, f"docs/{path.name} has sh examples that no test runs"
        stale = [p for p in SKIPPED.get(path.name, {}) if not any(p in c.text for c in commands)]
        assert not stale, f"docs/{path.name}: skips that match no command any more: {stale}"
    for command in covered("deploy.md"):
        assert skip_reason("deploy.md", command), f"docs/deploy.md:{command.line} is neither run nor skipped"


def sql_statements(markdown: str) -> list[tuple[int, str]]:
    """(line, statement) of every ```sql block, split on the semicolons that end a line."""
    found: list[tuple[int, str]] = []
    in_block, current, start = False, [], 0
    for number, line in enumerate(markdown.splitlines(), 1):
        if line.startswith("```"):
            in_block = line.strip() == "```sql"
            continue
        if not in_block or not line.strip() or line.lstrip().startswith("--"):
            continue
        if not current:
            start = number
        current.append(line)
        if line.rstrip().endswith(";"):
            found.append((start, "\n".join(current)))
            current = []
    return found


@pytest.mark.parametrize("page", ["docs/operations.md", "README.md"])
async def test_every_sql_query_of_the_docs_runs_on_a_migrated_database(page: str, pool: asyncpg.Pool) -> None:
    # Given the SQL the page gives operators, and a database with the current schema
    statements = sql_statements((ROOT / page).read_text(encoding="utf-8"))
    assert statements, f"no sql block in {page}"
    async with pool.acquire() as conn:
        for line, statement in statements:
            # When each runs ($1: the campaign id) / Then PostgreSQL accepts it
            arguments = [1] if "$1" in statement else []
            try:
                await conn.fetch(statement, *arguments)
            except asyncpg.PostgresError as exc:
                pytest.fail(f"{page}:{line}: {exc!r}\n{statement}")
