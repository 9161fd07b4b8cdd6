"""Running a whole Switchboard locally: an isolated environment (vhost + database) and its processes.

Used by the demo, the chaos harness, the benchmark and the end-to-end tests, so that every one of
them starts, watches and stops the real processes the same way.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from shared.bus.topology import ServiceRole, service_user
from shared.db.migrate import drop_database
from shared.db.roles import DatabaseRole, url_for
from shared.ops.management import Management
from shared.ops.setup import dev_password, ensure_service_users, prepare_broker, prepare_database
from shared.runtime.settings import Settings
from tools.ports import free_port

ROOT = Path(__file__).resolve().parent.parent


SERVICE_ROLES = frozenset(role.value for role in ServiceRole)
DATABASE_ROLES = frozenset(role.value for role in DatabaseRole)


def _with_database(dsn: str, name: str) -> str:
    head, _, _ = dsn.rpartition("/")
    return f"{head}/{name}"


@dataclass
class Environment:
    """A vhost and a database of their own, and the ``SWITCHBOARD_*`` variables pointing at them."""

    name: str
    settings: Settings
    env: dict[str, str]
    # Run each process as its own least-privilege RabbitMQ user (dev passwords) instead of the admin's.
    service_users: bool = False

    def database_url_for(self, service: str) -> str | None:
        """The database URL of ``service``'s own role, when it has one and service users are on."""
        if not self.service_users or service not in DATABASE_ROLES:
            return None
        return url_for(self.settings.database_dsn(), DatabaseRole(service))

    def amqp_url_for(self, service: str) -> str | None:
        """The AMQP URL of ``service``'s own user, when it has one and service users are on."""
        if not self.service_users or service not in SERVICE_ROLES:
            return None
        role = ServiceRole(service)
        parts = urlsplit(self.settings.amqp_url())
        netloc = f"{quote(service_user(role), safe='')}:{quote(dev_password(role), safe='')}@{parts.hostname}"
        if parts.port:
            netloc += f":{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))

    @property
    def database_url(self) -> str:
        return self.settings.database_dsn()

    @property
    def amqp_url(self) -> str:
        return self.settings.amqp_url()

    @property
    def vhost(self) -> str:
        return self.settings.vhost()


def environment_settings(
    name: str, overrides: dict[str, str] | None = None, base: Settings | None = None
) -> dict[str, str]:
    base = base or Settings()
    overrides = overrides or {}
    env = {
        "SWITCHBOARD_DATABASE_URL": _with_database(base.database_dsn(), name.replace("-", "_")),
        "SWITCHBOARD_RABBITMQ_URL": base.with_vhost(name),
        "SWITCHBOARD_RABBITMQ_MANAGEMENT_URL": base.rabbitmq_management_url,
    }
    env.update(
        {k if k.startswith("SWITCHBOARD_") else f"SWITCHBOARD_{k.upper()}": v for k, v in overrides.items()}
    )
    return env


async def create_environment(
    prefix: str = "sb", service_users: bool = False, base: Settings | None = None, **overrides: str
) -> Environment:
    """A vhost and a database named ``<prefix>-<random>`` on the servers ``base`` points at (by
    default the settings' own, the machine's shared ones), prepared as ``make setup`` would."""
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    env = environment_settings(name, overrides, base)
    settings = Settings.model_validate({k.removeprefix("SWITCHBOARD_").lower(): v for k, v in env.items()})
    await prepare_database(settings)
    await prepare_broker(settings)
    if service_users:
        await ensure_service_users(settings, {})
    return Environment(name, settings, env, service_users)


def default_environment(base: Settings | None = None, **overrides: str) -> Environment:
    """The environment the settings point at (by default database and vhost ``switchboard``, which
    ``make setup`` prepares). Nothing is created here; never pass it to :func:`destroy_environment`."""
    base = base or Settings()
    env = {
        "SWITCHBOARD_DATABASE_URL": base.database_dsn(),
        "SWITCHBOARD_RABBITMQ_URL": base.amqp_url(),
        "SWITCHBOARD_RABBITMQ_MANAGEMENT_URL": base.rabbitmq_management_url,
    }
    for key, value in overrides.items():
        env[key if key.startswith("SWITCHBOARD_") else f"SWITCHBOARD_{key.upper()}"] = value
    # The overrides are for the processes; these settings need only the backends among them.
    fields: dict[str, Any] = {k.removeprefix("SWITCHBOARD_").lower(): v for k, v in env.items()}
    settings = Settings(**{k: v for k, v in fields.items() if k in Settings.model_fields})
    return Environment(settings.vhost(), settings, env, service_users=True)


async def destroy_environment(environment: Environment) -> None:
    async with Management(environment.settings) as management:
        await management.delete_vhost(environment.vhost)
    await drop_database(environment.database_url)


class ProcessExited(RuntimeError):
    """A process of the stack exited while it was expected to become ready."""


