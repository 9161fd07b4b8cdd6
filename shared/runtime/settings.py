"""Settings every process reads (``SWITCHBOARD_*``), and the groups of settings several processes share.

Each process loads one class: its own, in ``services/<name>/settings.py``, built from :class:`Settings`
and the groups below that it needs. The environment variable of a field is ``SWITCHBOARD_`` + its name
upper-cased, whichever class declares it, so deploy files and docs name the same variables as before the
split (issue 13). A process ignores variables meant for others, but a keyword argument that is not a
field of the class is refused (a leftover of the split or a typo would otherwise be ignored silently).
"""

from __future__ import annotations

from enum import StrEnum
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LaneName = Literal["urgent", "bulk"]  # shared.bus.topology.Lane's values (settings may not import it)
LANE_NAMES: tuple[LaneName, ...] = ("urgent", "bulk")


class Environment(StrEnum):
    """``SWITCHBOARD_ENV``: development (the default) accepts the documented development secrets, with a
    loud warning at every start; production refuses to start with any of them
    (shared/runtime/hardening.py)."""

    DEVELOPMENT = "development"
    PRODUCTION = "production"


DEV_RECEIPT_SECRET = "switchboard-dev-receipts"
DEV_WEBHOOK_SECRET = "switchboard-dev-webhooks"
DEV_VERIFY_TOKEN = "switchboard-dev-verify"


class Settings(BaseSettings):
    """What every process reads: its backends, the broker topology's size, logs, metrics and health."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_", extra="ignore")

    env: Environment = Environment.DEVELOPMENT
    database_url: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/switchboard")
    rabbitmq_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/switchboard")
    rabbitmq_management_url: str = "http://127.0.0.1:15672"
    rabbitmq_management_user: str = "guest"
    rabbitmq_management_password: SecretStr = SecretStr("guest")

    # The topology every process declares or checks (shared/bus/topology.py).
    shards: int = Field(4, ge=1, le=64)
    delivery_limit: int = Field(10, ge=1)

    metrics_port: int = Field(0, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    readiness_timeout_s: float = Field(1.0, gt=0, le=30)  # each /readyz check's answer, at most
    # After SIGTERM: how long work in progress may take to finish before it is cancelled.
    stop_grace_s: float = Field(4.0, gt=0, le=60)
    log_level: str = "INFO"
    # auto: console lines on a terminal, JSON lines otherwise; json; console (shared/runtime/logs.py).
    log_format: Literal["auto", "json", "console"] = "auto"

    def __init__(self, **values: Any) -> None:
        unknown = sorted(k for k in values if not k.startswith("_") and k not in type(self).model_fields)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no setting {', '.join(unknown)}")
        super().__init__(**values)

    def database_dsn(self) -> str:
        return self.database_url.get_secret_value()

    def amqp_url(self) -> str:
        return self.rabbitmq_url.get_secret_value()

    def vhost(self) -> str:
        path = urlsplit(self.amqp_url()).path
        return path[1:] if len(path) > 1 else "/"

    @property
    def development(self) -> bool:
        return self.env == Environment.DEVELOPMENT

    def with_vhost(self, vhost: str) -> str:
        """The AMQP URL pointing at another vhost (used by tests and tools)."""
        parts = urlsplit(self.amqp_url())
        return urlunsplit((parts.scheme, parts.netloc, "/" + quote(vhost, safe=""), parts.query, ""))

    def own_development_secrets(self) -> list[str]:
        """Secrets of this process's own settings still at a development value (names only); the
        backends' passwords are checked for every process (shared/runtime/hardening.py)."""
        return []

    def missing_secrets(self) -> list[str]:
        """Secrets this process cannot run without in production (names only)."""
        return []


class ManagementAccess(Settings):
    """A process that calls the RabbitMQ management API (setup, the dashboard): its password is a secret."""

    def own_development_secrets(self) -> list[str]:
        found = super().own_development_secrets()
        if self.rabbitmq_management_password.get_secret_value() in ("guest", ""):
            found.append("SWITCHBOARD_RABBITMQ_MANAGEMENT_PASSWORD")
        return found


