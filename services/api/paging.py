"""Opaque cursors for list endpoints (pure): the last id seen, base64url-encoded."""

from __future__ import annotations

import base64
import binascii

import orjson

MAX_ID = 2**63 - 1


class CursorError(ValueError):
    """A cursor that this API did not hand out."""


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"id": last_id})).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = orjson.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise CursorError("invalid cursor") from exc
    last = data.get("id") if isinstance(data, dict) else None
    if not isinstance(last, int) or isinstance(last, bool) or not 0 < last <= MAX_ID:
        raise CursorError("invalid cursor")
    return last


def page(ids: list[int], limit: int) -> tuple[int, str | None]:
    """Given ``limit + 1`` fetched ids: how many to return, and the cursor of the next page."""
    if len(ids) > limit:
        return limit, encode_cursor(ids[limit - 1])
    return len(ids), None
