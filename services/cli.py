"""``switchboard``: one command for every process and tool.

``switchboard <process>`` runs a long-running process (the same as ``python -m services.<process>``);
``switchboard admin|dlq|api-keys ...`` are the tools. ``--help`` never starts anything: processes are
imported only once their command runs.
"""

from __future__ import annotations

import importlib
import signal
import sys
from dataclasses import dataclass
from typing import Annotated

import typer

import services
from shared.runtime.service import VersionOption, serve


@dataclass(frozen=True, slots=True)
class Process:
    command: str
    package: str
    summary: str


PROCESSES: tuple[Process, ...] = (
    Process("api", "api", "HTTP API: ingest, status, campaigns, routing (SWITCHBOARD_API_PORT, 8080)."),
    Process("poller", "poller", "Claim due logs from PostgreSQL and publish them to the dispatch shards."),
    Process("sender", "sender", "Call providers for dispatch messages; publish outcomes."),
    Process("responder", "responder", "Apply outcomes to the database: sent, retry, failed, dead letters."),
    Process(
        "receipts", "receipts", "HTTP receiver of provider delivery reports (SWITCHBOARD_RECEIPTS_PORT)."
    ),
    Process("dashboard", "dashboard", "The operator's web page (SWITCHBOARD_DASHBOARD_PORT, 8090)."),
    Process(
        "mock-provider",
        "mock_provider",
        "A fake SMS/email/WhatsApp provider with a failure mix and a ledger (development and tests).",
    ),
)
PROCESS_PANEL = "Processes (run until SIGTERM or Ctrl-C)"
TOOL_PANEL = "Tools"

app = typer.Typer(
    name="switchboard",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
    help="Switchboard: a message delivery pipeline over RabbitMQ and PostgreSQL.\n\n"
    "Start with `switchboard admin setup`, then run the processes (or `make demo`). "
    "Every command has --help; none starts anything when asked for help.",
    epilog="Configuration: SWITCHBOARD_* environment variables (README.md, Configuration).",
)


@app.callback()
def root(_version: VersionOption = False) -> None:
    """Switchboard: a message delivery pipeline over RabbitMQ and PostgreSQL."""


def _process_command(process: Process) -> None:
    def run(_version: VersionOption = False) -> None:
        if process.package == "api":
            from services.api.cli import serve as serve_api

            serve_api()
            return
        module = importlib.import_module(f"services.{process.package}.__main__")
        serve(process.package, module.main, module.SETTINGS)

    run.__doc__ = process.summary
    app.command(process.command, help=process.summary, rich_help_panel=PROCESS_PANEL)(run)


for _process in PROCESSES:
    _process_command(_process)


def _mount_tools() -> None:
    from services.admin.__main__ import app as admin_app
    from services.api.cli import keys_app
    from services.dlq.cli import app as dlq_app

    app.add_typer(admin_app, name="admin", rich_help_panel=TOOL_PANEL)
    app.add_typer(dlq_app, name="dlq", rich_help_panel=TOOL_PANEL)
    app.add_typer(keys_app, name="api-keys", rich_help_panel=TOOL_PANEL)


_mount_tools()


@app.command("processes", rich_help_panel=TOOL_PANEL)
def processes_command(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List the processes this command runs and the module each one is."""
    if as_json:
        import orjson

        for p in PROCESSES:
            line = {"command": p.command, "module": f"services.{p.package}", "summary": p.summary}
            sys.stdout.write(orjson.dumps(line).decode() + "\n")
        return
    for p in PROCESSES:
        print(f"{p.command:<14} python -m services.{p.package:<14} {p.summary}")


def main() -> None:
    """The console script. A SIGTERM that arrives while a process is still importing is remembered
    (see services/__init__.py), so that it starts already stopping and exits 0."""
    if len(sys.argv) > 1 and sys.argv[1] in {p.command for p in PROCESSES} and "--help" not in sys.argv:
        signal.signal(signal.SIGTERM, lambda signum, _frame: services.EARLY_STOP.append(signum))
    app(prog_name="switchboard")


if __name__ == "__main__":
    main()
