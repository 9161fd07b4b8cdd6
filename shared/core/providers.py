"""The provider kinds Switchboard speaks, in one registry (kombu's ``TRANSPORT_ALIASES``): the channels
each carries, the settings its adapter reads, whether its real API de-duplicates by our idempotency key,
and which setting names its own endpoint.

The API validates routing configuration against it, the sender builds adapters from it
(services/sender/adapters/__init__.py: ``ADAPTERS``), and the ``providers.kind`` CHECK constraint lists
the same names (tests/integration/test_provider_kinds.py). A kind that is not here is a
:class:`ConfigurationError`, never a silent fallback to another adapter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from shared.core.errors import ConfigurationError
from shared.core.models import Channel

# Setting types (validated by the API, read by the adapters). Credentials are SECRET: through the API
# they must be references to the sender's environment ("env:NAME").
SECRET = "secret"
URL = "url"


class ProviderKind(StrEnum):
    """The adapter, i.e. the provider API spoken."""

    SMS_GATEWAY = "sms_gateway"
    WHATSAPP_CLOUD = "whatsapp_cloud"
    SMTP = "smtp"
    WEBHOOK = "webhook"
    MOCK_JSON = "mock_json"
    SIGNAL_CLI = "signal_cli"


@dataclass(frozen=True, slots=True)
class KindSpec:
    channels: frozenset[Channel]
    settings: Mapping[str, str]  # name -> type
    honours_idempotency_keys: bool
    # The setting that points at the provider's own endpoint; without it the sender talks to the local
    # mock provider (and fills in the mock's credentials). None: the endpoint comes with each message.
    endpoint: str | None


PROVIDER_KINDS: Mapping[ProviderKind, KindSpec] = {
    ProviderKind.SMS_GATEWAY: KindSpec(
        frozenset({Channel.SMS, Channel.MMS}),
        {"base_url": URL, "account_sid": "str", "auth_token": SECRET, "from": "str", "status_callback": URL},
        honours_idempotency_keys=True,
        endpoint="base_url",
    ),
    ProviderKind.WHATSAPP_CLOUD: KindSpec(
        frozenset({Channel.WHATSAPP}),
        {"base_url": URL, "api_version": "str", "phone_number_id": "str", "access_token": SECRET},
        honours_idempotency_keys=False,
        endpoint="base_url",
    ),
    ProviderKind.SMTP: KindSpec(
        frozenset({Channel.EMAIL}),
        {
            "host": "str",
            "port": "port",
            "username": "str",
            "password": SECRET,
            "starttls": "bool",
            "use_tls": "bool",
            "validate_certs": "bool",
            "ca_file": "str",
            "from": "str",
            "timeout_s": "seconds",
            "pool_size": "pool",
        },
        honours_idempotency_keys=False,
        endpoint="host",
    ),
    ProviderKind.WEBHOOK: KindSpec(
        frozenset({Channel.WEBHOOK}),
        {"secret": SECRET, "https_only": "bool"},
        honours_idempotency_keys=False,
        endpoint=None,
    ),
    # A self-hosted signal-cli REST API (services/sender/adapters/signal.py): no idempotency keys.
    ProviderKind.SIGNAL_CLI: KindSpec(
        frozenset({Channel.SIGNAL}),
        {"base_url": URL, "number": "str", "username": "str", "password": SECRET},
        honours_idempotency_keys=False,
        endpoint="base_url",
    ),
    # The mock provider's generic API: every channel.
    ProviderKind.MOCK_JSON: KindSpec(
        frozenset(Channel), {"base_url": URL}, honours_idempotency_keys=True, endpoint="base_url"
    ),
}

KIND_CHANNELS: Mapping[ProviderKind, frozenset[Channel]] = {k: s.channels for k, s in PROVIDER_KINDS.items()}
KIND_SETTINGS: Mapping[ProviderKind, Mapping[str, str]] = {k: s.settings for k, s in PROVIDER_KINDS.items()}


def provider_kind(name: str) -> ProviderKind:
    """The registered kind called ``name``; anything else is a configuration error."""
    try:
        return ProviderKind(name)
    except ValueError:
        known = ", ".join(k.value for k in ProviderKind)
        raise ConfigurationError(f"unknown provider kind {name!r} (known: {known})") from None
