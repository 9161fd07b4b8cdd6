"""HMAC-SHA256 signatures of webhooks and delivery reports (one place for signer and verifier).

Three schemes, after the providers they imitate:

- ``X-Switchboard-Signature: t=<unix>,v1=<hex>`` over ``"<t>." + body`` (outgoing webhooks and
  email event callbacks; the timestamp bounds replays);
- ``X-Hub-Signature-256: sha256=<hex>`` over the raw body (WhatsApp Cloud API webhooks);
- ``X-Gateway-Signature: <base64>`` over the URL followed by the sorted form fields, each name
  then value (SMS gateway status callbacks, in the style of Twilio's, with SHA-256).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping

SWITCHBOARD_HEADER = "X-Switchboard-Signature"
HUB_HEADER = "X-Hub-Signature-256"
GATEWAY_HEADER = "X-Gateway-Signature"


def _hmac(secret: str, data: bytes) -> bytes:
    return hmac.new(secret.encode(), data, hashlib.sha256).digest()


def sign_timestamped(secret: str, body: bytes, timestamp: int) -> str:
    return f"t={timestamp},v1={_hmac(secret, str(timestamp).encode() + b'.' + body).hex()}"


def verify_timestamped(secret: str, body: bytes, header: str | None, now: float, max_skew_s: float) -> bool:
    if not header:
        return False
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > max_skew_s:
        return False
    expected = sign_timestamped(secret, body, timestamp).split(",", 1)[1].removeprefix("v1=")
    return hmac.compare_digest(expected, parts.get("v1", ""))


def sign_hub(secret: str, body: bytes) -> str:
    return "sha256=" + _hmac(secret, body).hex()


def verify_hub(secret: str, body: bytes, header: str | None) -> bool:
    return bool(header) and hmac.compare_digest(sign_hub(secret, body), header or "")


def sign_gateway(secret: str, url: str, form: Mapping[str, str]) -> str:
    data = url + "".join(f"{k}{form[k]}" for k in sorted(form))
    return base64.b64encode(_hmac(secret, data.encode())).decode()


def verify_gateway(secret: str, url: str, form: Mapping[str, str], header: str | None) -> bool:
    return bool(header) and hmac.compare_digest(sign_gateway(secret, url, form), header or "")
