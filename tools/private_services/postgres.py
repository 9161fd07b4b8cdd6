"""A PostgreSQL cluster of one harness's own (initdb in its directory, its own port and socket). PostgreSQL
refuses to run as root: as root, it runs as the ``postgres`` user."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from tools.ports import free_port
from tools.private_services.process import PrivateServiceError, tail, wait_gone

POSTGRES_BINS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)  # the newest first


def postgres_tool(name: str) -> str:
    for directory in POSTGRES_BINS:
        if (directory / name).exists():
            return str(directory / name)
    on_path = shutil.which(name)
    if on_path is None:
        raise PrivateServiceError(f"{name} not found (in /usr/lib/postgresql/*/bin or on PATH)")
    return on_path


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
