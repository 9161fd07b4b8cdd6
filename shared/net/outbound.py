"""The outbound HTTP policy: which addresses a tenant-given URL (a webhook) may reach.

One place decides, and it is asked twice (docs/security.md):

- at ingest (the API): the URL is parsed, credentials in it refused, the host resolved and every
  address it resolves to checked (:func:`check_url`, :func:`resolve_and_check`). A name that does
  not exist (NXDOMAIN, and every name under ``.invalid``, RFC 6761, refused without a lookup) is
  refused; a lookup that fails for now (a resolver timeout or SERVFAIL) lets the URL through, to the
  connect-time check. Lookups run in a small thread pool of their own (getaddrinfo blocks), each
  given ``timeout_s``, so slow names can neither stall the event loop nor starve other threads;
- at connect time (services/sender/adapters/guarded.py): the address a socket is about to connect to
  is checked again (:func:`connect_refusal`), so a name that resolved to a public address at ingest
  and resolves to 127.0.0.1 now (DNS rebinding) is refused before a byte is sent.

Refused: loopback, private (RFC 1918, ULA), link-local (169.254/16 with the cloud metadata address,
fe80::/10), multicast, unspecified, reserved, shared (100.64/10), documentation ranges, and those
addresses embedded in IPv6 (IPv4-mapped ``::ffff:a.b.c.d``, IPv4-compatible ``::a.b.c.d``, 6to4,
NAT64 ``64:ff9b::/96``). A numeric host is read the way the C resolver reads it, so ``2130706433``,
``0x7f.1`` and ``0177.0.0.1`` are 127.0.0.1.

An operator may allow internal networks per tenant (``SWITCHBOARD_OUTBOUND_ALLOWLIST``:
``{"acme": ["10.1.2.0/24"], "*": ["192.0.2.0/24"]}``; ``*`` is every tenant).
"""

from __future__ import annotations

import asyncio
import functools
import re
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from yarl import URL

from shared.core.errors import DestinationRefused

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

EVERY_TENANT = "*"
ALLOWED_SCHEMES = frozenset({"http", "https"})
NAT64 = ip_network("64:ff9b::/96")
_NUMERIC_HOST = re.compile(r"[0-9a-fA-FxX.]+")
# The marker that tells a refusal at connect time from any other connection error.
REFUSED_MARKER = "refused by the outbound policy"

Resolve = Callable[[str, int], Awaitable[list[str]]]


@dataclass(frozen=True, slots=True)
class Destination:
    scheme: str
    host: str  # lower case, without brackets or a trailing dot
    port: int
    address: Address | None  # the host, when it is an address


def allowed_for(allowlist: Mapping[str, Sequence[Network]], tenant: str) -> tuple[Network, ...]:
    return (*allowlist.get(EVERY_TENANT, ()), *allowlist.get(tenant, ()))


def numeric_host(host: str) -> Address | None:
    """``host`` as an address when it is one (in any of the forms the C resolver accepts)."""
    try:
        return ip_address(host)
    except ValueError:
        pass
    if _NUMERIC_HOST.fullmatch(host):
        try:
            return IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    value = int(address)
    if address in NAT64 or (value >> 32 == 0 and value > 1):  # NAT64, or IPv4-compatible ::a.b.c.d
        return IPv4Address(value & 0xFFFFFFFF)
    return None


def _why_not_public(address: Address) -> str | None:
    checks = (
        ("loopback", address.is_loopback),
        ("unspecified", address.is_unspecified),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("not global", not address.is_global),
    )
    return next((name for name, hit in checks if hit), None)


def refusal(address: Address, allowed: Sequence[Network] = ()) -> str | None:
    """Why ``address`` may not be called (None: it is a public address, or an allowed one)."""
    inner = _embedded_ipv4(address) if isinstance(address, IPv6Address) else None
    candidates: list[Address] = [address] if inner is None else [inner]
    if isinstance(address, IPv6Address) and inner is not None and address.ipv4_mapped is None:
        candidates.append(address)  # 6to4 / NAT64 / compatible: both the wrapper and what it wraps
    for candidate in candidates:
        if any(candidate.version == n.version and candidate in n for n in allowed):
            continue
        why = _why_not_public(candidate)
        if why is not None:
            return f"{why} address"
    return None


