"""The operator dashboard end to end: a real pipeline, the dashboard process, headless Chromium."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest

from shared.bus.topology import DEAD_LETTER_QUEUE
from shared.ops.management import Management
from tests.helpers import insert_logs, status_counts, wait_until
from tests.integration.test_pipeline import campaign, start_pipeline
from tools.ports import free_port
from tools.stack import ROOT, Stack

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
SCREENSHOT = ROOT / "reports" / "dashboard.png"


def ensure_browser() -> None:
    """Install Debian's chromium if needed (as `make test` does); skip only if that is impossible."""
    if not CHROMIUM.exists():
        subprocess.run(["bash", str(ROOT / "tools" / "ensure-browser.sh")], check=False, timeout=900)
    if not CHROMIUM.exists():
        pytest.skip(
            f"{CHROMIUM} is missing and tools/ensure-browser.sh could not install it (see its output)"
        )


def add_dashboard(stack: Stack, **overrides: str) -> str:
    port = free_port()
    stack.add("dashboard", dashboard_port=str(port), dashboard_refresh_s="0.5", **overrides)
    return f"http://127.0.0.1:{port}"


async def dlq_depth(stack: Stack) -> int:
    async with Management(stack.environment.settings) as management:
        queue = await management.queue(stack.environment.vhost, DEAD_LETTER_QUEUE)
    return int(queue.get("messages_ready") or 0) + int(queue.get("messages_unacknowledged") or 0)


@pytest.mark.e2e
async def test_the_page_shows_live_numbers_from_a_running_pipeline(stack: Stack, pool: asyncpg.Pool) -> None:
    ensure_browser()
    from playwright.async_api import async_playwright

    # Given a running pipeline with the default failure mix, and the dashboard watching it
    start_pipeline(stack, senders=1)
    url = add_dashboard(stack, dashboard_circuits_url=f"{stack.url('sender-0')}/metrics")
    await stack.start()
    # When a few hundred logs go through it, and a few more are scheduled for later
    ids = await insert_logs(pool, campaign(300, recipients=100))
    later = datetime.now(UTC) + timedelta(hours=1)
    await insert_logs(
        pool,
        [{"channel": "sms", "recipient": f"+4420700{i:05d}", "next_attempt_at": later} for i in range(12)],
    )
    await wait_until(lambda: all_terminal_or_scheduled(pool), timeout=90, what="the campaign finished")
    counts = await status_counts(pool)
    assert counts["PENDING"] == 12 and sum(counts.values()) == len(ids) + 12
    failed_ids = [
        r["id"]
        for r in await pool.fetch(
            "SELECT id FROM communication_logs WHERE status IN ('FAILED', 'BOUNCED') ORDER BY updated_at DESC"
        )
    ]
    assert failed_ids, "the default failure mix should fail a few logs"
    await wait_until(lambda: _dlq_has(stack, len(failed_ids)), timeout=30, what="dead letters in the DLQ")

    # Then the JSON snapshot carries the database's numbers
    async with httpx.AsyncClient(timeout=10) as client:
        snap = (await client.get(f"{url}/api/snapshot")).json()
    assert snap["counts"]["by_status"]["SENT"] == counts.get("SENT", 0)
    assert snap["counts"]["total"] == len(ids) + 12
    assert snap["errors"] == {}

    # ... and the page, in a real browser, shows them and keeps refreshing by itself
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1440, "height": 1000})
            await page.goto(url)
            await page.wait_for_function("document.getElementById('total').textContent === '312'")
            first_generated = await page.get_attribute("body", "data-generated-at")
            assert await page.text_content("#count-SENT") == f"{counts.get('SENT', 0):,}"
            assert await page.text_content("#count-PENDING") == "12"
            assert await page.text_content("#count-FAILED") == f"{counts.get('FAILED', 0):,}"
            await page.wait_for_function(
                f"document.getElementById('dlq-size').textContent === '{len(failed_ids)}'", timeout=20_000
            )
            queue_names = await page.eval_on_selector_all(
                "#queues tbody tr", "rows => rows.map(r => r.dataset.queue)"
            )
            assert {"dispatch.bulk.0", "responses.bulk.3", "dlq"} <= set(queue_names)
            failures = await page.eval_on_selector_all(
                "#failures tbody tr td:first-child", "cells => cells.map(c => Number(c.textContent))"
            )
            assert failures and set(failures) <= set(failed_ids)
            assert failures[0] == failed_ids[0], "the newest failure comes first"
            channels = await page.eval_on_selector_all(
                "#channels tbody tr td:first-child", "c => c.map(x => x.textContent)"
            )
            assert channels == ["email", "sms", "whatsapp"]
            # ... circuit states as the sender reports them (one row per provider it called)
            providers = await page.eval_on_selector_all(
                "#circuits tr td:first-child", "cells => cells.map(c => c.textContent)"
            )
            states = await page.eval_on_selector_all(
                "#circuits tr td:nth-child(2)", "cells => cells.map(c => c.textContent)"
            )
            assert {"mocksms", "mockmail", "mockwa"} <= set(providers)
            assert set(states) <= {"closed", "half-open", "open"}
            assert await page.text_content("#state") == "live"
            await page.wait_for_function(
                f"document.body.dataset.generatedAt !== '{first_generated}'", timeout=10_000
            )
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            await browser.close()
    assert SCREENSHOT.stat().st_size > 10_000


async def test_an_unreachable_broker_shows_as_degraded_not_as_a_broken_page(
    stack: Stack, pool: asyncpg.Pool
) -> None:
    # Given a dashboard whose RabbitMQ management API and circuit source are unreachable
    url = add_dashboard(
        stack,
        rabbitmq_management_url=f"http://127.0.0.1:{free_port()}",
        dashboard_circuits_url=f"http://127.0.0.1:{free_port()}/metrics",
    )
    await stack.start()
    await insert_logs(pool, [{"channel": "email", "recipient": "ops@example.com"}])
    # When the page's data is fetched
    async with httpx.AsyncClient(timeout=10) as client:
        snap = (await client.get(f"{url}/api/snapshot")).json()
        page = await client.get(url)
    # Then the database numbers are there, the broker is reported unavailable, and the page still loads
    assert snap["counts"]["by_status"]["PENDING"] == 1
    assert {"rabbitmq", "circuits"} <= set(snap["errors"]) and "postgres" not in snap["errors"]
    assert snap["dlq_size"] is None and snap["queues"] == []
    assert page.status_code == 200 and "dashboard.js" in page.text
    assert snap["circuits"] is None


async def all_terminal_or_scheduled(pool: asyncpg.Pool) -> bool:
    late = await pool.fetchval(
        "SELECT count(*) FROM communication_logs WHERE status = 'PROCESSING'"
        " OR (status = 'PENDING' AND next_attempt_at < now() + interval '10 minutes')"
    )
    return bool(late == 0)


async def _dlq_has(stack: Stack, count: int) -> bool:
    return await dlq_depth(stack) >= count
