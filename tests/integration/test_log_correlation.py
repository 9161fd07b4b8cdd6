"""One grep for a log id finds that message's whole path through every process's JSON logs."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from shared.db.pool import create_pool
from tests.helpers import all_terminal, insert_logs, wait_until
from tests.integration.test_pipeline import campaign, start_pipeline
from tools.stack import Stack, create_environment, destroy_environment

pytestmark = pytest.mark.e2e


def grep_pattern(log_id: int) -> str:
    """What an operator types: the id as ``log_id`` or inside a ``log_ids`` list (docs/deploy.md)."""
    return rf'"log_id":{log_id}[,}}]|"log_ids":\[([0-9]+,)*{log_id}[],]'


@dataclass
class Trace:
    log_dir: Path
    log_id: int
    attempts: int
    status: str

    def grep(self) -> list[dict[str, Any]]:
        result = subprocess.run(
            [
                "grep",
                "-h",
                "-E",
                grep_pattern(self.log_id),
                *sorted(str(p) for p in self.log_dir.glob("*.log")),
            ],
            capture_output=True,
            check=False,
            timeout=30,
        )
        assert result.returncode in (0, 1), result.stderr
        lines = [orjson.loads(line) for line in result.stdout.splitlines() if line.startswith(b"{")]
        return sorted(lines, key=lambda line: line["timestamp"])


@pytest.fixture(scope="module")
async def trace(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Trace]:
    """A pipeline run once for the module: a small campaign through poller, sender and responder."""
    environment = await create_environment("sbtest")
    log_dir = tmp_path_factory.mktemp(f"trace-{uuid.uuid4().hex[:6]}")
    stack = Stack(environment, log_dir)
    pool = await create_pool(environment.database_url, max_size=2)
    try:
        start_pipeline(stack, senders=1, mock_transient_rate="0.3")
        await stack.start()
        await insert_logs(pool, campaign(60, recipients=30))
        await wait_until(lambda: all_terminal(pool), timeout=90, what="every log terminal")
        # A log that needed a retry shows the richest path; any sent log would do.
        row = await pool.fetchrow(
            "SELECT id, attempts, status FROM communication_logs WHERE status = 'SENT'"
            " ORDER BY attempts DESC, id LIMIT 1"
        )
        assert row is not None
        stack.stop()
        yield Trace(log_dir, row["id"], row["attempts"], row["status"])
    finally:
        stack.stop()
        await pool.close()
        await destroy_environment(environment)


async def test_one_grep_follows_a_message_through_sender_and_responder(trace: Trace) -> None:
    # Given a log that went through the pipeline (with a retry when the failure mix gave one)
    # When its id is grepped across every process's log
    lines = trace.grep()
    # Then the sender's attempts and the responder's decisions are all there, every line naming it
    assert all(
        line.get("log_id") == trace.log_id or trace.log_id in line.get("log_ids", []) for line in lines
    )
    attempted = [line for line in lines if line["service"] == "sender" and line["event"] == "attempted"]
    assert sorted(line["attempt"] for line in attempted) == list(range(1, trace.attempts + 1))
    decisions = [line for line in lines if line["service"] == "responder"]
    assert [line["event"] for line in decisions if line["event"] == "sent"] == ["sent"]
    retries = [line for line in decisions if line["event"] == "retry_scheduled"]
    assert len(retries) == trace.attempts - 1
    # ... in causal order, with the recipient only as a hash
    path = [(line["service"], line["event"]) for line in lines if line["service"] in {"sender", "responder"}]
    assert path[0] == ("sender", "attempted") and path[-1] == ("responder", "sent")
    recipients = {line["recipient"] for line in attempted + decisions if "recipient" in line}
    assert len(recipients) == 1 and "@" not in next(iter(recipients)) and "+" not in next(iter(recipients))


async def test_one_grep_also_finds_the_poller_publishing_it(trace: Trace) -> None:
    # Given the same log / When its id is grepped / Then the poller's publish line comes first
    lines = trace.grep()
    services = [line["service"] for line in lines]
    assert "poller" in services
    assert services.index("poller") < services.index("sender")