@dataclass
class ManagedProcess:
    name: str
    service: str
    env: dict[str, str]
    log_path: Path
    port: int
    popen: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None
    starts: int = 0
    # In a session of its own, a terminal's Ctrl-C reaches only the parent, which then stops it in order.
    new_session: bool = False
    port_variable: str = "SWITCHBOARD_METRICS_PORT"
    # A port the caller chose (the README's fixed ports), never moved when it is taken.
    pinned: bool = False
    # Where this start's output begins in the (appended) log.
    log_offset: int = 0

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(self) -> None:
        if self.alive():
            return
        self.log_file = self.log_path.open("ab")
        self.log_offset = self.log_file.tell()
        self.popen = subprocess.Popen(
            [sys.executable, "-m", f"services.{self.service}"],
            cwd=ROOT,
            env={**os.environ, **self.env},
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=self.new_session,
        )
        self.starts += 1

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.popen is not None
            self.popen.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        if self.popen is None:
            return None
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def lost_its_port(self) -> bool:
        """Whether this start exited because another process took the port the stack gave it: a line of
        its output names EADDRINUSE and that port (a fixed port of its own settings does not count)."""
        if self.alive():
            return False
        with self.log_path.open("rb") as log:
            log.seek(self.log_offset)
            lines = log.read().lower().splitlines()
        port = f"{self.port})".encode()  # ('127.0.0.1', <port>): as asyncio's bind error names it
        return any(b"address already in use" in line and port in line for line in lines)

    def move_to(self, port: int) -> None:
        self.port = port
        self.env[self.port_variable] = str(port)

    def pin(self, port: int) -> ManagedProcess:
        """Run on ``port`` (chosen by the caller, not the stack) and fail rather than move if it is taken."""
        self.move_to(port)
        self.pinned = True
        return self

    def close_log(self) -> None:
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None


@dataclass
class Stack:
    """The processes of one environment: start, wait until ready, kill, restart, stop."""

    environment: Environment
    log_dir: Path
    processes: dict[str, ManagedProcess] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def add(self, service: str, name: str | None = None, **overrides: str) -> ManagedProcess:
        name = name or service
        port = free_port()
        env = dict(self.environment.env)
        env.update(
            {
                k if k.startswith("SWITCHBOARD_") else f"SWITCHBOARD_{k.upper()}": v
                for k, v in overrides.items()
            }
        )
        own_url = self.environment.amqp_url_for(service)
        if own_url is not None and not any(
            k.lower() in ("rabbitmq_url", "switchboard_rabbitmq_url") for k in overrides
        ):
            env["SWITCHBOARD_RABBITMQ_URL"] = own_url
        own_database = self.environment.database_url_for(service)
        if own_database is not None and not any(
            k.lower() in ("database_url", "switchboard_database_url") for k in overrides
        ):
            env["SWITCHBOARD_DATABASE_URL"] = own_database
        port_variable = {"mock_provider": "SWITCHBOARD_MOCK_PORT", "api": "SWITCHBOARD_API_PORT"}.get(
            service, "SWITCHBOARD_METRICS_PORT"
        )
        env[port_variable] = str(port)
        process = ManagedProcess(
            name, service, env, self.log_dir / f"{name}.log", port, port_variable=port_variable
        )
        self.processes[name] = process
        return process

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.processes[name].port}"

    async def start(self, *names: str, timeout: float = 30.0) -> None:
        targets = [self.processes[n] for n in (names or self.processes)]
        for process in targets:
            process.start()
        await asyncio.gather(*(self._ready(p, timeout) for p in targets))

    async def _ready(self, process: ManagedProcess, timeout: float, attempts: int = 3) -> None:
        """Wait until ``process`` is ready; if another process took its port first, on a new port."""
        for attempt in range(attempts):
            try:
                await self.wait_ready(process.name, timeout)
                return
            except ProcessExited:
                if attempt == attempts - 1 or process.pinned or not process.lost_its_port():
                    raise
            process.move_to(free_port())
            process.close_log()
            process.start()

    async def wait_ready(self, name: str, timeout: float = 30.0) -> None:
        process = self.processes[name]
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if not process.alive():
                    raise ProcessExited(
                        f"{name} exited with {process.popen.returncode if process.popen else None}; "
                        f"see {process.log_path}"
                    )
                try:
                    response = await client.get(f"http://127.0.0.1:{process.port}/readyz")
                    if response.status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        raise TimeoutError(f"{name} not ready after {timeout}s; see {process.log_path}")

    def kill(self, name: str) -> None:
        self.processes[name].signal(signal.SIGKILL)
        self.processes[name].wait(10)

    async def restart(self, name: str, timeout: float = 30.0) -> None:
        process = self.processes[name]
        process.close_log()
        process.start()
        await self._ready(process, timeout)

    def stop(self, *names: str, timeout: float = 15.0) -> dict[str, int | None]:
        """SIGTERM, wait, SIGKILL what still runs. Returns each exit code (None: it had to be killed)."""
        targets = [self.processes[n] for n in (names or self.processes)]
        for process in targets:
            process.signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        deadline = time.monotonic() + timeout
        for process in targets:
            code = process.wait(max(deadline - time.monotonic(), 0.1))
            if code is None and process.alive():
                process.signal(signal.SIGKILL)
                process.wait(5)
            codes[process.name] = code
            process.close_log()
        return codes
