"""Process plumbing shared by every service: signals, health and metrics endpoints, the event loop."""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, TypeVar

import asyncpg
import typer
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared.bus.amqp import RobustConnection, connect
from shared.core.errors import ConfigurationError
from shared.db.pool import create_pool
from shared.runtime.hardening import InsecureConfiguration, check_secrets
from shared.runtime.logs import configure_logging, get_logger
from shared.runtime.metrics import READY
from shared.runtime.probes import DatabaseProbe
from shared.runtime.resilience import retry_until_stopped
from shared.runtime.settings import Settings
from shared.runtime.startup import EXIT_CONFIGURATION, Endpoint

ReadinessCheck = Callable[[], bool | Awaitable[bool]]
DEFAULT_CHECK_TIMEOUT_S = 1.0


class Health:
    """What ``/readyz`` reports: every registered check must pass. A check is a plain predicate or a
    coroutine (a probe of the dependency itself); each gets ``timeout_s``, and a check that raises
    or does not answer in time counts as failing."""

    def __init__(self, timeout_s: float = DEFAULT_CHECK_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._checks: dict[str, ReadinessCheck] = {}

    def add(self, name: str, check: ReadinessCheck) -> None:
        self._checks[name] = check

    async def _passes(self, check: ReadinessCheck) -> bool:
        try:
            async with asyncio.timeout(self.timeout_s):
                result = check()
                if inspect.isawaitable(result):
                    result = await result
                return bool(result)
        except Exception:  # a probe that cannot answer is a failing probe
            return False

    async def failing(self) -> list[str]:
        names = list(self._checks)
        results = await asyncio.gather(*(self._passes(self._checks[n]) for n in names))
        return [name for name, ok in zip(names, results, strict=True) if not ok]


async def start_health_server(settings: Settings, health: Health) -> web.AppRunner | None:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz``; port 0 in settings means no server."""
    if not settings.metrics_port:
        return None

    async def metrics(_: web.Request) -> web.Response:
        failing = await health.failing()
        READY.set(0 if failing else 1)
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        failing = await health.failing()
        READY.set(0 if failing else 1)
        if failing:
            return web.json_response({"status": "not ready", "failing": failing}, status=503)
        return web.json_response({"status": "ready"})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.metrics_host, settings.metrics_port).start()
    return runner


def early_stop_requested() -> bool:
    """True when SIGTERM arrived before the event loop's handler was installed (see services/__init__)."""
    services = sys.modules.get("services")
    return bool(getattr(services, "EARLY_STOP", None))


S = TypeVar("S", bound=Settings)
# A service's main: its own settings class (services/<name>/settings.py), readiness, the stop event.
ServiceMain = Callable[[S, Health, asyncio.Event], Awaitable[None]]


def version() -> str:
    try:
        return importlib.metadata.version("switchboard")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def serve(name: str, main: ServiceMain[S], settings_type: type[S]) -> None:
    """Run ``main`` until it returns; SIGTERM/SIGINT set the stop event it watches. Exits 0 when clean,
    78 (EX_CONFIG) with one line on stderr when a backend refuses us for a reason retrying cannot fix,
    1 on a crash."""
    settings = settings_type()
    configure_logging(name, settings.log_level, settings.log_format)
    log = get_logger()
    try:
        check_secrets(settings, name)
    except InsecureConfiguration as exc:
        log.error("refusing_to_start", reason=str(exc))
        print(f"{name}: {exc}", file=sys.stderr, flush=True)
        sys.exit(EXIT_CONFIGURATION)

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal(signum: int) -> None:
            if not stop.is_set():
                log.info("service_stopping", signal=signal.Signals(signum).name)
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
        if early_stop_requested():
            stop.set()
        health = Health(settings.readiness_timeout_s)
        http = await start_health_server(settings, health)
        log.info("service_starting", metrics_port=settings.metrics_port, vhost=settings.vhost())
        try:
            await main(settings, health, stop)
        finally:
            if http is not None:
                await http.cleanup()
        log.info("service_stopped")

    try:
        import uvloop

        uvloop.run(runner())
    except KeyboardInterrupt:
        pass
    except ConfigurationError as exc:
        log.error("service_misconfigured", error=str(exc))
        print(f"{name}: {exc}", file=sys.stderr, flush=True)
        sys.exit(EXIT_CONFIGURATION)
    except Exception as exc:
        log.exception("service_crashed", error=repr(exc))
        sys.exit(1)


def print_version(value: bool) -> None:
    if value:
        print(f"switchboard {version()}")
        raise typer.Exit()


VersionOption = Annotated[
    bool,
    typer.Option("--version", callback=print_version, is_eager=True, help="Print the version and exit."),
]


def service_cli(
    name: str, main: ServiceMain[S], settings_type: type[S], help_text: str | None
) -> typer.Typer:
    """A one-command CLI for a service: ``--help`` and ``--version`` answer without starting anything."""
    app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)

    @app.command(help=help_text or f"Run the {name} process.")
    def run(_version: VersionOption = False) -> None:
        serve(name, main, settings_type)

    return app


