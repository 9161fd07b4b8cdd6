"""Free loopback ports for the processes a tool or a test starts.

A port found by binding port 0 comes from the kernel's ephemeral range, the same range every outgoing
connection on the machine draws from; between our closing the probe socket and the child binding it,
any of those connections (or another ``bind(0)``) may take it. Ports below that range are never handed
out by the kernel, so one of those that is free now stays free unless another tool picks it too, and
this process remembers what it handed out so that it never picks the same port twice.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 10_000  # above the well-known and most registered service ports
_handed_out: set[int] = set()


def _ephemeral_start() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A loopback port that is free now and outside the kernel's ephemeral range when it can be."""
    highest = _ephemeral_start() - 1
    if highest - _LOWEST >= 1_000:
        for _ in range(200):
            port = random.randint(_LOWEST, highest)
            if port not in _handed_out and _bindable(port):
                _handed_out.add(port)
                return port
    with socket.socket() as probe:  # no room below the ephemeral range: the kernel's choice
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    _handed_out.add(port)
    return port
