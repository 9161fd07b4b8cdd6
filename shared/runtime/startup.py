"""What a failed connection to PostgreSQL or RabbitMQ means, in one line, with the command that fixes it.

``explain`` is pure: it maps an exception from asyncpg, aio-pika or the socket layer to a
:class:`StartupProblem`. Permanent problems (a missing database or vhost, a refused login) are
configuration: retrying cannot fix them, so a service exits non-zero and a command-line tool stops with
the line. Transient ones (nothing listening on the port yet, a name that does not resolve yet while a
cluster starts) are retried by services, each retry logged with the same line.

Lines never contain a password: they name the user, host, port and database or vhost only.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import unquote, urlsplit

SETUP_COMMAND = "switchboard admin setup"
# sysexits.h EX_CONFIG: what supervisors and scripts recognise as "configuration error".
EXIT_CONFIGURATION = 78


class Backend(StrEnum):
    POSTGRES = "postgres"
    RABBITMQ = "rabbitmq"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a backend is, without its password."""

    backend: Backend
    host: str
    port: int
    name: str  # database or vhost
    user: str

    @classmethod
    def of_database(cls, dsn: str) -> Endpoint:
        parts = urlsplit(dsn)
        return cls(
            Backend.POSTGRES,
            parts.hostname or "localhost",
            parts.port or 5432,
            unquote(parts.path.lstrip("/")) or "postgres",
            unquote(parts.username or "postgres"),
        )

    @classmethod
    def of_broker(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        path = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        return cls(
            Backend.RABBITMQ,
            parts.hostname or "localhost",
            parts.port or 5672,
            path,
            unquote(parts.username or "guest"),
        )

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def variable(self) -> str:
        return "SWITCHBOARD_DATABASE_URL" if self.backend is Backend.POSTGRES else "SWITCHBOARD_RABBITMQ_URL"

    @property
    def label(self) -> str:
        return "PostgreSQL" if self.backend is Backend.POSTGRES else "RabbitMQ"


@dataclass(frozen=True, slots=True)
class StartupProblem:
    endpoint: Endpoint
    message: str
    hint: str
    permanent: bool

    def line(self) -> str:
        return f"{self.message}: {self.hint}"


def _reply(exc: BaseException) -> tuple[int, str] | None:
    """The (code, text) of a broker's Connection.Close carried by ``exc``, if any."""
    for arg in getattr(exc, "args", ()):
        code, text = getattr(arg, "reply_code", None), getattr(arg, "reply_text", None)
        if isinstance(code, int) and isinstance(text, str):
            return code, text
    return None


def _unreachable(endpoint: Endpoint, exc: BaseException) -> StartupProblem | None:
    """Nothing answers at the address (wrong port, server down) or the host name does not resolve."""
    cause: BaseException | None = exc
    while cause is not None:
        args = getattr(cause, "args", ())
        if isinstance(cause, socket.gaierror) or args[:1] in ((socket.EAI_NONAME,), (socket.EAI_AGAIN,)):
            return StartupProblem(
                endpoint,
                f"{endpoint.label} host {endpoint.host!r} does not resolve",
                f"check the host in {endpoint.variable}",
                permanent=False,
            )
        if isinstance(cause, ConnectionRefusedError) or "Connect call failed" in " ".join(map(str, args)):
            local = endpoint.host in ("127.0.0.1", "localhost", "::1")
            return StartupProblem(
                endpoint,
                f"nothing accepts connections at {endpoint.address} ({endpoint.label})",
                f"is {endpoint.label} running there, and is the port in {endpoint.variable} right?"
                + (" (`make services` starts the local ones)" if local else ""),
                permanent=False,
            )
        if isinstance(cause, TimeoutError):
            return StartupProblem(
                endpoint,
                f"{endpoint.label} at {endpoint.address} did not answer in time",
                f"check the host and port in {endpoint.variable}",
                permanent=False,
            )
        cause = cause.__cause__ or cause.__context__
    return None


def explain(endpoint: Endpoint, exc: BaseException) -> StartupProblem | None:
    """What ``exc``, raised while connecting to ``endpoint``, means; ``None`` when it is not recognised."""
    name = type(exc).__name__
    if endpoint.backend is Backend.POSTGRES:
        if name == "InvalidCatalogNameError":
            return StartupProblem(
                endpoint,
                f"database {endpoint.name!r} does not exist on {endpoint.address}",
                f"run `{SETUP_COMMAND}` (or point {endpoint.variable} at the right database)",
                permanent=True,
            )
        if name in ("InvalidPasswordError", "InvalidAuthorizationSpecificationError"):
            return StartupProblem(
                endpoint,
                f"PostgreSQL at {endpoint.address} refused the login of user {endpoint.user!r} "
                f"({str(exc).strip()})",
                f"check the user and password in {endpoint.variable}",
                permanent=True,
            )
        if name == "UndefinedTableError":
            return StartupProblem(
                endpoint,
                f"database {endpoint.name!r} on {endpoint.address} has no Switchboard tables",
                f"run `{SETUP_COMMAND}` (it applies the migrations)",
                permanent=True,
            )
    else:
        reply = _reply(exc)
        text = (reply[1] if reply else " ".join(str(a) for a in getattr(exc, "args", ()))).strip()
        if "vhost" in text and "not found" in text:
            return StartupProblem(
                endpoint,
                f"RabbitMQ vhost {endpoint.name!r} does not exist on {endpoint.address}",
                f"run `{SETUP_COMMAND}` (or point {endpoint.variable} at the right vhost)",
                permanent=True,
            )
        if "access to vhost" in text:
            return StartupProblem(
                endpoint,
                f"RabbitMQ user {endpoint.user!r} may not use vhost {endpoint.name!r} on {endpoint.address}",
                f"run `{SETUP_COMMAND}` (it sets the service users' permissions) or fix {endpoint.variable}",
                permanent=True,
            )
        if "ACCESS_REFUSED" in text or name == "ProbableAuthenticationError":
            return StartupProblem(
                endpoint,
                f"RabbitMQ at {endpoint.address} refused the login of user {endpoint.user!r}",
                f"check the user and password in {endpoint.variable}",
                permanent=True,
            )
    return _unreachable(endpoint, exc)
