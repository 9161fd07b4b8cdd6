"""``python -m services.admin``: prepare the database and the broker, export RabbitMQ definitions."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer
from rich.console import Console

from shared.setup import definitions_json, prepare_broker, prepare_database
from shared.settings import get_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Switchboard set-up commands.")
console = Console(stderr=True)


@app.command("migrate")
def migrate_command() -> None:
    """Create the database if needed and apply pending SQL migrations."""
    applied = asyncio.run(prepare_database(get_settings()))
    console.print(f"[green]migrations applied:[/] {', '.join(applied) if applied else 'none (up to date)'}")


@app.command("topology")
def topology_command() -> None:
    """Create the vhost, apply policies and declare exchanges, queues and bindings."""
    settings = get_settings()
    asyncio.run(prepare_broker(settings))
    console.print(f"[green]topology declared[/] on vhost {settings.vhost()!r} ({settings.shards} shards)")


@app.command("definitions")
def definitions_command(
    output: Path = typer.Option(Path("rabbitmq/definitions.json"), help="Where to write the definitions."),
    vhost: str = typer.Option("switchboard", help="The vhost named in the document."),
) -> None:
    """Write RabbitMQ definitions generated from the topology in code."""
    output.write_bytes(definitions_json(get_settings(), vhost))
    console.print(f"[green]wrote[/] {output}")


@app.command("setup")
def setup_command() -> None:
    """Everything a fresh machine needs: database, migrations, vhost, policies, topology."""
    migrate_command()
    topology_command()


if __name__ == "__main__":
    app()
