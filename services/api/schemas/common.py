"""Building blocks: ids, text and timestamps that PostgreSQL will accept, JSON payload checks."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, Field, Strict

MAX_BIGINT = 2**63 - 1
MIN_YEAR, MAX_YEAR = 1970, 9000
MAX_DEPTH = 32
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")
MIN_INT, MAX_INT = -(2**63), 2**63 - 1


def check_text(value: str) -> str:
    """Reject what PostgreSQL's text cannot hold: NUL characters and lone surrogates."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("must be valid Unicode (no lone surrogates)") from exc
    return value


def require_rfc3339(value: Any) -> Any:
    """Only RFC 3339 date-times (as the schema says), not numbers or bare dates read as timestamps."""
    if isinstance(value, datetime) or (isinstance(value, str) and _RFC3339.fullmatch(value)):
        return value
    raise ValueError("must be an RFC 3339 date-time with an offset, e.g. 2030-01-01T09:00:00Z")


def check_timestamp(value: datetime) -> datetime:
    try:
        utc = value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("timestamp out of range") from exc
    if not MIN_YEAR <= utc.year <= MAX_YEAR:
        raise ValueError(f"timestamp must fall between the years {MIN_YEAR} and {MAX_YEAR}")
    return utc


def check_json(value: Any, depth: int = 0) -> None:
    """Every string and key of a JSON value must be storable in jsonb; nesting is bounded."""
    if depth > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        check_text(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key)
            check_json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            check_json(item, depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError("numbers must be finite")
    elif isinstance(value, int) and not isinstance(value, bool) and not MIN_INT <= value <= MAX_INT:
        raise ValueError("integers must fit in 64 bits")


Id = Annotated[int, Field(ge=1, le=MAX_BIGINT)]
Text = Annotated[str, AfterValidator(check_text)]
Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(check_text)]
Timestamp = Annotated[AwareDatetime, BeforeValidator(require_rfc3339), AfterValidator(check_timestamp)]
# Request bodies take numbers and booleans as such: no `false` read as 0, no "1" read as 1.
BodyId = Annotated[int, Strict(), Field(ge=1, le=MAX_BIGINT)]
Priority = Annotated[int, Strict(), Field(ge=0, le=2, description="0 high, 1 normal, 2 low.")]


class Page(BaseModel):
    next_cursor: str | None = Field(
        None, description="Pass as `cursor` to get the next page; null at the end."
    )
