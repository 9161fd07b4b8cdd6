"""``python -m tools.private_services``: a private RabbitMQ and PostgreSQL until Ctrl-C or SIGTERM."""

from __future__ import annotations

import signal
import threading

from tools.private_services import PrivateServices


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
