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

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from shared.runtime.settings import Settings

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")  # the scripts themselves: /usr/sbin's wrappers switch user
POSTGRES_BINS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)  # the newest first
RABBITMQ_PLUGINS = ("rabbitmq_consistent_hash_exchange", "rabbitmq_management")
GUEST = "guest"  # RabbitMQ's default user, allowed from loopback only (every listener is on loopback)


class PrivateServiceError(RuntimeError):
    """A private server did not start or stop; the message ends with the tail of its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def rabbitmq_tool(name: str) -> str:
    found = RABBITMQ_BIN / name
    if found.exists():
        return str(found)
    on_path = shutil.which(name)
    if on_path is None:
        raise PrivateServiceError(f"{name} not found (in {RABBITMQ_BIN} or on PATH)")
    return str(Path(on_path).resolve())


def postgres_tool(name: str) -> str:
    for directory in POSTGRES_BINS:
        if (directory / name).exists():
            return str(directory / name)
    on_path = shutil.which(name)
    if on_path is None:
        raise PrivateServiceError(f"{name} not found (in /usr/lib/postgresql/*/bin or on PATH)")
    return on_path


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_gone(pid: int, timeout: float) -> bool:
    """Until no process has ``pid`` (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_session(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM the leader of a session of our own, wait, then SIGKILL its whole process group."""
    pgid = process.pid  # start_new_session: the leader's PID is the group's id
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout)
    deadline = time.monotonic() + timeout
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if group_alive(pgid):
        os.killpg(pgid, signal.SIGKILL)
    process.wait(10)


class PrivateRabbitMQ:
    """One RabbitMQ node (plugins: consistent hash exchange, management) with an epmd of its own."""

    def __init__(self, directory: Path, node_name: str) -> None:
        self.dir = directory
        self.node = f"{node_name}@localhost"
        self.amqp_port = free_port()
        self.management_port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.server: subprocess.Popen[bytes] | None = None
        self.epmd: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "server.log"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._write_files()

    def _write_files(self) -> None:
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.amqp_port}\n"
            f"management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {self.management_port}\n"
        )
        (self.dir / "enabled_plugins").write_text(f"[{','.join(RABBITMQ_PLUGINS)}].\n")
        (self.dir / "rabbitmq-env.conf").write_text("")  # not the machine's (its node name and ports)
        cookie = self.dir / ".erlang.cookie"  # $HOME/.erlang.cookie: read by the node and rabbitmqctl
        cookie.write_text(secrets.token_hex(20))
        cookie.chmod(0o400)

    def environment(self) -> dict[str, str]:
        """What the node and ``rabbitmqctl -n <node>`` need: the cookie (HOME), the epmd, the files."""
        d = self.dir
        return {
            **os.environ,
            "HOME": str(d),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_PID_FILE": str(d / "node.pid"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def amqp_url(self, vhost: str = "/") -> str:
        return f"amqp://{GUEST}:{GUEST}@127.0.0.1:{self.amqp_port}/{quote(vhost, safe='')}"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.management_port}"

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """``rabbitmqctl -n <node> ...`` with this node's cookie and epmd."""
        done = subprocess.run(
            [rabbitmq_tool("rabbitmqctl"), "-n", self.node, *args],
            env=self.environment(),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise PrivateServiceError(
                f"rabbitmqctl {' '.join(args)} exited {done.returncode}: "
                f"{(done.stdout + done.stderr).decode(errors='replace')[-800:]}"
            )
        return done.stdout.decode(errors="replace")

    def running(self) -> bool:
        return self.server is not None and self.server.poll() is None

    def start(self, timeout: float = 120.0) -> None:
        """Start the node (and its epmd) and wait until its applications and management API answer."""
        if self.running():
            return
        if self.epmd is None or self.epmd.poll() is not None:
            self.epmd = subprocess.Popen(
                [shutil.which("epmd") or "epmd", "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        (self.dir / "node.pid").unlink(missing_ok=True)  # `wait` below must not read the last run's PID
        with self.log.open("ab") as log:
            self.server = subprocess.Popen(
                [rabbitmq_tool("rabbitmq-server")],
                env=self.environment(),
                cwd=self.dir,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        started = time.monotonic()
        try:
            self.ctl("wait", "--timeout", str(int(timeout)), str(self.dir / "node.pid"), timeout=timeout + 10)
            self._wait_for_management(timeout - (time.monotonic() - started))
        except (PrivateServiceError, subprocess.TimeoutExpired) as exc:
            self.stop()
            message = f"RabbitMQ node {self.node} did not start: {exc}\n{tail(self.log)}"
            raise PrivateServiceError(message) from exc

    def _wait_for_management(self, timeout: float) -> None:
        deadline = time.monotonic() + max(timeout, 5.0)
        while time.monotonic() < deadline:
            try:
                response = httpx.get(f"{self.management_url}/api/overview", auth=(GUEST, GUEST), timeout=2)
                if response.status_code == 200 and port_open(self.amqp_port):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise PrivateServiceError(f"the management API on {self.management_url} did not answer")

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the node (SIGTERM: a clean shutdown; SIGKILL after ``timeout``); epmd keeps running."""
        if self.server is not None:
            stop_session(self.server, timeout)
            self.server = None

    def close(self) -> None:
        self.stop()
        if self.epmd is not None:
            stop_session(self.epmd, 5.0)
            self.epmd = None

    def pids(self) -> list[int]:
        return [p.pid for p in (self.server, self.epmd) if p is not None and p.poll() is None]


class PrivatePostgres:
    """One PostgreSQL cluster (trust authentication, no fsync) listening on loopback and a socket in
    its own directory (a new temporary one, removed by :meth:`close`, when none is given)."""

    def __init__(self, directory: Path | None = None) -> None:
        self.owns_dir = directory is None
        self.dir = directory or Path(tempfile.mkdtemp(prefix="sb-private-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.log = self.dir / "server.log"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")
        self.dir.chmod(0o755)

    @staticmethod
    def available() -> bool:
        try:
            postgres_tool("initdb")
            postgres_tool("pg_ctl")
        except PrivateServiceError:
            return False
        return True

    def _run(self, *args: str, timeout: float = 120.0) -> None:
        command = [*(["runuser", "-u", "postgres", "--"] if self.as_root else []), *args]
        # A session of its own: the server pg_ctl leaves behind must not get a terminal's Ctrl-C.
        done = subprocess.run(
            command, capture_output=True, timeout=timeout, check=False, start_new_session=True
        )
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace")[-800:]
            message = f"{Path(args[0]).name} exited {done.returncode}: {output}\n{tail(self.log)}"
            raise PrivateServiceError(message)

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        if not (self.data / "PG_VERSION").exists():
            initdb = postgres_tool("initdb")
            self._run(initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def start(self, timeout: float = 60.0) -> None:
        if self.pid() is not None:
            return
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300"
        )
        self._run(
            postgres_tool("pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.log),
            "-w",
            "-t",
            str(int(timeout)),
            "start",
            timeout=timeout + 10,
        )

    def pid(self) -> int | None:
        """The postmaster's PID while it runs."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().splitlines()[0])
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            return None
        return pid

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT to the postmaster; SIGKILL after ``timeout``), waiting until it is gone."""
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGINT)
        if not wait_gone(pid, timeout):
            os.kill(pid, signal.SIGKILL)
            if not wait_gone(pid, 10):
                raise PrivateServiceError(f"PostgreSQL {pid} still runs after SIGKILL")

    def close(self) -> None:
        try:
            self.stop()
        finally:
            if self.owns_dir:
                shutil.rmtree(self.dir, ignore_errors=True)

    def pids(self) -> list[int]:
        pid = self.pid()
        return [] if pid is None else [pid]


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


def main() -> None:
    """Start both, print their variables, keep them until Ctrl-C or SIGTERM, then remove everything."""
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    with PrivateServices() as services:
        for key, value in services.env().items():
            print(f"export {key}={value}")
        print(f"# node {services.rabbitmq.node}, data in {services.root}; Ctrl-C stops and removes them")
        stopped.wait()


if __name__ == "__main__":
    main()
