"""``python -m services.admin``: prepare the database and the broker, export RabbitMQ definitions."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
import typer
from rich.console import Console
from rich.table import Table

from services.admin.passwords import ServicePasswords
from services.admin.settings import AdminSettings
from shared.bus.topology import USER_PREFIX, ServiceRole
from shared.ops.cli_errors import one_line_errors
from shared.ops.management import Management
from shared.ops.setup import (
    TopologyConflict,
    argument_conflicts,
    definitions_json,
    effective_policy,
    ensure_service_users,
    policy_problems,
    prepare_broker,
    prepare_database,
    rabbit_password_hash,
    retire_pre_lane_topology,
    topology_for,
)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    help="Prepare the database and the broker (setup, migrate, topology, users), check, export definitions.",
)
console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

Prefix = Annotated[str, typer.Option(help="Service users are named <prefix>-<service>.")]
DEFINITIONS = Path("rabbitmq/definitions.json")
T = TypeVar("T")


def _run(work: Coroutine[Any, Any, T]) -> T:
    with one_line_errors(AdminSettings(), console):
        return asyncio.run(work)


@app.command("migrate")
def migrate_command() -> None:
    """Create the database if needed and apply pending SQL migrations."""
    applied = _run(prepare_database(AdminSettings()))
    console.print(f"[green]migrations applied:[/] {', '.join(applied) if applied else 'none (up to date)'}")


@app.command("topology")
def topology_command(
    recreate_empty: Annotated[
        bool,
        typer.Option(
            "--recreate-empty",
            help="Delete and redeclare queues whose arguments differ from the code's, if they are empty and "
            "unused (stop the services first).",
        ),
    ] = False,
    users: Annotated[
        bool, typer.Option("--users/--no-users", help="Also create the per-service users.")
    ] = True,
    user_prefix: Prefix = USER_PREFIX,
) -> None:
    """Create the vhost, apply policies, check and declare exchanges, queues and bindings, add users."""
    settings = AdminSettings()
    try:
        recreated = _run(prepare_broker(settings, recreate_conflicting=recreate_empty))
    except TopologyConflict as exc:
        console.print(f"[bold red]topology conflict[/] on vhost {settings.vhost()!r}:\n{exc}")
        raise typer.Exit(1) from exc
    for name in recreated:
        console.print(f"[yellow]recreated[/] queue {name!r} with the code's arguments")
    for line in _run(retire_pre_lane_topology(settings)).explain():
        console.print(f"[yellow]upgrade:[/] {line}")
    console.print(f"[green]topology declared[/] on vhost {settings.vhost()!r} ({settings.shards} shards)")
    if users:
        users_command(user_prefix)


@app.command("users")
def users_command(user_prefix: Prefix = USER_PREFIX) -> None:
    """Create or update one RabbitMQ user per service with least-privilege permissions on the vhost.

    Passwords come from SWITCHBOARD_RABBITMQ_<SERVICE>_PASSWORD; without one an existing user keeps its
    password and a new one gets the dev-only password documented in rabbitmq/README.md.
    """
    settings = AdminSettings()
    outcomes = _run(ensure_service_users(settings, ServicePasswords().by_role(), user_prefix))
    for outcome in outcomes:
        style = "yellow" if outcome.password == "dev-only default" else "green"
        console.print(f"[{style}]user {outcome.user}[/]: password {outcome.password}, permissions set")
    if any(o.password == "dev-only default" for o in outcomes):
        console.print(
            "[yellow]dev-only passwords are for local machines; set SWITCHBOARD_RABBITMQ_<SERVICE>_"
            "PASSWORD and run `python -m services.admin users` anywhere else.[/]"
        )


@app.command("check")
def check_command(
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per queue on stdout, then the problems.")
    ] = False,
) -> None:
    """Report, without changing anything, queues whose arguments or policies do not fit the code."""
    settings = AdminSettings()
    rows, problems = _run(_check(settings))
    if as_json:
        for row in rows:
            sys.stdout.write(orjson.dumps(row).decode() + "\n")
        sys.stdout.write(orjson.dumps({"problems": problems}).decode() + "\n")
    else:
        table = Table(*CHECK_COLUMNS, title=f"vhost {settings.vhost()}")
        for row in rows:
            table.add_row(*("" if row[c] is None else str(row[c]) for c in CHECK_COLUMNS))
        console.print(table)
    if problems:
        if not as_json:
            console.print("[bold red]problems:[/]\n  " + "\n  ".join(problems))
        raise typer.Exit(1)
    if not as_json:
        console.print("[green]topology, arguments and policies fit the code[/]")


CHECK_COLUMNS = (
    "queue",
    "messages",
    "consumers",
    "policy",
    "delivery-limit",
    "dead-letter-exchange",
    "max-length",
)


async def _check(settings: AdminSettings) -> tuple[list[dict[str, Any]], list[str]]:
    vhost, topology = settings.vhost(), topology_for(settings)
    async with Management(settings) as management:
        queues = {q["name"]: q for q in await management.queues(vhost)}
        policies = await management.policies(vhost)
    rows: list[dict[str, Any]] = []
    for spec in topology.queues():
        info = queues.get(spec.name)
        policy = effective_policy(spec.name, policies)
        definition = policy["definition"] if policy else {}
        rows.append(
            {
                "queue": spec.name,
                "messages": info.get("messages") if info else "missing",
                "consumers": info.get("consumers") if info else None,
                "policy": policy["name"] if policy else "none",
                **{
                    key: definition.get(key)
                    for key in ("delivery-limit", "dead-letter-exchange", "max-length")
                },
            }
        )
    missing = [f"queue {spec.name!r} does not exist" for spec in topology.queues() if spec.name not in queues]
    conflicts = argument_conflicts({n: q.get("arguments", {}) for n, q in queues.items()}, topology.queues())
    return rows, missing + [c.explain() for c in conflicts] + policy_problems(topology, policies)


@app.command("definitions")
def definitions_command(
    output: Annotated[Path, typer.Option(help="Where to write the definitions.")] = DEFINITIONS,
    vhost: Annotated[str, typer.Option(help="The vhost named in the document.")] = "switchboard",
    passwords_from_env: Annotated[
        bool,
        typer.Option(
            "--passwords-from-env",
            help="Hash SWITCHBOARD_RABBITMQ_<SERVICE>_PASSWORD (random salts) instead of the dev-only "
            "passwords: for a production document, which is not committed.",
        ),
    ] = False,
) -> None:
    """Write RabbitMQ definitions generated from the topology in code (users with password hashes only)."""
    settings = AdminSettings()
    hashes = None
    if passwords_from_env:
        passwords = ServicePasswords().by_role()
        missing = [ServicePasswords.variable(role) for role, value in passwords.items() if not value]
        if missing:
            console.print(f"[red]set {', '.join(missing)}[/]")
            raise typer.Exit(1)
        hashes = {role: rabbit_password_hash(value) for role, value in passwords.items() if value}
    output.write_bytes(definitions_json(settings, vhost, users=hashes))
    kind = "password hashes from the environment" if hashes else "dev-only password hashes"
    console.print(f"[green]wrote[/] {output} ({kind}; users {', '.join(r.value for r in ServiceRole)})")


@app.command("setup")
def setup_command() -> None:
    """Everything a fresh machine needs: database, migrations, vhost, policies, topology, users."""
    migrate_command()
    topology_command(recreate_empty=False, users=True, user_prefix=USER_PREFIX)


if __name__ == "__main__":
    app()
