"""Container health check: GET /healthz on the port where the container's process answers it.

The API answers on its own port (``SWITCHBOARD_API_PORT``, 8080); every other process on its metrics
port (``SWITCHBOARD_METRICS_PORT``). Which process runs is read from PID 1's command line (the
entrypoint ``exec``s it). A process without such a port (a one-shot job such as ``admin migrate``)
has nothing to answer and counts as healthy while it runs.
"""

import os
import sys
import urllib.request
from collections.abc import Mapping, Sequence


def runs_api(cmdline: Sequence[str]) -> bool:
    """``python -m services.api`` (the entrypoint's form) or ``... services.cli api``."""
    args = list(cmdline)
    if "services.api" in args:
        return True
    if "services.cli" not in args:
        return False
    position = args.index("services.cli")
    return args[position + 1 : position + 2] == ["api"]


def health_port(cmdline: Sequence[str], env: Mapping[str, str]) -> int:
    if runs_api(cmdline):
        return int(env.get("SWITCHBOARD_API_PORT", "8080").strip() or "8080")
    return int(env.get("SWITCHBOARD_METRICS_PORT", "0").strip() or "0")


def pid1_cmdline() -> list[str]:
    try:
        with open("/proc/1/cmdline", "rb") as handle:
            return [part.decode(errors="replace") for part in handle.read().split(b"\0") if part]
    except OSError:
        return []


def main() -> int:
    port = health_port(pid1_cmdline(), os.environ)
    if port == 0:
        return 0
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
