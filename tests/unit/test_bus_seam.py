"""The bus seam holds: outside shared/bus/, no module builds or reads an envelope with aio-pika's message
classes, none tells message kinds apart by looking into bodies (shared/bus/wire.py does both), and none
imports the AMQP client at all (aio_pika, aiormq, pamqp), except the modules listed with their reason."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("shared", "services", "tools")
FORBIDDEN = re.compile(
    r"aio_pika\.Message\b|from aio_pika import[^\n]*\bMessage\b|IncomingMessage"
    r"|aio_pika\.abc\.AbstractMessage|DeliveryMode|make_message|b'\"kind\"|b\"\\\"kind"
)
# The raw-broker baseline of the benchmark measures aio-pika itself, without Switchboard in between.
ALLOWED = {Path("tools/bench_raw.py")}
CLIENT_IMPORT = re.compile(r"^\s*(import|from)\s+(aio_pika|aiormq|pamqp)\b")
# Modules outside shared/bus/ that may import the AMQP client, and why.
CLIENT_ALLOWED = {
    Path("tools/bench_raw.py"): "the benchmark's raw baseline: aio-pika alone, without Switchboard",
    Path("tools/bench_baseline.py"): "runs that baseline against the benchmark's broker",
    Path("tools/chaos.py"): "the chaos harness (its own owner): counts queues while the broker restarts",
}


def offenders(pattern: re.Pattern[str], allowed: set[Path]) -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT)
            if relative.parts[:2] == ("shared", "bus") or relative in allowed:
                continue
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                if pattern.search(line):
                    found.append(f"{relative}:{number}: {line.strip()}")
    return found


def test_no_module_outside_the_bus_builds_or_reads_envelopes_with_aio_pika_message_classes() -> None:
    assert offenders(FORBIDDEN, ALLOWED) == []


def test_no_module_outside_the_bus_imports_the_amqp_client_unless_listed() -> None:
    found = offenders(CLIENT_IMPORT, set(CLIENT_ALLOWED))
    assert found == [], "go through shared/bus (transport.Broker/Channel, amqp.connect...) instead"


def test_every_listed_exception_still_needs_it() -> None:
    # A module that no longer imports the client leaves the list (so the list cannot go stale).
    for path in CLIENT_ALLOWED:
        assert any(CLIENT_IMPORT.search(line) for line in (ROOT / path).read_text().splitlines()), path


def test_the_check_finds_what_it_looks_for() -> None:
    for line in (
        "message = aio_pika.Message(body)",
        "from aio_pika.abc import AbstractIncomingMessage",
        "from aio_pika import DeliveryMode, Message",
        "delivery_mode=aio_pika.DeliveryMode.PERSISTENT",
        'if b\'"kind":"receipt"\' in message.body:',
    ):
        assert FORBIDDEN.search(line), line
    assert not FORBIDDEN.search("from shared.bus import wire")
    for line in (
        "import aio_pika",
        "    from aiormq.exceptions import AMQPError",
        "from pamqp.commands import Basic",
    ):
        assert CLIENT_IMPORT.search(line), line
    for line in ("from shared.bus.amqp import AmqpBroker", "# aio_pika is used in shared/bus only"):
        assert not CLIENT_IMPORT.search(line), line
