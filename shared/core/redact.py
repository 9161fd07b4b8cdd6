"""Credentials in URLs are never shown: ``amqp://user:secret@host`` becomes ``amqp://user:***@host``.

Applied to every log event (shared/runtime/logs.py), to the errors the dashboard shows, and to what
command-line tools print, so that a password embedded in a URL setting cannot leak through an error message.
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from typing import Any

_URL_CREDENTIALS = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s'\"]*):(?P<secret>[^@/\s'\"]+)@"
)
MASK = "***"


def mask_url_credentials(text: str) -> str:
    if "://" not in text or "@" not in text:
        return text
    return _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)


def mask_event(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor: every string value of the event with URL credentials masked."""
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = mask_url_credentials(value)
    return event
