"""The mock provider's settings (every ``SWITCHBOARD_MOCK_*``), and the two a client of it needs."""

from __future__ import annotations

from pydantic import Field, SecretStr

from shared.runtime.settings import ReceiptSecrets, Settings, WebhookSigning


class MockClient(Settings):
    """What a client of the local mock provider needs (the sender, for providers without an endpoint of
    their own; services/mock_provider/clients.py)."""

    mock_auth_token: SecretStr = SecretStr("mock-token")  # what the fake APIs accept as credentials
    mock_smtp_port: int = Field(0, ge=0, le=65535)  # 0: no SMTP server


class MockProviderSettings(MockClient, ReceiptSecrets, WebhookSigning):
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
    mock_smtp_tls_cert: str = ""  # PEM paths: with both, the SMTP server offers STARTTLS
    mock_smtp_tls_key: str = ""
    # Providers (names, or "*" for all) whose fake API ignores idempotency keys, as SMTP, the WhatsApp
    # Cloud API and many SMS gateways do: a repeated key is a second send, counted in the ledger.
    mock_ignore_idempotency_keys: list[str] = Field(default_factory=list)
    mock_receipt_url: str = ""  # base URL of services.receipts; empty: no delivery reports
    mock_receipt_delay_ms: float = Field(200.0, ge=0)
    mock_receipt_delivered_rate: float = Field(0.9, ge=0, le=1)
    mock_receipt_bounced_rate: float = Field(0.03, ge=0, le=1)
    mock_receipt_failed_rate: float = Field(0.02, ge=0, le=1)