def check_url(url: str, allowed: Sequence[Network] = ()) -> Destination:
    """The URL's destination, or :class:`DestinationRefused` (no DNS here: see :func:`resolve_and_check`)."""
    try:
        parsed = URL(url)
        port = parsed.port
        host = parsed.raw_host
    except (ValueError, TypeError) as exc:
        raise DestinationRefused("INVALID_URL", "not a valid URL") from exc
    scheme = (parsed.scheme or "").lower()
    if scheme not in ALLOWED_SCHEMES:
        raise DestinationRefused("INVALID_URL", "only http:// and https:// URLs are allowed")
    if parsed.raw_user is not None or parsed.raw_password is not None or "@" in (parsed.raw_authority or ""):
        raise DestinationRefused("URL_CREDENTIALS", "credentials in the URL are not allowed")
    if not host or port is None:
        raise DestinationRefused("INVALID_URL", "the URL has no host")
    host = host.lower().rstrip(".").strip("[]")
    if "%" in host:
        raise DestinationRefused("ADDRESS_NOT_ALLOWED", "scoped (zone) addresses are not allowed")
    address = numeric_host(host)
    if address is None and (host == "localhost" or host.endswith(".localhost")):
        address = IPv4Address("127.0.0.1")
    if address is None and (host == "invalid" or host.endswith(".invalid")):
        # RFC 6761 6.4: never resolves; refused without asking any resolver.
        raise DestinationRefused("UNRESOLVABLE_HOST", "the host name does not exist")
    if address is not None:
        why = refusal(address, allowed)
        if why is not None:
            raise DestinationRefused("ADDRESS_NOT_ALLOWED", f"the URL points at a {why}")
    return Destination(scheme, host, port, address)


# getaddrinfo blocks a thread for as long as the resolver takes (seconds, for a name whose servers do
# not answer): lookups get threads of their own, so that they never hold the default pool's.
_LOOKUPS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="outbound-dns")
# getaddrinfo's answers that say the name does not exist (NXDOMAIN), as opposed to "not now".
NO_SUCH_NAME = frozenset(
    code for code in (getattr(socket, "EAI_NONAME", None), getattr(socket, "EAI_NODATA", None)) if code
)


async def system_resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().run_in_executor(
        _LOOKUPS, functools.partial(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    )
    return [str(info[4][0]) for info in infos]


def unresolvable(exc: BaseException) -> bool:
    """Whether a lookup failure says the name does not exist (permanent), not that it failed for now."""
    return isinstance(exc, socket.gaierror) and exc.errno in NO_SUCH_NAME


async def resolve_and_check(
    url: str, allowed: Sequence[Network] = (), resolve: Resolve = system_resolve, timeout_s: float = 2.0
) -> Destination:
    """:func:`check_url`, then every address the host resolves to. A name that does not exist is refused
    (``UNRESOLVABLE_HOST``); one that cannot be resolved now (timeout, resolver failure) is let through:
    the connect-time check decides when the message is sent."""
    destination = check_url(url, allowed)
    if destination.address is not None:
        return destination
    try:
        addresses = await asyncio.wait_for(resolve(destination.host, destination.port), timeout_s)
    except (OSError, TimeoutError, UnicodeError) as exc:
        if unresolvable(exc):
            raise DestinationRefused("UNRESOLVABLE_HOST", "the host name does not exist") from exc
        return destination
    for raw in addresses:
        address = numeric_host(raw.split("%", 1)[0])
        why = "unreadable address" if address is None else refusal(address, allowed)
        if why is not None:
            raise DestinationRefused("ADDRESS_NOT_ALLOWED", f"the host resolves to a {why}")
    return destination


def connect_refusal(sockaddr_host: str, allowed: Sequence[Network] = ()) -> str | None:
    """Why a socket may not connect to ``sockaddr_host`` (the address getaddrinfo gave), or None."""
    address = numeric_host(sockaddr_host.split("%", 1)[0])
    if address is None:
        return "unreadable address"
    return refusal(address, allowed)
