"""Readiness that can fail: every process's /readyz turns unready when PostgreSQL goes, ready when it is back.

The processes run against a PostgreSQL of the test's own (tools/private_services/), which
the test stops by its PID; the machine's shared PostgreSQL is never touched.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.helpers import wait_until
from tools.ports import free_port
from tools.private_services import PrivatePostgres
from tools.stack import Environment, Stack, create_environment, destroy_environment

PROCESSES = ("poller", "sender", "responder", "api", "dashboard")


async def readiness(client: httpx.AsyncClient, url: str) -> tuple[int, list[str]]:
    try:
        response = await client.get(f"{url}/readyz")
    except httpx.HTTPError:
        return 0, ["unreachable"]
    return response.status_code, response.json().get("failing", [])


@pytest.mark.e2e
async def test_every_process_turns_unready_without_postgres_and_ready_again(
    own_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    environment: Environment = await create_environment(
        "sbready", database_url=own_postgres.dsn("sbready"), readiness_timeout_s="1"
    )
    stack = Stack(environment, tmp_path / "logs")
    try:
        # Given the pipeline processes, the API and the dashboard on a PostgreSQL of the test's own
        quick = {"poll_interval_s": "0.1", "standby_delay_s": "0.5"}
        for name in ("poller", "sender", "responder"):
            stack.add(name, **quick)
        api = stack.add("api", api_key_pepper="p", api_scheduler_interval_s="0.5")
        api.env["SWITCHBOARD_API_PORT"] = str(api.port)
        stack.add("dashboard", dashboard_port=str(free_port()))  # /readyz on its metrics port
        await stack.start(timeout=60)
        urls = {name: stack.url(name) for name in PROCESSES}
        async with httpx.AsyncClient(timeout=5) as client:
            assert {n: (await readiness(client, u))[0] for n, u in urls.items()} == dict.fromkeys(
                PROCESSES, 200
            )

            # When that PostgreSQL stops
            await asyncio.to_thread(own_postgres.stop)

            # Then each process reports itself unready, naming postgres, and keeps running
            async def all_unready() -> bool:
                states = [await readiness(client, u) for u in urls.values()]
                return all(code == 503 and "postgres" in failing for code, failing in states)

            await wait_until(all_unready, timeout=60, what="every process unready")
            assert all(stack.processes[n].alive() for n in PROCESSES)

            # When it starts again
            await asyncio.to_thread(own_postgres.start)

            # Then each one is ready again, without a restart
            async def all_ready() -> bool:
                return all([(await readiness(client, u))[0] == 200 for u in urls.values()])

            await wait_until(all_ready, timeout=60, what="every process ready again")
            assert {n: stack.processes[n].starts for n in PROCESSES} == dict.fromkeys(PROCESSES, 1)
    finally:
        stack.stop()
        await destroy_environment(environment)
