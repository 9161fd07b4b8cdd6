"""``make run`` (``python -m tools.run``): every Switchboard process on this machine, against the database
and vhost the ``SWITCHBOARD_*`` settings name, until Ctrl-C or SIGTERM; then each is stopped in order.

The API, the mock provider, the receipts receiver and the dashboard listen on their configured ports
(8080, 8081, 8082, 8090 by default); logs go to ``var/run/<time>/<process>.log`` (``var/run/latest``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import asyncpg
import typer
from rich.console import Console

from services.api.settings import ApiSettings
from services.dashboard.settings import DashboardSettings
from services.mock_provider.settings import MockProviderSettings
from services.receipts.settings import ReceiptsSettings
from shared.db.migrate import database_name
from shared.ops.management import Management
from shared.runtime.settings import Settings
from shared.runtime.startup import SETUP_COMMAND
from tools.signals import run_harness
from tools.stack import ROOT, Stack, default_environment

console = Console(stderr=True)
STOP_ORDER = ("api", "dashboard", "poller", "sender", "responder", "receipts", "mock_provider")


class NotPrepared(Exception):
    """The database or the vhost is missing: the message says which and what to run."""


async def check_prepared(settings: Settings) -> None:
    try:
        conn = await asyncpg.connect(settings.database_dsn(), timeout=10)
    except asyncpg.InvalidCatalogNameError:
        raise NotPrepared(
            f"database {database_name(settings.database_dsn())!r} does not exist: run `make setup` "
            f"(or `{SETUP_COMMAND}`)"
        ) from None
    try:
        if await conn.fetchval("SELECT to_regclass('communication_logs') IS NULL"):
            raise NotPrepared(
                f"the database has no Switchboard tables: run `make setup` (or `{SETUP_COMMAND}`)"
            )
    finally:
        await conn.close()
    async with Management(settings) as management:
        response = await management.client.get(f"/vhosts/{management._v(settings.vhost())}")
    if response.status_code == 404:
        raise NotPrepared(
            f"vhost {settings.vhost()!r} does not exist: run `make setup` (or `{SETUP_COMMAND}`)"
        )


def build(run_dir: Path) -> Stack:
    receipts, mock_provider = ReceiptsSettings(), MockProviderSettings()
    api, dashboard = ApiSettings(), DashboardSettings()
    environment = default_environment()
    environment.service_users = False  # the configured URL as it is: no dev-only users needed
    stack = Stack(environment, run_dir)
    receipts_url = f"http://127.0.0.1:{receipts.receipts_port}"
    mock = stack.add("mock_provider", mock_receipt_url=receipts_url)
    mock.pin(mock_provider.mock_port)  # the README's fixed ports, not free ones
    stack.add("poller")
    stack.add("sender", provider_url=f"http://127.0.0.1:{mock.port}")
    stack.add("responder")
    stack.add("receipts", receipts_port=str(receipts.receipts_port))
    stack.add("api").pin(api.api_port)
    stack.add("dashboard", dashboard_port=str(dashboard.dashboard_port))
    for process in stack.processes.values():
        process.new_session = True  # Ctrl-C reaches this harness only; it stops them in order
    return stack


async def run(log_root: Path) -> None:
    settings = Settings()
    await check_prepared(settings)
    run_dir = log_root / time.strftime("%Y%m%d-%H%M%S")
    stack = build(run_dir)
    latest = log_root / "latest"
    with contextlib.suppress(OSError):
        latest.unlink(missing_ok=True)
        latest.symlink_to(run_dir.name)
    try:
        await stack.start(timeout=60)
        api, dashboard, mock_provider = ApiSettings(), DashboardSettings(), MockProviderSettings()
        where = f"database {database_name(settings.database_dsn())!r}, vhost {settings.vhost()!r}"
        console.print(f"[green]running[/] against {where}")
        console.print(f"  API        http://127.0.0.1:{api.api_port}  (docs /docs, health /readyz)")
        console.print(f"  dashboard  http://127.0.0.1:{dashboard.dashboard_port}")
        console.print(
            f"  provider   http://127.0.0.1:{mock_provider.mock_port}/ledger  (the mock provider's sends)"
        )
        shown = run_dir.relative_to(ROOT) if run_dir.is_relative_to(ROOT) else run_dir
        console.print(f"  logs       {shown}/<process>.log")
        console.print("Ctrl-C stops every process.")
        while True:
            for process in stack.processes.values():
                if not process.alive():
                    code = process.popen.returncode if process.popen else None
                    raise RuntimeError(f"{process.name} exited with {code}; see {process.log_path}")
            await asyncio.sleep(1)
    finally:
        for service in STOP_ORDER:
            names = [p.name for p in stack.processes.values() if p.service == service]
            if names:
                stack.stop(*names)


def main(
    log_dir: Path = typer.Option(Path("var/run"), help="Where run directories go."),
) -> None:
    """Run every process until Ctrl-C or SIGTERM."""
    try:
        run_harness(run(log_dir.resolve()))
    except NotPrepared as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    except RuntimeError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from None


if __name__ == "__main__":
    typer.run(main)