def run_service(name: str, main: ServiceMain[S], settings_type: type[S]) -> None:
    """``python -m services.<name>``: parse the command line (``--help``, ``--version``), then serve."""
    module = sys.modules.get(main.__module__)
    help_text = inspect.cleandoc(module.__doc__) if module is not None and module.__doc__ else None
    service_cli(name, main, settings_type, help_text)(prog_name=f"python -m services.{name}")


async def open_broker(settings: Settings, name: str, stop: asyncio.Event) -> RobustConnection | None:
    """A named broker connection, retried while the broker is unreachable; a missing vhost or a
    refused login raises :class:`BackendUnusable` at once."""
    return await retry_until_stopped(
        "rabbitmq",
        lambda: connect(settings.amqp_url(), name),
        stop,
        endpoint=Endpoint.of_broker(settings.amqp_url()),
    )


@asynccontextmanager
async def backends(
    settings: Settings, name: str, stop: asyncio.Event, health: Health, pool_size: int
) -> AsyncIterator[tuple[asyncpg.Pool, RobustConnection] | None]:
    """A database pool and a broker connection, each retried until it works or ``stop`` is set
    (then ``None``), registered as readiness checks (PostgreSQL answering ``SELECT 1``, the broker
    connection open) and closed on the way out."""
    pool = await retry_until_stopped(
        "postgres",
        lambda: create_pool(settings.database_dsn(), max_size=pool_size, process=name),
        stop,
        endpoint=Endpoint.of_database(settings.database_dsn()),
    )
    if pool is None:
        yield None
        return
    closing: list[Callable[[], Awaitable[None]]] = []
    try:
        connection = await open_broker(settings, name, stop)
        if connection is None:
            yield None
            return
        closing.append(lambda: closed_within(connection.close(), "rabbitmq connection"))
        probe = DatabaseProbe(settings.database_dsn(), health.timeout_s, process=name)
        closing.append(lambda: closed_within(probe.close(), "postgres probe"))
        health.add("postgres", probe)
        health.add("rabbitmq", lambda: broker_connected(connection))
        yield pool, connection
    finally:
        # Side by side, each bounded: a server that stopped answering costs CLOSE_TIMEOUT_S once.
        await asyncio.gather(close_pool(pool), *(close() for close in closing))


# How long a connection or pool may take to close on the way out before it is dropped: a server that
# stopped answering must not keep a stopping process alive.
CLOSE_TIMEOUT_S = 2.0


async def closed_within(closing: Awaitable[object], what: str, timeout: float = CLOSE_TIMEOUT_S) -> None:
    """Await a close; one that fails or does not finish in ``timeout`` is logged and given up."""
    try:
        await asyncio.wait_for(closing, timeout)
    except Exception as exc:  # closing on the way out: nothing is left to save
        get_logger().warning("close_failed", what=what, error=repr(exc))


async def close_pool(pool: asyncpg.Pool, timeout: float = CLOSE_TIMEOUT_S) -> None:
    """Close gracefully (waiting for connections still in use) within ``timeout``, else terminate every
    connection (asyncpg's ``close()`` terminates when cancelled by the timeout)."""
    try:
        await asyncio.wait_for(pool.close(), timeout)
    except Exception as exc:
        pool.terminate()
        get_logger().warning("pool_terminated", error=repr(exc))


def broker_connected(connection: RobustConnection) -> bool:
    """Open and not in the middle of a reconnect (a robust connection is "not closed" meanwhile)."""
    connected = getattr(connection, "connected", None)
    return not connection.is_closed and (connected is None or connected.is_set())
