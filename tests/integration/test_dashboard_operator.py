"""The operator's dashboard at 3 a.m., end to end: a real pipeline with a campaign and failures, the
dashboard process, headless Chromium. Providers with breaker state, error rate and latency; lanes
with depth and consumers; campaign progress and ETA; a message found by id and by recipient with its
attempt timeline; what the DLQ holds by reason with the command that requeues it; the processes
connected to the broker or to PostgreSQL. Screenshots go to reports/."""

from __future__ import annotations

import asyncpg
import httpx
import pytest

from services.dashboard.panels import requeue_command
from shared.bus.topology import DISPATCH, LANE_EXCHANGES, RESPONSES, Lane, lane_exchange
from tests.helpers import all_terminal, insert_logs, wait_until
from tests.integration.test_dashboard import CHROMIUM, CHROMIUM_ARGS, add_dashboard, ensure_browser
from tests.integration.test_pipeline import start_pipeline
from tools.stack import ROOT, Stack

BULK_DISPATCH = lane_exchange(DISPATCH, Lane.BULK)
REPORTS = ROOT / "reports"
SCREENSHOTS = {
    "page": REPORTS / "dashboard-operator.png",
    "search": REPORTS / "dashboard-search.png",
}


@pytest.mark.e2e
@pytest.mark.timeout(240)
async def test_the_operator_finds_providers_lanes_campaigns_dead_letters_processes_and_a_message(
    stack: Stack, pool: asyncpg.Pool
) -> None:
    ensure_browser()
    from playwright.async_api import async_playwright

    # Given a running pipeline, the dashboard watching it, and a campaign of 120 logs of which 6 go to
    # numbers the provider calls invalid
    start_pipeline(stack, senders=1)
    url = add_dashboard(stack, dashboard_circuits_url=f"{stack.url('sender-0')}/metrics")
    stack.add("api", api_scheduler_interval_s="0.5")  # on PostgreSQL only
    await stack.start(timeout=90)  # seven processes starting at once on a shared machine
    campaign_id = await pool.fetchval(
        "INSERT INTO campaigns (name, total_count) VALUES ('spring sale', 120) RETURNING id"
    )
    rows: list[dict[str, object]] = [
        {"channel": "sms", "recipient": f"+1415555{i:04d}", "campaign_id": campaign_id} for i in range(114)
    ]
    rows += [
        {"channel": "sms", "recipient": f"+99955501{i:02d}", "campaign_id": campaign_id} for i in range(6)
    ]
    ids = await insert_logs(pool, rows)
    await wait_until(lambda: all_terminal(pool), timeout=120, what="the campaign finished")
    invalid = await pool.fetchval(
        "SELECT id FROM communication_logs WHERE recipient = '+9995550103' AND campaign_id = $1", campaign_id
    )

    # When the operator's snapshot is read (the management API's consumer counts lag a few seconds)
    async with httpx.AsyncClient(timeout=10) as client:

        async def consumers_counted() -> bool:
            lanes = (await client.get(f"{url}/api/snapshot")).json()["lanes"] or []
            return any(lane["lane"] == BULK_DISPATCH and not lane["unconsumed"] for lane in lanes)

        await wait_until(consumers_counted, timeout=60, what="the broker's consumer counts")

        async def letters_seen() -> bool:  # the look into the DLQ is refreshed every 30 s
            dead = (await client.get(f"{url}/api/snapshot")).json()["dead_letters"]
            codes = [r["error_code"] for r in dead.get("reasons", []) for _ in range(r["count"])]
            return codes.count("INVALID_NUMBER") >= 6

        await wait_until(letters_seen, timeout=90, what="the dead letters in the dashboard's look")

        async def processes_listed() -> bool:  # the management API lists a connection after its stats
            rows = (await client.get(f"{url}/api/snapshot")).json()["processes"] or []
            connected = {(r["process"], r["pid"]) for r in rows if r["broker_connections"]}
            wanted = {
                (stack.processes[n].service, stack.processes[n].pid)
                for n in ("poller", "sender-0", "responder")
            }
            return wanted <= connected

        await wait_until(processes_listed, timeout=60, what="each process's broker connection listed")
        snap = (await client.get(f"{url}/api/snapshot")).json()
        found = (await client.get(f"{url}/api/search", params={"q": str(invalid)})).json()
        by_recipient = (await client.get(f"{url}/api/search", params={"q": "+1 415 555 0007"})).json()
    assert snap["errors"] == {}
    # Then providers carry calls, error rate, latency and the breaker state the sender reports
    providers = {p["provider"]: p for p in snap["providers"]}
    assert providers["mocksms"]["calls"] >= 120 and providers["mocksms"]["errors"] >= 6
    assert providers["mocksms"]["latency_p50_ms"] is not None and providers["mocksms"]["state"] == "closed"
    # ... the lanes, each shard with its consumer
    lanes = {lane["lane"]: lane for lane in snap["lanes"]}
    # (one lane per exchange and priority class: dispatch.urgent, dispatch.bulk, responses.urgent, ...)
    assert set(LANE_EXCHANGES) <= set(lanes)
    assert lanes[BULK_DISPATCH]["shards"] == 4 and lanes[BULK_DISPATCH]["unconsumed"] == []
    assert lanes[lane_exchange(RESPONSES, Lane.BULK)]["consumers"] >= 4
    # ... the campaign, complete
    (campaign,) = [c for c in snap["campaigns"] if c["id"] == campaign_id]
    assert (campaign["done"], campaign["total"], campaign["progress"], campaign["eta_s"]) == (
        120,
        120,
        1.0,
        0,
    )
    # ... what the DLQ holds now, by reason, with the command that requeues it, read whole
    dead = snap["dead_letters"]
    assert dead["truncated"] is False and dead["scanned"] == dead["depth"] >= 6
    reasons = {(r["reason"], r["error_code"]): r for r in dead["reasons"]}
    invalid_numbers = reasons[("permanent_error", "INVALID_NUMBER")]
    assert invalid_numbers["count"] >= 6 and invalid_numbers["status"] == "FAILED"
    assert invalid_numbers["command"] == requeue_command("permanent_error", "INVALID_NUMBER")
    # ... the processes connected to the broker or to PostgreSQL, by name, host and pid, one row each
    seen = {(p["process"], p["pid"]): p for p in snap["processes"]}
    for name in ("poller", "sender-0", "responder"):
        process = stack.processes[name]
        assert seen[(process.service, process.pid)]["broker_connections"] >= 1
    for name in ("poller", "responder", "api", "dashboard"):
        process = stack.processes[name]
        assert seen[(process.service, process.pid)]["database_connections"] >= 1, (name, snap["processes"])
    api = seen[("api", stack.processes["api"].pid)]
    assert api["broker_connections"] == 0
    # ... and one message's timeline, by id and by recipient (typed with spaces)
    (log,) = found["results"]
    assert log["log_id"] == invalid and log["status"] == "FAILED"
    assert [e["event"] for e in log["events"]][:2] == ["created", "attempt 1: permanent"]
    assert [r["log_id"] for r in by_recipient["results"]] == [ids[7]]
    assert any(e["event"].startswith("attempt 1: ") for e in by_recipient["results"][0]["events"])

    # ... and the page, in a real browser, shows all of it
    REPORTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1440, "height": 1000})
            await page.goto(url)
            await page.wait_for_selector('#providers tr[data-provider="mocksms"]')
            await page.wait_for_selector(f'#campaigns tr[data-campaign="{campaign_id}"]')
            await page.wait_for_selector(f'#lanes tr[data-lane="{BULK_DISPATCH}"]')
            await page.wait_for_selector('#processes tr[data-process="poller"]')
            await page.wait_for_selector('#processes tr[data-process="api"]')
            await page.wait_for_selector('#dead-letters tr[data-reason="permanent_error"]')
            assert (
                await page.text_content('#providers tr[data-provider="mocksms"] td:nth-child(2)') == "closed"
            )
            commands = await page.eval_on_selector_all("#dead-letters code", "c => c.map(x => x.textContent)")
            assert invalid_numbers["command"] in commands
            campaign_row = await page.text_content(f'#campaigns tr[data-campaign="{campaign_id}"]')
            assert campaign_row is not None and "100.0 %" in campaign_row and "done" in campaign_row
            await page.screenshot(path=str(SCREENSHOTS["page"]), full_page=True)
            # When the operator searches for the failed message
            await page.fill("#search-q", str(invalid))
            await page.click("#search button[type=submit]")
            await page.wait_for_selector(f'#search-results .result[data-log-id="{invalid}"]')
            events = await page.eval_on_selector_all(
                "#search-results .timeline li b", "items => items.map(i => i.textContent)"
            )
            # Then its timeline shows the permanent failure
            assert events[:2] == ["created", "attempt 1: permanent"] and "now FAILED" in events
            await page.screenshot(path=str(SCREENSHOTS["search"]), full_page=False)
        finally:
            await browser.close()
    for path in SCREENSHOTS.values():
        assert path.stat().st_size > 10_000, path
