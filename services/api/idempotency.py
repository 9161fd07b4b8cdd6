"""The Idempotency-Key rule (pure): same key and same request replays; same key, other request is 409."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson


class Verdict(StrEnum):
    NEW = "new"
    REPLAY = "replay"
    CONFLICT = "conflict"


@dataclass(frozen=True, slots=True)
class StoredResponse:
    request_hash: str
    status_code: int
    body: Any


def fingerprint(method: str, path: str, body: Any) -> str:
    """A digest of the request as understood (key order and whitespace do not matter)."""
    canonical = orjson.dumps([method.upper(), path, body], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def judge(stored: StoredResponse | None, request_hash: str) -> Verdict:
    if stored is None:
        return Verdict.NEW
    return Verdict.REPLAY if stored.request_hash == request_hash else Verdict.CONFLICT
