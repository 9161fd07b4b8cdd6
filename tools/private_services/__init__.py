"""A RabbitMQ node and a PostgreSQL cluster of one harness's own, to restart at will.

The machine's RabbitMQ and PostgreSQL are shared by every test run and developer on it, so nothing may
stop or restart them. A harness that needs its broker or database to go away (the chaos harness, a
readiness test) starts these instead: its own node name, ports (AMQP, management, Erlang distribution and
an epmd of its own) and data directories under one temporary directory, every server in a process
session of its own (a terminal's Ctrl-C reaches only the harness, which then stops them in order), and
stops them by PID. PostgreSQL refuses to run as root: as root, it runs as the ``postgres`` user.

``python -m tools.private_services`` starts both, prints the ``SWITCHBOARD_*`` variables pointing at them
and keeps them until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import uuid
from pathlib import Path

from pydantic import SecretStr

from shared.runtime.settings import Settings
from tools.private_services.postgres import PrivatePostgres
from tools.private_services.process import PrivateServiceError, port_open
from tools.private_services.rabbitmq import GUEST, PrivateRabbitMQ

__all__ = ["PrivatePostgres", "PrivateRabbitMQ", "PrivateServiceError", "PrivateServices", "port_open"]


class PrivateServices:
    """Both servers under one temporary directory; every operation is serialised, and after
    :meth:`close` (which stops both and removes the directory unless ``keep``) nothing starts again."""

    def __init__(self, prefix: str = "sb-private", keep: bool = False) -> None:
        self.id = uuid.uuid4().hex[:8]
        self.root = Path(tempfile.mkdtemp(prefix=f"{prefix}-{self.id}-"))
        self.root.chmod(0o755)  # the postgres user must reach its directory inside
        self.keep = keep
        self.rabbitmq = PrivateRabbitMQ(self.root / "rabbitmq", f"{prefix}-{self.id}")
        self.postgres = PrivatePostgres(self.root / "postgres")
        self._lock = threading.RLock()
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise PrivateServiceError("these private services were closed")

    def start(self) -> None:
        with self._lock:
            self._check_open()
            self.postgres.init()
            self.postgres.start()
            self.rabbitmq.start()

    def stop_broker(self) -> None:
        with self._lock:
            self._check_open()
            self.rabbitmq.stop()

    def start_broker(self) -> None:
        with self._lock:
            self._check_open()
            self.rabbitmq.start()

    def stop_database(self) -> None:
        with self._lock:
            self._check_open()
            self.postgres.stop()

    def start_database(self) -> None:
        with self._lock:
            self._check_open()
            self.postgres.start()

    def settings(self) -> Settings:
        """Settings pointing at these servers (the administrator's URLs; environments derive theirs)."""
        return Settings(
            database_url=SecretStr(self.postgres.dsn()),
            rabbitmq_url=SecretStr(self.rabbitmq.amqp_url()),
            rabbitmq_management_url=self.rabbitmq.management_url,
            rabbitmq_management_user=GUEST,
            rabbitmq_management_password=SecretStr(GUEST),
        )

    def env(self) -> dict[str, str]:
        return {
            "SWITCHBOARD_DATABASE_URL": self.postgres.dsn("switchboard"),
            "SWITCHBOARD_RABBITMQ_URL": self.rabbitmq.amqp_url("switchboard"),
            "SWITCHBOARD_RABBITMQ_MANAGEMENT_URL": self.rabbitmq.management_url,
            "SWITCHBOARD_RABBITMQ_MANAGEMENT_USER": GUEST,
            "SWITCHBOARD_RABBITMQ_MANAGEMENT_PASSWORD": GUEST,
        }

    def pids(self) -> list[int]:
        return [*self.rabbitmq.pids(), *self.postgres.pids()]

    def close(self) -> None:
        """Stop both servers by PID and remove the directory; safe to call twice, and while another
        thread starts or restarts one (it waits for that to finish)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self.rabbitmq.close()
            finally:
                try:
                    self.postgres.close()
                finally:
                    if not self.keep:
                        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PrivateServices:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
