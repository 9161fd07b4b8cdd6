"""What a process calls itself to its backends: ``<process>-<host>-<pid>``.

RabbitMQ shows it as the connection name, PostgreSQL as the session's ``application_name``; the
dashboard's process list reads both back and puts one process's connections on one row.
"""

from __future__ import annotations

import os
import socket

# PostgreSQL keeps the first NAMEDATALEN - 1 bytes of an application_name.
APPLICATION_NAME_MAX = 63


def connection_name(process: str) -> str:
    """``<process>-<host>-<pid>``: what the management UI shows for a connection."""
    return f"{process}-{socket.gethostname()}-{os.getpid()}"


def application_name(process: str) -> str:
    """The same name for PostgreSQL, the host shortened so that the pid survives its 63-byte limit."""
    pid = str(os.getpid())
    room = APPLICATION_NAME_MAX - len(process.encode()) - len(pid) - 2
    host = socket.gethostname().encode()[: max(room, 0)].decode("utf-8", "ignore")
    return f"{process}-{host}-{pid}"
