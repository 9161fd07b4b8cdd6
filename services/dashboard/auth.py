"""Who may see the dashboard: anyone on loopback; beyond it, only a caller with the token.

The dashboard shows recipients (masked), error texts and the pipeline's state: bound to anything but a
loopback address it refuses to start without ``SWITCHBOARD_DASHBOARD_TOKEN``. With a token, every
request needs ``Authorization: Bearer <token>`` or HTTP Basic auth with the token as password (so a
browser asks for it); the comparison takes constant time.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Awaitable, Callable
from ipaddress import ip_address

from aiohttp import web
from aiohttp.typedefs import Middleware

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
LOOPBACK_NAMES = frozenset({"localhost", "localhost."})
CHALLENGE = 'Basic realm="switchboard dashboard"'


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_problem(host: str, token: str) -> str | None:
    """Why the dashboard may not start (None: it may)."""
    if token or is_loopback(host):
        return None
    return (
        f"the dashboard listens on {host!r}, beyond loopback, without a token: set "
        "SWITCHBOARD_DASHBOARD_TOKEN (or SWITCHBOARD_DASHBOARD_HOST=127.0.0.1)"
    )


def offered_token(header: str) -> str | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2]
    return None


def require_token(token: str) -> Middleware:
    expected = token.encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        offered = offered_token(request.headers.get("Authorization", ""))
        if offered is None or not hmac.compare_digest(offered.encode(), expected):
            return web.Response(
                status=401,
                text="a token is required",
                headers={
                    "WWW-Authenticate": 'Basic realm="switchboard dashboard"',
                    "Cache-Control": "no-store",
                },
            )
        return await handler(request)

    return check
