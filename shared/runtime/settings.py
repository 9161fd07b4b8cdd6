"""Configuration for every process, read from ``SWITCHBOARD_*`` environment variables."""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LaneName = Literal["urgent", "bulk"]  # shared.bus.topology.Lane's values (settings may not import it)
LANE_NAMES: tuple[LaneName, ...] = ("urgent", "bulk")


class Ordering(StrEnum):
    STRICT = "strict"
    BEST_EFFORT = "best_effort"


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
    """Every knob of Switchboard; defaults work against the local services of a dev machine."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_", extra="ignore")

    env: Environment = Environment.DEVELOPMENT
    database_url: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/switchboard")
    rabbitmq_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/switchboard")
    rabbitmq_management_url: str = "http://127.0.0.1:15672"
    rabbitmq_management_user: str = "guest"
    rabbitmq_management_password: SecretStr = SecretStr("guest")
    provider_url: str = "http://127.0.0.1:8081"

    shards: int = Field(4, ge=1, le=64)
    # Which shard queues this sender/responder consumes; empty means all of them.
    consume_shards: list[int] = Field(default_factory=list)
    # ...and, with standby_all, it subscribes to the rest after a delay as a single-active-consumer standby.
    standby_all: bool = True
    standby_delay_s: float = Field(2.0, ge=0)
    # ...waiting up to this long for each of those shards' own replica to subscribe first.
    standby_wait_s: float = Field(30.0, ge=0)
    delivery_limit: int = Field(10, ge=1)
    batch_size: int = Field(500, ge=1, le=10_000)
    prefetch: int = Field(200, ge=1, le=5_000)
    # The urgent lane's prefetch (senders and responders consume that lane on a channel of its own).
    urgent_prefetch: int = Field(50, ge=1, le=5_000)
    # The lanes this poller claims and publishes, or this sender consumes. A poller and a sender of their
    # own for ["urgent"] (beside ones for ["bulk"]) keep an OTP off the event loops that a campaign's bulk
    # work keeps busy (docs/ordering.md). Expired leases are reclaimed by the pollers of the bulk lane.
    lanes: list[LaneName] = Field(default_factory=lambda: list(LANE_NAMES), min_length=1)
    # The poller is woken by LISTEN/NOTIFY when logs due now are inserted; it polls every poll_interval_s
    # anyway (retries, resumed campaigns), and cycles at most once per poll_min_interval_s (batching).
    poll_interval_s: float = Field(0.2, gt=0)
    poll_min_interval_s: float = Field(0.01, ge=0)
    lease_s: float = Field(120.0, gt=0)
    # Per lane, the poller keeps at most dispatch_budget_s of the measured drain rate waiting in the
    # broker, never fewer than dispatch_min_backlog nor more than max_dispatch_depth messages.
    dispatch_budget_s: float = Field(2.0, gt=0, le=600)
    dispatch_min_backlog: int = Field(200, ge=1)
    max_dispatch_depth: int = Field(20_000, ge=1)
    starvation_after_s: float = Field(30.0, ge=0)
    starvation_share: float = Field(0.1, ge=0, le=1)
    ordering: Ordering = Ordering.STRICT

    # A dead letter being relayed is marked this long; a mark that runs out (its relay died) makes the
    # row "in doubt", resolved by looking for its letter in the DLQ (services/responder/relay.py).
    dead_letter_lease_s: float = Field(60.0, ge=1, le=3600)
    max_attempts: int = Field(5, ge=1, le=100)
    backoff_base_s: float = Field(5.0, ge=0)
    backoff_cap_s: float = Field(300.0, ge=0)
    backoff_jitter: float = Field(0.2, ge=0, le=1)

    provider_timeout_s: float = Field(10.0, gt=0)
    provider_concurrency: int = Field(256, ge=1)
    # Providers with a bulk API (the mock's JSON API): sends go out as one request of up to this many
    # messages (1: one request per message). Per provider and channel at most provider_batch_in_flight
    # requests are in flight; a send that finds a free slot goes at once, the others gather until a
    # request returns (services/sender/adapters/batching.py). An urgent send always goes at once.
    provider_batch_max: int = Field(100, ge=1, le=1000)
    provider_batch_in_flight: int = Field(4, ge=1, le=256)
    max_payload_bytes: int = Field(64 * 1024, ge=1)
    # channel -> ordered fallback chain of provider names
    provider_chains: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "sms": ["mocksms", "mocksms2"],
            "mms": ["mocksms", "mocksms2"],
            "email": ["mockmail", "mockmail2"],
            "whatsapp": ["mockwa"],
        }
    )

    # Routing (shared/core/routing.py): the tables in PostgreSQL win over provider_chains once they name
    # a provider.
    routing_refresh_s: float = Field(1.0, gt=0)
    reliability_refresh_s: float = Field(5.0, gt=0)
    reliability_window: int = Field(200, ge=1)
    # The breaker opens when at least failure_ratio of a provider's last circuit_window calls (at least
    # circuit_min_calls of them) failed: 5xx, timeouts, 429s and unavailability count.
    circuit_window: int = Field(20, ge=1)
    circuit_failure_ratio: float = Field(0.5, gt=0, le=1)
    circuit_min_calls: int = Field(10, ge=1)
    circuit_open_s: float = Field(30.0, gt=0)
    circuit_probe_grace_s: float = Field(5.0, ge=0)
    # A message waits this long at most for its provider's rate limit or pacing (then: another
    # provider, or a deferral RATE_LIMITED_LOCALLY: back to PENDING, no attempt used).
    rate_limit_max_wait_s: float = Field(30.0, ge=0)
    rate_limit_lease_s: float = Field(0.05, gt=0)
    # Failover (channel_policies may override the first two per channel): after this many consecutive
    # transient failures of one log on one provider, its next attempt goes to the next provider; a 429
    # whose Retry-After is longer than the tolerance moves on at once.
    failover_after: int = Field(2, ge=1, le=100)
    retry_after_tolerance_s: float = Field(30.0, ge=0)
    # A log deferred this many times (every provider saturated or open, again and again) has its next
    # deferral counted as a failed attempt, so that it reaches a terminal state in the end.
    max_deferrals: int = Field(1000, ge=1)
    # Receipts (delivery reports): the HTTP receiver and the secrets providers sign callbacks with.
    receipts_host: str = "127.0.0.1"
    receipts_port: int = Field(8082, ge=0, le=65535)
    receipts_max_skew_s: float = Field(300.0, gt=0)
    # Provider name -> the secret its reports are signed with. A provider without one gets 404, except
    # in development mode, where the development default serves every provider.
    receipt_secrets: dict[str, SecretStr] = Field(default_factory=dict)
    # How often the responder counts SENT logs whose delivery report is overdue (shared/db/overdue.py).
    receipts_overdue_every_s: float = Field(15.0, gt=0)
    default_receipt_secret: SecretStr = SecretStr(DEV_RECEIPT_SECRET)
    # Provider name -> the WhatsApp subscription handshake's verify token (not the signing secret).
    receipt_verify_tokens: dict[str, SecretStr] = Field(default_factory=dict)
    # Reports taken are remembered this long (in PostgreSQL, shared by the replicas), and WhatsApp
    # statuses older than this are refused: a captured report cannot be played again.
    receipts_replay_window_s: float = Field(24 * 3600.0, gt=0)

    # Outgoing webhooks: the key they are signed with (never the receipts' verification key), and the
    # outbound policy's per-tenant allowlist of internal networks (shared/net/outbound.py), e.g.
    # {"acme": ["10.1.2.0/24"], "*": ["127.0.0.1/32"]}.
    webhook_signing_secret: SecretStr = SecretStr(DEV_WEBHOOK_SECRET)
    outbound_allowlist: dict[str, list[str]] = Field(default_factory=dict)

    responder_batch_size: int = Field(500, ge=1, le=10_000)
    # 0: a batch is what has arrived while the previous one was written (no waiting under light load).
    responder_batch_wait_s: float = Field(0.0, ge=0)

    metrics_port: int = Field(0, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    readiness_timeout_s: float = Field(1.0, gt=0, le=30)  # each /readyz check's answer, at most
    # After SIGTERM: how long work in progress may take to finish before it is cancelled.
    stop_grace_s: float = Field(4.0, gt=0, le=60)
    log_level: str = "INFO"
    # auto: console lines on a terminal, JSON lines otherwise; json; console (shared/runtime/logs.py).
    log_format: Literal["auto", "json", "console"] = "auto"

    mock_host: str = "127.0.0.1"
    mock_port: int = Field(8081, ge=0, le=65535)
    mock_seed: int = 42
    mock_latency_ms: float = Field(20.0, ge=0)
    mock_latency_jitter_ms: float = Field(10.0, ge=0)
    mock_transient_rate: float = Field(0.04, ge=0, le=1)
    mock_permanent_rate: float = Field(0.03, ge=0, le=1)
    mock_rate_limit_rate: float = Field(0.02, ge=0, le=1)
    mock_retry_after_s: float = Field(1.0, ge=0)
    # A freshly started mock accepts its first N first attempts whatever the random draw (magic
    # prefixes aside), so a newcomer's first message ends SENT; 0: every send takes its chance. Off
    # when a failure rate is set explicitly (services/mock_provider/__main__.py).
    mock_welcome_sends: int = Field(5, ge=0)
    mock_ledger_path: str = ""
    mock_smtp_port: int = Field(0, ge=0, le=65535)  # 0: no SMTP server
    mock_smtp_tls_cert: str = ""  # PEM paths: with both, the SMTP server offers STARTTLS
    mock_smtp_tls_key: str = ""
    # Providers (names, or "*" for all) whose fake API ignores idempotency keys, as SMTP, the WhatsApp
    # Cloud API and many SMS gateways do: a repeated key is a second send, counted in the ledger.
    mock_ignore_idempotency_keys: list[str] = Field(default_factory=list)
    mock_auth_token: SecretStr = SecretStr("mock-token")  # what the fake APIs accept as credentials
    mock_receipt_url: str = ""  # base URL of services.receipts; empty: no delivery reports
    mock_receipt_delay_ms: float = Field(200.0, ge=0)
    mock_receipt_delivered_rate: float = Field(0.9, ge=0, le=1)
    mock_receipt_bounced_rate: float = Field(0.03, ge=0, le=1)
    mock_receipt_failed_rate: float = Field(0.02, ge=0, le=1)

    @field_validator("outbound_allowlist")
    @classmethod
    def _networks(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for networks in value.values():
            for network in networks:
                ip_network(network, strict=False)  # ValueError: a clear settings error at start
        return value

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

    def receipt_secret(self, provider: str) -> str | None:
        """The secret ``provider`` signs its reports with; None: an unknown provider (404)."""
        secret = self.receipt_secrets.get(provider)
        if secret is None and self.development:
            secret = self.default_receipt_secret
        return None if secret is None else secret.get_secret_value()

    def receipt_verify_token(self, provider: str) -> str | None:
        token = self.receipt_verify_tokens.get(provider)
        if token is not None:
            return token.get_secret_value()
        return DEV_VERIFY_TOKEN if self.development and self.receipt_secret(provider) is not None else None

    def outbound_networks(self) -> dict[str, tuple[IPv4Network | IPv6Network, ...]]:
        return {
            tenant: tuple(ip_network(n, strict=False) for n in networks)
            for tenant, networks in self.outbound_allowlist.items()
        }

    def shard_ids(self) -> list[int]:
        return sorted(set(self.consume_shards)) if self.consume_shards else list(range(self.shards))

    def with_vhost(self, vhost: str) -> str:
        """The AMQP URL pointing at another vhost (used by tests and tools)."""
        parts = urlsplit(self.amqp_url())
        return urlunsplit((parts.scheme, parts.netloc, "/" + quote(vhost, safe=""), parts.query, ""))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
