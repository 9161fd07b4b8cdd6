"""A RabbitMQ node of one harness's own: node name, ports (AMQP, management, Erlang distribution), an epmd
and an Erlang cookie of its own, its files in one directory; ``rabbitmqctl -n <node>`` reaches it with
:meth:`PrivateRabbitMQ.environment`."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import httpx

from tools.ports import free_port
from tools.private_services.process import PrivateServiceError, port_open, stop_session, tail

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")  # the scripts themselves: /usr/sbin's wrappers switch user
RABBITMQ_PLUGINS = ("rabbitmq_consistent_hash_exchange", "rabbitmq_management")
GUEST = "guest"  # RabbitMQ's default user, allowed from loopback only (every listener is on loopback)


def rabbitmq_tool(name: str) -> str:
    found = RABBITMQ_BIN / name
    if found.exists():
        return str(found)
    on_path = shutil.which(name)
    if on_path is None:
        raise PrivateServiceError(f"{name} not found (in {RABBITMQ_BIN} or on PATH)")
    return str(Path(on_path).resolve())


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
