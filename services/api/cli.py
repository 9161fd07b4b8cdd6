"""``python -m services.api``: serve the API; ``create-key``, ``revoke-key``, ``list-keys`` manage keys.

The same key commands are ``switchboard api-keys create|revoke|list``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import orjson
import typer
import uvicorn
from rich.console import Console
from rich.table import Table

from services.api.keys import generate_key, hash_key
from services.api.settings import ApiSettings, get_api_settings
from services.api.store import keys as store
from shared.core.errors import BackendUnusable
from shared.ops.cli_errors import one_line_errors
from shared.runtime.hardening import InsecureConfiguration, check_secrets
from shared.runtime.logs import configure_logging, get_logger
from shared.runtime.startup import EXIT_CONFIGURATION, Endpoint, explain

T = TypeVar("T")
app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False, help="Switchboard HTTP API.")
keys_app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    help="Create, list and revoke API keys (only their hashes are stored).",
)
console = Console(stderr=True)


@app.callback(invoke_without_command=True)
def main(ctx: typer.Context) -> None:
    """Without a command: serve the API (FastAPI on uvicorn), scheduler included."""
    if ctx.invoked_subcommand is None:
        serve()


async def _database_problem(dsn: str, timeout: float) -> str | None:
    """A one-line reason the API cannot work with this database at all, or None (also when PostgreSQL
    is merely unreachable: the API starts anyway, answers 503 and reconnects when it is back)."""
    try:
        conn = await asyncpg.connect(dsn, timeout=timeout)
    except Exception as exc:
        problem = explain(Endpoint.of_database(dsn), exc)
        return problem.line() if problem is not None and problem.permanent else None
    try:
        if await conn.fetchval("SELECT to_regclass('communication_logs') IS NULL"):
            return str(
                BackendUnusable(
                    f"database {Endpoint.of_database(dsn).name!r} has no Switchboard "
                    "tables: run `switchboard admin setup` (it applies the migrations)"
                )
            )
    finally:
        await conn.close()
    return None


def serve() -> None:
    from services.api.app import create_app

    settings = get_api_settings()
    configure_logging("api", settings.log_level, settings.log_format)
    log = get_logger("api")
    try:
        check_secrets(settings, "api")
    except InsecureConfiguration as exc:
        log.error("refusing_to_start", reason=str(exc))
        print(f"api: {exc}", file=sys.stderr, flush=True)
        raise typer.Exit(EXIT_CONFIGURATION) from None
    problem = asyncio.run(_database_problem(settings.database_dsn(), settings.api_db_connect_timeout_s))
    if problem is not None:
        log.error("service_misconfigured", error=problem)
        print(f"api: {problem}", file=sys.stderr, flush=True)
        raise typer.Exit(EXIT_CONFIGURATION)
    log.info(
        "api_starting",
        host=settings.api_host,
        port=settings.api_port,
        scheduler=settings.api_scheduler_enabled,
    )
    config = uvicorn.Config(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,
        access_log=False,
        lifespan="on",
        server_header=False,
    )
    uvicorn.Server(config).run()


def _run(action: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    async def go() -> T:
        conn = await asyncpg.connect(get_api_settings().database_dsn())
        try:
            return await action(conn)
        finally:
            await conn.close()

    with one_line_errors(get_api_settings(), console):
        return asyncio.run(go())


def create_key(
    tenant: str = typer.Option(..., help="The tenant the key acts for."),
    name: str = typer.Option("", help="A label to recognise the key by."),
    rate_limit: float | None = typer.Option(None, help="Requests per second (default: the API's setting)."),
    admin: bool = typer.Option(
        False, "--admin", help="An operator key: may also change the global routing configuration."
    ),
    expires_in_days: float | None = typer.Option(
        None, min=0.001, help="The key stops working after this many days (default: never)."
    ),
) -> None:
    """Create an API key and print it once on stdout (only its hash is stored)."""
    settings: ApiSettings = get_api_settings()
    new = generate_key()
    digest = hash_key(new.key, settings.api_key_pepper.get_secret_value())
    expires_at = None if expires_in_days is None else datetime.now(UTC) + timedelta(days=expires_in_days)

    async def insert(conn: asyncpg.Connection) -> None:
        await store.insert_key(conn, tenant, new.key_id, digest, name, rate_limit, admin, expires_at)

    _run(insert)
    role = "operator key" if admin else "key"
    console.print(f"[green]created {role}[/] {new.key_id} for tenant {tenant!r}; it is shown only once:")
    print(new.key)


def revoke_key(key_id: str = typer.Argument(..., help="The key id (the part after sbk_).")) -> None:
    """Revoke a key (API processes notice within SWITCHBOARD_API_KEY_CACHE_S)."""

    async def revoke(conn: asyncpg.Connection) -> bool:
        return await store.revoke_key(conn, key_id)

    done = _run(revoke)
    if not done:
        console.print(f"[red]no active key {key_id}[/]")
        raise typer.Exit(1)
    console.print(f"[green]revoked[/] {key_id}")


def key_rows(records: list[Any]) -> list[dict[str, Any]]:
    return [
        {
            "key_id": r["key_id"],
            "tenant": r["tenant"],
            "state": "revoked"
            if r["revoked_at"]
            else "expired"
            if r["expires_at"] is not None and r["expires_at"] <= datetime.now(UTC)
            else "active",
            "expires_at": r["expires_at"].isoformat() if r["expires_at"] else None,
            "role": "admin" if r["admin"] else "tenant",
            "name": r["name"],
            "rate_limit_per_s": r["rate_limit_per_s"],
            "created_at": r["created_at"].isoformat() if r["created_at"] else None,
        }
        for r in records
    ]


def list_keys(
    tenant: str | None = typer.Option(None, help="Only this tenant's keys."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line instead of a table."),
) -> None:
    """List keys (ids, tenants, state, role; never the keys themselves)."""

    async def fetch(conn: asyncpg.Connection) -> list[asyncpg.Record]:
        return await store.list_keys(conn, tenant)

    rows = key_rows(_run(fetch))
    if as_json:
        for row in rows:
            sys.stdout.write(orjson.dumps(row).decode() + "\n")
        return
    if not rows:
        console.print("no API keys" + (f" for tenant {tenant!r}" if tenant else ""))
        return
    table = Table("key id", "tenant", "state", "role", "name", "rate limit/s", "created")
    for row in rows:
        limit = row["rate_limit_per_s"]
        table.add_row(
            row["key_id"],
            row["tenant"],
            row["state"],
            row["role"],
            row["name"],
            "default" if limit is None else f"{limit:g}",
            (row["created_at"] or "")[:19],
        )
    Console(width=None if sys.stdout.isatty() else 160).print(table)


app.command("create-key")(create_key)
app.command("revoke-key")(revoke_key)
app.command("list-keys")(list_keys)
keys_app.command("create")(create_key)
keys_app.command("revoke")(revoke_key)
keys_app.command("list")(list_keys)
