"""Provider adapters: one interface (:class:`ProviderAdapter`), one module per provider API, transport at
the edge (services/sender/adapters/transport.py), error classification by table in each module."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from services.mock_provider.clients import mock_client_settings
from services.sender.adapters.base import ProviderAdapter, SendRequest, SendResult
from services.sender.adapters.batching import BatchingAdapter
from services.sender.adapters.guard import GuardedAdapter
from services.sender.adapters.guarded import GuardedTransport
from services.sender.adapters.mockjson import MockJsonAdapter, result_from_http
from services.sender.adapters.signal import SignalCliAdapter
from services.sender.adapters.sms import SmsGatewayAdapter
from services.sender.adapters.smtp import SmtpAdapter
from services.sender.adapters.transport import AiohttpTransport, HttpTransport
from services.sender.adapters.webhook import WebhookAdapter
from services.sender.adapters.whatsapp import WhatsAppCloudAdapter
from services.sender.settings import SenderSettings
from shared.core.errors import ConfigurationError
from shared.core.providers import PROVIDER_KINDS, ProviderKind, provider_kind
from shared.core.routing import ProviderSpec

__all__ = [
    "ADAPTERS",
    "AdapterPool",
    "ProviderAdapter",
    "SendRequest",
    "SendResult",
    "build_adapter",
    "result_from_http",
]

RETIRE_AFTER_S = 30.0  # a replaced adapter keeps serving calls in flight this long before it closes


AdapterFactory = Callable[
    [ProviderSpec, Mapping[str, Any], SenderSettings, HttpTransport, HttpTransport], ProviderAdapter
]


def _endpoint(spec: ProviderSpec, settings: SenderSettings) -> str:
    return str(spec.settings.get("base_url") or f"{settings.provider_url.rstrip('/')}/{spec.name}")


def _sms(
    spec: ProviderSpec,
    options: Mapping[str, Any],
    settings: SenderSettings,
    http: HttpTransport,
    _: HttpTransport,
) -> ProviderAdapter:
    return SmsGatewayAdapter(_endpoint(spec, settings), options, http)


def _whatsapp(
    spec: ProviderSpec,
    options: Mapping[str, Any],
    settings: SenderSettings,
    http: HttpTransport,
    _: HttpTransport,
) -> ProviderAdapter:
    return WhatsAppCloudAdapter(_endpoint(spec, settings), options, http)


def _smtp(
    spec: ProviderSpec,
    options: Mapping[str, Any],
    settings: SenderSettings,
    _: HttpTransport,
    __: HttpTransport,
) -> ProviderAdapter:
    return SmtpAdapter(options, "", 25, settings.provider_timeout_s)


def _signal(
    spec: ProviderSpec,
    options: Mapping[str, Any],
    settings: SenderSettings,
    http: HttpTransport,
    _: HttpTransport,
) -> ProviderAdapter:
    return SignalCliAdapter(_endpoint(spec, settings), options, http)


def _webhook(
    spec: ProviderSpec,
    options: Mapping[str, Any],
    settings: SenderSettings,
    _: HttpTransport,
    webhooks: HttpTransport,
) -> ProviderAdapter:
    return WebhookAdapter(
        options,
        webhooks,
        default_secret=settings.webhook_signing_secret.get_secret_value(),
        allowlist=settings.outbound_networks(),
    )


def _mock_json(
    spec: ProviderSpec,
    options: Mapping[str, Any],
    settings: SenderSettings,
    http: HttpTransport,
    _: HttpTransport,
) -> ProviderAdapter:
    adapter = MockJsonAdapter(str(options.get("base_url") or settings.provider_url), http)
    if settings.provider_batch_max > 1:
        return BatchingAdapter(adapter, settings.provider_batch_max, batch_in_flight(spec, settings))
    return adapter


# One adapter per registered kind (shared/core/providers.py);
# tests/unit/test_provider_kinds.py holds them equal.
ADAPTERS: Mapping[ProviderKind, AdapterFactory] = {
    ProviderKind.SMS_GATEWAY: _sms,
    ProviderKind.WHATSAPP_CLOUD: _whatsapp,
    ProviderKind.SMTP: _smtp,
    ProviderKind.WEBHOOK: _webhook,
    ProviderKind.MOCK_JSON: _mock_json,
    ProviderKind.SIGNAL_CLI: _signal,
}


def adapter_options(kind: ProviderKind, spec: ProviderSpec, settings: SenderSettings) -> Mapping[str, Any]:
    """The provider's settings; one without an endpoint of its own is the local mock provider, and gets
    the mock's credentials for what it leaves out (services/mock_provider/clients.py)."""
    endpoint = PROVIDER_KINDS[kind].endpoint
    if endpoint is None or spec.settings.get(endpoint):
        return spec.settings
    return {**mock_client_settings(kind, settings), **spec.settings}


def build_adapter(
    spec: ProviderSpec,
    settings: SenderSettings,
    transport: HttpTransport,
    webhooks: HttpTransport | None = None,
) -> ProviderAdapter:
    """``transport`` reaches the providers the operator configured; ``webhooks`` (guarded by the outbound
    policy) reaches the URLs tenants give. An unknown kind, or settings its adapter cannot work with,
    raise :class:`ConfigurationError`."""
    kind = provider_kind(spec.kind)
    factory = ADAPTERS.get(kind)
    if factory is None:
        raise ConfigurationError(f"provider {spec.name!r}: this sender has no adapter for kind {kind.value}")
    return factory(spec, adapter_options(kind, spec, settings), settings, transport, webhooks or transport)


def batch_in_flight(spec: ProviderSpec, settings: SenderSettings) -> int | None:
    """No holding back for a provider whose pace we keep (a rate limit or a per-identity gap): sends
    held while its calls are in flight would go together, beyond the pace they were let through at."""
    if spec.rate_per_s is not None or spec.pacing_gap_s > 0:
        return None
    return settings.provider_batch_in_flight


class AdapterPool:
    """One adapter per provider, rebuilt when the provider's kind or settings change."""

    def __init__(
        self,
        settings: SenderSettings,
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
