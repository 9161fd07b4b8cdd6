"""Webhook URLs checked at ingest by the outbound policy (shared/net/outbound.py), with the caller's
allowlist.

Each distinct URL is checked once, a few at a time (resolving a name is a thread-pool lookup); the sender
checks again when it connects, so this is the early, clear refusal, not the only one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from shared.core.errors import DestinationRefused
from shared.net.outbound import Resolve, allowed_for, resolve_and_check, system_resolve
from shared.runtime.settings import OutboundPolicy

CONCURRENT_LOOKUPS = 16


async def refused_destinations(
    settings: OutboundPolicy, tenant: str, urls: Iterable[str], resolve: Resolve = system_resolve
) -> dict[str, str]:
    """URL -> why, for each of ``urls`` the policy refuses for ``tenant``."""
    allowed = allowed_for(settings.outbound_networks(), tenant)
    gate = asyncio.Semaphore(CONCURRENT_LOOKUPS)

    async def check(url: str) -> tuple[str, str | None]:
        async with gate:
            try:
                await resolve_and_check(url, allowed, resolve)
            except DestinationRefused as exc:
                return url, exc.message
            return url, None

    results = await asyncio.gather(*(check(url) for url in sorted(set(urls))))
    return {url: why for url, why in results if why is not None}
