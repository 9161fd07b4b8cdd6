"""Reading an uploaded contact list (pure): a header with ``recipient``, one contact per row.

Each row is checked on its own; bad rows are reported (row number and reason) and left out, the
good ones are kept with the recipient in its normalised form. Only the first ``MAX_KEPT_REJECTIONS``
reasons are kept (all are counted): a file of bad rows costs no more memory than a file of good ones.
The API runs this in a worker thread (services/api/routers/contacts.py): a large file never holds up
the event loop.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

from services.api.templating import VARIABLE_NAME
from shared.core.errors import InvalidRecipient
from shared.core.recipients import normalise

RECIPIENT_COLUMN = "recipient"
MAX_CELL = 2000
MAX_KEPT_REJECTIONS = 1000


class CsvError(ValueError):
    """The file as a whole cannot be used (encoding, header)."""


@dataclass(frozen=True, slots=True)
class Contact:
    row: int
    recipient: str
    variables: dict[str, str]


@dataclass(frozen=True, slots=True)
class Rejected:
    row: int
    reason: str


@dataclass(slots=True)
class ContactFile:
    columns: list[str]
    contacts: list[Contact] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)  # the first MAX_KEPT_REJECTIONS
    rejected_count: int = 0

    def reject(self, row: int, reason: str) -> None:
        self.rejected_count += 1
        if len(self.rejected) < MAX_KEPT_REJECTIONS:
            self.rejected.append(Rejected(row, reason))


def decode(data: bytes) -> str:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CsvError(f"the file is not UTF-8 (byte {exc.start})") from exc
    if "\x00" in text:
        raise CsvError("the file contains NUL characters")
    return text


def _header(raw: list[str]) -> list[str]:
    columns = [c.strip() for c in raw]
    lowered = [c.lower() for c in columns]
    if RECIPIENT_COLUMN not in lowered:
        raise CsvError(f"the header must have a {RECIPIENT_COLUMN!r} column")
    columns[lowered.index(RECIPIENT_COLUMN)] = RECIPIENT_COLUMN
    for name in columns:
        if not VARIABLE_NAME.fullmatch(name):
            raise CsvError(f"column name {name!r} must be letters, digits and underscores")
    if len(set(columns)) != len(columns):
        raise CsvError("column names must be unique")
    return columns


def parse_contacts(data: bytes, channel: str, max_contacts: int) -> ContactFile:
    """Parse and validate; raises :class:`CsvError` when the file itself is unusable."""
    reader = csv.reader(io.StringIO(decode(data), newline=""))
    try:
        first = next(reader, None)
        if first is None:
            raise CsvError("the file is empty")
        columns = _header(first)
        result = ContactFile(columns=[c for c in columns if c != RECIPIENT_COLUMN])
        seen: dict[str, int] = {}
        for row_number, cells in enumerate(reader, start=2):
            if not any(c.strip() for c in cells):
                continue
            if len(result.contacts) >= max_contacts:
                raise CsvError(f"more than {max_contacts} contacts")
            problem = _check_row(cells, columns, channel, seen, row_number, result)
            if problem is not None:
                result.reject(row_number, problem)
    except csv.Error as exc:
        raise CsvError(f"not a valid CSV file: {exc}") from exc
    return result


def _check_row(
    cells: list[str], columns: list[str], channel: str, seen: dict[str, int], row: int, result: ContactFile
) -> str | None:
    if len(cells) != len(columns):
        return f"expected {len(columns)} cells, found {len(cells)}"
    if any(len(c) > MAX_CELL for c in cells):
        return f"a cell is longer than {MAX_CELL} characters"
    values = dict(zip(columns, cells, strict=True))
    try:
        recipient = normalise(channel, values.pop(RECIPIENT_COLUMN))
    except InvalidRecipient as exc:
        return exc.message
    if recipient in seen:
        return f"duplicate recipient (first on row {seen[recipient]})"
    seen[recipient] = row
    result.contacts.append(Contact(row, recipient, {k: v.strip() for k, v in values.items()}))
    return None
