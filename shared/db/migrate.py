"""The project's own migration step: create the database, apply shared/db/migrations/*.sql in order."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from importlib import resources
from urllib.parse import urlsplit, urlunsplit

import asyncpg

MIGRATIONS_PACKAGE = "shared.db.migrations"
_MIGRATION_LOCK = 0x5357_4244  # advisory lock id: concurrent migrators wait for each other


def database_name(dsn: str) -> str:
    return urlsplit(dsn).path.lstrip("/") or "postgres"


def admin_dsn(dsn: str) -> str:
    """The same server, database ``postgres``: for creating and dropping databases."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, parts.fragment))


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def ensure_database(dsn: str) -> bool:
    """Create the database named in ``dsn`` if it does not exist; True when it was created."""
    name = database_name(dsn)
    conn = await asyncpg.connect(admin_dsn(dsn))
    try:
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return False
        try:
            await conn.execute(f"CREATE DATABASE {_quote_ident(name)}")
        except asyncpg.DuplicateDatabaseError:
            return False
        return True
    finally:
        await conn.close()


async def drop_database(dsn: str) -> None:
    name = database_name(dsn)
    conn = await asyncpg.connect(admin_dsn(dsn))
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")
    finally:
        await conn.close()


def migration_files() -> list[tuple[str, str]]:
    """(version, sql) pairs in the order they apply."""
    folder = resources.files(MIGRATIONS_PACKAGE)
    files = sorted(
        (entry.name, entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    )
    return [(name.removesuffix(".sql"), sql) for name, sql in files]


async def migrate(dsn: str, files: Iterable[tuple[str, str]] | None = None) -> list[str]:
    """Apply pending migrations in order, each in its own transaction; returns the versions applied."""
    conn = await asyncpg.connect(dsn)
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {
            r["version"]: r["checksum"]
            for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")
        }
        for version, sql in files if files is not None else migration_files():
            checksum = hashlib.sha256(sql.encode()).hexdigest()
            if version in done:
                if done[version] != checksum:
                    raise RuntimeError(f"migration {version} was changed after it was applied")
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)", version, checksum
                )
            applied.append(version)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
        await conn.close()
