"""Contacts given as JSON rows (pure): ``[{phone|email|recipient, name, variables}]``.

Each row is checked on its own, like a CSV row (services/api/contacts_csv.py): the recipient is
normalised for the channel, the template's variables must all be given (``name`` counts as the
variable ``name``), a recipient already in the list or earlier in the request is a duplicate. Bad
rows are reported with their index and reason and left out; the good ones are kept.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from services.api.contacts_csv import MAX_CELL, Contact, Rejected
from services.api.templating import VARIABLE_NAME
from shared.core.errors import InvalidRecipient
from shared.core.recipients import normalise

RECIPIENT_FIELDS = ("phone", "email", "recipient")


@dataclass(frozen=True, slots=True)
class ContactRow:
    """One row as received: at most one of the recipient fields is expected."""

    phone: str | None = None
    email: str | None = None
    recipient: str | None = None
    name: str | None = None
    variables: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class ContactRows:
    contacts: list[Contact] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        return sorted({k for c in self.contacts for k in c.variables})


def _recipient(row: ContactRow, channel: str) -> str:
    given = [(name, getattr(row, name)) for name in RECIPIENT_FIELDS if getattr(row, name) is not None]
    if len(given) != 1:
        raise ValueError("give exactly one of phone, email or recipient")
    name, value = given[0]
    if name == "phone" and channel == "email":
        raise ValueError("an email campaign needs an email, not a phone")
    if name == "email" and channel != "email":
        raise ValueError(f"a {channel} campaign needs a phone, not an email")
    try:
        return normalise(channel, value)
    except InvalidRecipient as exc:
        raise ValueError(exc.message) from exc


def _variables(row: ContactRow, required: Collection[str]) -> dict[str, str]:
    values = dict(row.variables)
    if row.name is not None:
        if "name" in values and values["name"] != row.name:
            raise ValueError("name is given twice, with two values")
        values["name"] = row.name
    for key, value in values.items():
        if not VARIABLE_NAME.fullmatch(key):
            raise ValueError(f"variable name {key!r} must be letters, digits and underscores")
        if len(value) > MAX_CELL:
            raise ValueError(f"variable {key} is longer than {MAX_CELL} characters")
    missing = sorted(set(required) - set(values))
    if missing:
        raise ValueError(f"missing template variables: {', '.join(missing)}")
    return {k: v.strip() for k, v in values.items()}


def check_rows(
    rows: Sequence[ContactRow], channel: str, required: Collection[str], existing: Collection[str]
) -> ContactRows:
    """Validate ``rows`` for a campaign on ``channel`` whose template needs ``required`` variables;
    ``existing`` are the recipients the campaign has already."""
    result = ContactRows()
    seen: dict[str, int] = {}
    for index, row in enumerate(rows):
        try:
            recipient = _recipient(row, channel)
            variables = _variables(row, required)
        except ValueError as exc:
            result.rejected.append(Rejected(index, str(exc)))
            continue
        if recipient in existing:
            result.rejected.append(Rejected(index, "duplicate recipient (already in the campaign)"))
        elif recipient in seen:
            result.rejected.append(Rejected(index, f"duplicate recipient (first at index {seen[recipient]})"))
        else:
            seen[recipient] = index
            result.contacts.append(Contact(index, recipient, variables))
    return result
