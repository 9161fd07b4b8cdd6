"""Writing DLQ entries to a file as they are read: JSON lines or CSV, one entry at a time."""

from __future__ import annotations

import csv
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import orjson

from services.dlq.entries import DlqEntry, body_fields

CSV_FIELDS = [
    "kind",
    "key",
    "message_id",
    "log_id",
    "attempt",
    "tenant",
    "campaign_id",
    "channel",
    "recipient",
    "provider",
    "status",
    "reason",
    "error_class",
    "error_code",
    "error_message",
    "dead_lettered_at",
    "source_queue",
    "source",
    "message_type",
    "content_type",
    "body_size",
    "delivery_count",
]
BODY_FIELDS = ["body", "body_encoding"]


class ExportFormat(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: one that would start a formula (``=HYPERLINK(...)``
    in a tenant's payload or an error text) gets a leading apostrophe (OWASP CSV injection)."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class Exporter:
    """``with Exporter(path, fmt, reveal) as out: out.write(entry, body)``.

    Recipients are masked and bodies left out unless ``reveal`` (a body may hold a recipient in clear).
    """

    def __init__(self, path: Path, fmt: ExportFormat, reveal: bool = False) -> None:
        self.path = path
        self.format = fmt
        self.reveal = reveal
        self.count = 0
        self._file: IO[str] | None = None
        self._csv: Any = None

    def __enter__(self) -> Exporter:
        self._file = self.path.open("w", encoding="utf-8", newline="")
        if self.format == ExportFormat.CSV:
            fields = CSV_FIELDS + (BODY_FIELDS if self.reveal else [])
            self._csv = csv.DictWriter(self._file, fieldnames=fields, extrasaction="ignore")
            self._csv.writeheader()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._file is not None:
            self._file.close()

    def write(self, entry: DlqEntry, body: bytes) -> None:
        assert self._file is not None
        row = entry.public(self.reveal)
        if self.reveal:
            row.update(body_fields(body))
        if self.format == ExportFormat.CSV:
            self._csv.writerow({k: spreadsheet_safe(v) for k, v in row.items()})
        else:
            self._file.write(orjson.dumps(row).decode() + "\n")
        self.count += 1
