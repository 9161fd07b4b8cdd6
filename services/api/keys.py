"""API keys: how they look, how they are hashed and checked (pure; the SQL lives in store/keys.py).

A key reads ``sbk_<key id>_<secret>``. The key id (12 hex digits) finds the row; only
HMAC-SHA256(pepper, key) is stored, compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

PREFIX = "sbk"
_KEY = re.compile(r"sbk_([0-9a-f]{12})_([A-Za-z0-9_-]{32,64})")


@dataclass(frozen=True, slots=True)
class NewKey:
    key_id: str
    key: str


def generate_key() -> NewKey:
    key_id = secrets.token_hex(6)
    return NewKey(key_id=key_id, key=f"{PREFIX}_{key_id}_{secrets.token_urlsafe(32)}")


def key_id_of(key: str) -> str | None:
    """The key id of a well-formed key, else ``None``."""
    match = _KEY.fullmatch(key)
    return match.group(1) if match else None


def hash_key(key: str, pepper: str) -> str:
    return hmac.new(pepper.encode(), key.encode(), hashlib.sha256).hexdigest()


def verify_key(key: str, stored_hash: str, pepper: str) -> bool:
    return hmac.compare_digest(hash_key(key, pepper), stored_hash)
