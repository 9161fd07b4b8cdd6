"""``python -m services.api``: serve the API; ``create-key``, ``revoke-key``, ``list-keys`` manage keys."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
import typer
import uvicorn
from rich.console import Console

from services.api.keys import generate_key, hash_key
from services.api.settings import DEV_PEPPER, ApiSettings, get_api_settings
from services.api.store import keys as store
from shared.logs import configure_logging, get_logger
from shared.settings import get_settings

T = TypeVar("T")
app = typer.Typer(add_completion=False, help="Switchboard HTTP API.")
console = Console(stderr=True)


@app.callback(invoke_without_command=True)
def main(ctx: typer.Context) -> None:
    """Without a command: serve the API (FastAPI on uvicorn), scheduler included."""
    if ctx.invoked_subcommand is None:
        serve()


def serve() -> None:
    from services.api.app import create_app

    settings, shared = get_api_settings(), get_settings()
    configure_logging("api", shared.log_level)
    log = get_logger("api")
    if settings.api_key_pepper.get_secret_value() == DEV_PEPPER:
        log.warning("default_key_pepper", hint="set SWITCHBOARD_API_KEY_PEPPER in production")
    log.info(
        "api_starting",
        host=settings.api_host,
        port=settings.api_port,
        scheduler=settings.api_scheduler_enabled,
    )
    config = uvicorn.Config(
        create_app(settings, shared),
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
        conn = await asyncpg.connect(get_settings().database_dsn())
        try:
            return await action(conn)
        finally:
            await conn.close()

    return asyncio.run(go())


@app.command("create-key")
def create_key(
    tenant: str = typer.Option(..., help="The tenant the key acts for."),
    name: str = typer.Option("", help="A label to recognise the key by."),
    rate_limit: float | None = typer.Option(None, help="Requests per second (default: the API's setting)."),
    admin: bool = typer.Option(
        False, "--admin", help="An operator key: may also change the global routing configuration."
    ),
) -> None:
    """Create an API key and print it once (only its hash is stored)."""
    settings: ApiSettings = get_api_settings()
    new = generate_key()
    digest = hash_key(new.key, settings.api_key_pepper.get_secret_value())

    async def insert(conn: asyncpg.Connection) -> None:
        await store.insert_key(conn, tenant, new.key_id, digest, name, rate_limit, admin)

    _run(insert)
    role = "operator key" if admin else "key"
    console.print(f"[green]created {role}[/] {new.key_id} for tenant {tenant!r}; it is shown only once:")
    print(new.key)


@app.command("revoke-key")
def revoke_key(key_id: str = typer.Argument(..., help="The key id (the part after sbk_).")) -> None:
    """Revoke a key (API processes notice within SWITCHBOARD_API_KEY_CACHE_S)."""

    async def revoke(conn: asyncpg.Connection) -> bool:
        return await store.revoke_key(conn, key_id)

    done = _run(revoke)
    if not done:
        console.print(f"[red]no active key {key_id}[/]")
        raise typer.Exit(1)
    console.print(f"[green]revoked[/] {key_id}")


@app.command("list-keys")
def list_keys(tenant: str | None = typer.Option(None, help="Only this tenant's keys.")) -> None:
    """List keys (ids and tenants; never the keys themselves)."""

    async def fetch(conn: asyncpg.Connection) -> list[asyncpg.Record]:
        return await store.list_keys(conn, tenant)

    for row in _run(fetch):
        state = "revoked" if row["revoked_at"] else "active"
        role = "admin" if row["admin"] else "tenant"
        print(f"{row['key_id']}\t{row['tenant']}\t{state}\t{role}\t{row['name']}")
