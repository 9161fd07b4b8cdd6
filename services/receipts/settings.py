"""The receipts receiver's settings: where it listens, the providers' secrets, the replay window."""

from __future__ import annotations

from pydantic import Field, SecretStr

from shared.runtime.settings import (
    DEV_RECEIPT_SECRET,
    DEV_VERIFY_TOKEN,
    DEV_WEBHOOK_SECRET,
    ReceiptSecrets,
)


class ReceiptsSettings(ReceiptSecrets):
    receipts_host: str = "127.0.0.1"
    receipts_port: int = Field(8082, ge=0, le=65535)
    receipts_max_skew_s: float = Field(300.0, gt=0)
    # Provider name -> the WhatsApp subscription handshake's verify token (not the signing secret).
    receipt_verify_tokens: dict[str, SecretStr] = Field(default_factory=dict)
    # Reports of schemes without a signed time (SMS gateway) are remembered this long, and WhatsApp
    # statuses older than this are refused: a captured report cannot be played again.
    receipts_replay_window_s: float = Field(24 * 3600.0, gt=0)

    def receipt_verify_token(self, provider: str) -> str | None:
        token = self.receipt_verify_tokens.get(provider)
        if token is not None:
            return token.get_secret_value()
        return DEV_VERIFY_TOKEN if self.development and self.receipt_secret(provider) is not None else None

    def own_development_secrets(self) -> list[str]:
        dev = {DEV_RECEIPT_SECRET, DEV_WEBHOOK_SECRET, DEV_VERIFY_TOKEN}
        found = super().own_development_secrets()
        found += [
            f"SWITCHBOARD_RECEIPT_SECRETS[{name}]"
            for name, secret in sorted(self.receipt_secrets.items())
            if secret.get_secret_value() in dev
        ]
        found += [
            f"SWITCHBOARD_RECEIPT_VERIFY_TOKENS[{name}]"
            for name, token in sorted(self.receipt_verify_tokens.items())
            if token.get_secret_value() in dev or token == self.receipt_secrets.get(name)
        ]
        return found

    def missing_secrets(self) -> list[str]:
        missing = super().missing_secrets()
        if not self.receipt_secrets:
            missing.append("SWITCHBOARD_RECEIPT_SECRETS (one secret per provider)")
        return missing
