"""Command-line tools: a failure to reach PostgreSQL, RabbitMQ or its management API is one line on
stderr with the command or setting that fixes it, never a traceback (which could show a password).

Exit status: 78 (EX_CONFIG) for a problem retrying cannot fix (missing database or vhost, refused
login), 69 (EX_UNAVAILABLE) for one that may pass (nothing listening yet).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import typer
from rich.console import Console
from rich.markup import escape

from shared.core.errors import BackendUnusable
from shared.core.redact import mask_url_credentials
from shared.runtime.settings import Settings
from shared.runtime.startup import EXIT_CONFIGURATION, Endpoint, explain

EXIT_UNAVAILABLE = 69
_ADDRESS = re.compile(r"\('([^']+)', (\d+)\)")


def _backend_of(exc: BaseException, settings: Settings) -> Endpoint | None:
    module = type(exc).__module__.split(".")[0]
    database, broker = Endpoint.of_database(settings.database_dsn()), Endpoint.of_broker(settings.amqp_url())
    if module == "asyncpg":
        return database
    if module in ("aiormq", "pamqp", "aio_pika"):
        return broker
    found = _ADDRESS.search(" ".join(str(a) for a in getattr(exc, "args", ())))
    if found:
        port = int(found.group(2))
        if port == database.port:
            return database
        if port == broker.port:
            return broker
    return None


def _management(settings: Settings) -> str:
    return mask_url_credentials(settings.rabbitmq_management_url)


def explain_line(exc: BaseException, settings: Settings) -> tuple[str, int] | None:
    """(one line, exit status) for a failure to reach a backend; ``None`` for anything else."""
    if isinstance(exc, BackendUnusable):
        return str(exc), EXIT_CONFIGURATION
    if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code == 401:
        return (
            f"the RabbitMQ management API at {_management(settings)} refused user "
            f"{settings.rabbitmq_management_user!r}: check SWITCHBOARD_RABBITMQ_MANAGEMENT_USER and "
            "SWITCHBOARD_RABBITMQ_MANAGEMENT_PASSWORD",
            EXIT_CONFIGURATION,
        )
    if isinstance(exc, httpx.TransportError):
        return (
            f"the RabbitMQ management API at {_management(settings)} does not answer: is the "
            "rabbitmq_management plugin enabled, and is SWITCHBOARD_RABBITMQ_MANAGEMENT_URL right?",
            EXIT_UNAVAILABLE,
        )
    endpoint = _backend_of(exc, settings)
    if endpoint is None:
        return None
    problem = explain(endpoint, exc)
    if problem is None:  # e.g. a query error: a real bug, or a refusal the command reports itself
        return None
    return problem.line(), EXIT_CONFIGURATION if problem.permanent else EXIT_UNAVAILABLE


@contextmanager
def one_line_errors(settings: Settings, console: Console | None = None) -> Iterator[None]:
    """Turn a failure to reach a backend into one line on stderr and a non-zero exit."""
    try:
        yield
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:
        explained = explain_line(exc, settings)
        if explained is None:
            raise
        line, status = explained
        (console or Console(stderr=True)).print(
            f"[bold red]error:[/] {escape(mask_url_credentials(line))}", highlight=False, soft_wrap=True
        )
        raise typer.Exit(status) from None
