"""Delivery-report callbacks: after a configurable delay, POST each report; retry like a provider would."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiohttp

from services.mock_provider.behaviour import ReceiptMix, receipt_verdict
from services.mock_provider.reports import Delivery, build_report
from shared.runtime.logs import get_logger

__all__ = ["Callbacks", "Delivery"]

log = get_logger("mock_provider.callbacks")
RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0)


class Callbacks:
    def __init__(self, base_url: str, mix: ReceiptMix, seed: int, secret_for: Callable[[str], str]) -> None:
        self.base_url = base_url
        self.mix = mix
        self.seed = seed
        self.secret_for = secret_for
        self.rng = random.Random(seed)
        self.counts: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    def schedule(self, delivery: Delivery) -> None:
        verdict = receipt_verdict(self.mix, self.seed, delivery.recipient, delivery.key)
        if verdict is None:
            self.counts["none"] += 1
            return
        self.counts[f"scheduled_{verdict.value}"] += 1
        delay = self.mix.delay_ms / 1000 * self.rng.uniform(0.8, 1.2)
        report = build_report(delivery, verdict, self.base_url, self.secret_for(delivery.provider))
        task = asyncio.get_running_loop().create_task(
            self._post(report.url, report.body, report.headers, delay)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, url: str, body: bytes, headers: dict[str, str], delay: float) -> None:
        await asyncio.sleep(delay)
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        for pause in (*RETRY_DELAYS_S, None):
            try:
                async with self._session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status < 300:
                        self.counts["sent"] += 1
                        return
                    if 400 <= response.status < 500 and response.status not in (408, 429):
                        self.counts["rejected"] += 1  # the receiver will never take it
                        log.warning("receipt_rejected", url=url, status=response.status)
                        return
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.info("receipt_post_failed", url=url, error=repr(exc)[:200])
            if pause is None:
                break
            await asyncio.sleep(pause)
        self.counts["gave_up"] += 1

    def stats(self) -> dict[str, Any]:
        return {**self.counts, "pending": len(self._tasks)}

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
