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


# Optional fields added to the request models after keys were first stored: left out of the digest
# while unset, so that a retry of a request made before they existed replays instead of conflicting.
FIELDS_ADDED_LATER = frozenset({"ordering_key"})


def _as_first_digested(body: Any) -> Any:
    if isinstance(body, dict):
        return {
            k: _as_first_digested(v) for k, v in body.items() if not (v is None and k in FIELDS_ADDED_LATER)
        }
    if isinstance(body, list):
        return [_as_first_digested(v) for v in body]
    return body


def fingerprint(method: str, path: str, body: Any) -> str:
    """A digest of the request as understood (key order and whitespace do not matter)."""
    canonical = orjson.dumps([method.upper(), path, _as_first_digested(body)], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def judge(stored: StoredResponse | None, request_hash: str) -> Verdict:
    if stored is None:
        return Verdict.NEW
    return Verdict.REPLAY if stored.request_hash == request_hash else Verdict.CONFLICT