class ShardConsumer(Settings):
    """A process that consumes shard queues through shared/bus/consumer.py (sender, responder)."""

    # Which shard queues this sender/responder consumes; empty means all of them.
    consume_shards: list[int] = Field(default_factory=list)
    # ...and, with standby_all, it subscribes to the rest after a delay as a single-active-consumer standby.
    standby_all: bool = True
    standby_delay_s: float = Field(2.0, ge=0)
    # ...waiting up to this long for each of those shards' own replica to subscribe first.
    standby_wait_s: float = Field(30.0, ge=0)
    prefetch: int = Field(200, ge=1, le=5_000)
    # The urgent lane's prefetch (senders and responders consume that lane on a channel of its own).
    urgent_prefetch: int = Field(50, ge=1, le=5_000)
    max_payload_bytes: int = Field(64 * 1024, ge=1)

    def shard_ids(self) -> list[int]:
        return sorted(set(self.consume_shards)) if self.consume_shards else list(range(self.shards))


class ProviderChains(Settings):
    """The fallback chains used while the routing tables in PostgreSQL name no provider (API, sender,
    responder; shared/core/routing.py)."""

    # channel -> ordered fallback chain of provider names
    provider_chains: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "sms": ["mocksms", "mocksms2"],
            "mms": ["mocksms", "mocksms2"],
            "email": ["mockmail", "mockmail2"],
            "whatsapp": ["mockwa"],
        }
    )
    routing_refresh_s: float = Field(1.0, gt=0)


class OutboundPolicy(Settings):
    """The outbound policy's per-tenant allowlist of internal networks (shared/net/outbound.py), e.g.
    ``{"acme": ["10.1.2.0/24"], "*": ["127.0.0.1/32"]}`` (API at ingest, sender at connect time)."""

    outbound_allowlist: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("outbound_allowlist")
    @classmethod
    def _networks(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for networks in value.values():
            for network in networks:
                ip_network(network, strict=False)  # ValueError: a clear settings error at start
        return value

    def outbound_networks(self) -> dict[str, tuple[IPv4Network | IPv6Network, ...]]:
        return {
            tenant: tuple(ip_network(n, strict=False) for n in networks)
            for tenant, networks in self.outbound_allowlist.items()
        }


class WebhookSigning(Settings):
    """The key outgoing webhooks are signed with (never the receipts' verification key): the sender
    signs, the mock provider checks."""

    webhook_signing_secret: SecretStr = SecretStr(DEV_WEBHOOK_SECRET)


class ReceiptSecrets(Settings):
    """Provider name -> the secret its delivery reports are signed with: the receipts receiver checks
    them, the mock provider signs its reports with them. A provider without one gets 404, except in
    development mode, where the development default serves every provider."""

    receipt_secrets: dict[str, SecretStr] = Field(default_factory=dict)
    default_receipt_secret: SecretStr = SecretStr(DEV_RECEIPT_SECRET)

    def receipt_secret(self, provider: str) -> str | None:
        """The secret ``provider`` signs its reports with; None: an unknown provider (404)."""
        secret = self.receipt_secrets.get(provider)
        if secret is None and self.development:
            secret = self.default_receipt_secret
        return None if secret is None else secret.get_secret_value()


class AttemptBudget(Settings):
    """The attempts a log gets when it does not say: a new log at the API, a requeued dead letter."""

    max_attempts: int = Field(5, ge=1, le=100)


class LaneChoice(Settings):
    """The lanes this poller claims and publishes, or this sender consumes. A poller and a sender of their
    own for ["urgent"] (beside ones for ["bulk"]) keep an OTP off the event loops that a campaign's bulk
    work keeps busy (docs/ordering.md). A poller reclaims the expired leases of the lanes it serves."""

    lanes: list[LaneName] = Field(default_factory=lambda: list(LANE_NAMES), min_length=1)
