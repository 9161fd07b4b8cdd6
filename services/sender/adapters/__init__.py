"""Provider adapters: one interface (:class:`ProviderAdapter`), one module per provider API, transport at
the edge (services/sender/adapters/transport.py), error classification by table in each module."""

from __future__ import annotations

import asyncio

import orjson

from services.sender.adapters.base import ProviderAdapter, SendRequest, SendResult
from services.sender.adapters.batching import BatchingAdapter
from services.sender.adapters.guard import GuardedAdapter
from services.sender.adapters.guarded import GuardedTransport
from services.sender.adapters.mockjson import MockJsonAdapter, result_from_http
from services.sender.adapters.sms import SmsGatewayAdapter
from services.sender.adapters.smtp import SmtpAdapter
from services.sender.adapters.transport import AiohttpTransport, HttpTransport
from services.sender.adapters.webhook import WebhookAdapter
from services.sender.adapters.whatsapp import WhatsAppCloudAdapter
from shared.routing import ProviderSpec
from shared.settings import Settings

__all__ = ["AdapterPool", "ProviderAdapter", "SendRequest", "SendResult", "build_adapter", "result_from_http"]

RETIRE_AFTER_S = 30.0  # a replaced adapter keeps serving calls in flight this long before it closes


def build_adapter(
    spec: ProviderSpec, settings: Settings, transport: HttpTransport, webhooks: HttpTransport | None = None
) -> ProviderAdapter:
    """``transport`` reaches the providers the operator configured; ``webhooks`` (guarded by the outbound
    policy) reaches the URLs tenants give."""
    base_url = str(spec.settings.get("base_url") or f"{settings.provider_url.rstrip('/')}/{spec.name}")
    token = settings.mock_auth_token.get_secret_value()
    if spec.kind == "sms_gateway":
        return SmsGatewayAdapter(base_url, spec.settings, transport, default_token=token)
    if spec.kind == "whatsapp_cloud":
        return WhatsAppCloudAdapter(base_url, spec.settings, transport, default_token=token)
    if spec.kind == "smtp":
        return SmtpAdapter(
            spec.settings, "127.0.0.1", settings.mock_smtp_port or 25, settings.provider_timeout_s
        )
    if spec.kind == "webhook":
        return WebhookAdapter(
            spec.settings,
            webhooks or transport,
            default_secret=settings.webhook_signing_secret.get_secret_value(),
            allowlist=settings.outbound_networks(),
        )
    adapter = MockJsonAdapter(str(spec.settings.get("base_url") or settings.provider_url), transport)
    if settings.provider_batch_max > 1:
        return BatchingAdapter(adapter, settings.provider_batch_max, batch_linger_s(spec, settings))
    return adapter


def batch_linger_s(spec: ProviderSpec, settings: Settings) -> float:
    """No lingering for a provider whose pace we keep (a rate limit or a per-identity gap): holding
    sends back would let up to ``linger`` of them arrive at once, beyond the limit they were paced to."""
    if spec.rate_per_s is not None or spec.pacing_gap_s > 0:
        return 0.0
    return settings.provider_batch_linger_ms / 1000


class AdapterPool:
    """One adapter per provider, rebuilt when the provider's kind or settings change."""

    def __init__(
        self,
        settings: Settings,
        transport: HttpTransport | None = None,
        webhooks: HttpTransport | None = None,
    ) -> None:
        self.settings = settings
        self.transport = transport or AiohttpTransport(
            settings.provider_timeout_s, settings.provider_concurrency
        )
        if webhooks is None and transport is not None:
            webhooks = transport  # a test's fake transport answers both
        self.webhooks = webhooks or GuardedTransport(
            settings.provider_timeout_s, settings.provider_concurrency, settings.outbound_networks()
        )
        self._adapters: dict[str, tuple[bytes, GuardedAdapter]] = {}
        self._retiring: set[asyncio.Task[None]] = set()

    def get(self, spec: ProviderSpec) -> GuardedAdapter:
        key = orjson.dumps({"kind": spec.kind, "settings": dict(spec.settings)}, option=orjson.OPT_SORT_KEYS)
        current = self._adapters.get(spec.name)
        if current is not None and current[0] == key:
            return current[1]
        adapter = GuardedAdapter(build_adapter(spec, self.settings, self.transport, self.webhooks))
        self._adapters[spec.name] = (key, adapter)
        if current is not None:
            task = asyncio.get_running_loop().create_task(self._retire(current[1]))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        return adapter

    @staticmethod
    async def _retire(adapter: ProviderAdapter) -> None:
        await asyncio.sleep(RETIRE_AFTER_S)
        await adapter.close()

    async def close(self) -> None:
        for task in list(self._retiring):
            task.cancel()
        for _, adapter in self._adapters.values():
            await adapter.close()
        await self.transport.close()
        if self.webhooks is not self.transport:
            await self.webhooks.close()
