"""The bus seam holds: outside shared/bus/, no module builds or reads an envelope with aio-pika's message
classes, and none tells message kinds apart by looking into bodies (shared/bus/wire.py does both)."""

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


def offenders() -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT)
            if relative.parts[:2] == ("shared", "bus") or relative in ALLOWED:
                continue
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                if FORBIDDEN.search(line):
                    found.append(f"{relative}:{number}: {line.strip()}")
    return found


def test_no_module_outside_the_bus_builds_or_reads_envelopes_with_aio_pika_message_classes() -> None:
    assert offenders() == []


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
