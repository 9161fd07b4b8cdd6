"""Development mode and its secrets: what a process refuses to start with outside development.

``SWITCHBOARD_ENV=development`` (the default) lets the documented development secrets work, so that a
newcomer needs no configuration, and every process says so loudly at start. ``production`` refuses to
start while any secret the process uses is still a documented development value, and the receipts
receiver refuses to start without a secret per provider. Only setting names are ever reported, never
their values.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from shared.core.errors import ConfigurationError
from shared.runtime.logs import get_logger
from shared.runtime.settings import DEV_RECEIPT_SECRET, DEV_VERIFY_TOKEN, DEV_WEBHOOK_SECRET, Settings

DEV_PASSWORD_PREFIX = "switchboard-dev-"
DEV_PASSWORDS = frozenset({"guest", "postgres", ""})


class InsecureConfiguration(ConfigurationError):
    """Production mode with a development secret, or without a secret it needs."""


def _dev_password(url: str) -> bool:
    try:
        password = urlsplit(url).password
    except ValueError:
        return False
    password = password or ""
    return password in DEV_PASSWORDS or password.startswith(DEV_PASSWORD_PREFIX)


def development_secrets(settings: Settings, service: str) -> list[str]:
    """The settings ``service`` uses that still hold a development value (names only)."""
    found: list[str] = []
    if _dev_password(settings.amqp_url()):
        found.append("SWITCHBOARD_RABBITMQ_URL (its password)")
    if (urlsplit(settings.database_dsn()).password or "").startswith(DEV_PASSWORD_PREFIX):
        found.append("SWITCHBOARD_DATABASE_URL (its password)")
    if service in ("admin", "dashboard") and settings.rabbitmq_management_password.get_secret_value() in (
        "guest",
        "",
    ):
        found.append("SWITCHBOARD_RABBITMQ_MANAGEMENT_PASSWORD")
    if service == "sender" and settings.webhook_signing_secret.get_secret_value() == DEV_WEBHOOK_SECRET:
        found.append("SWITCHBOARD_WEBHOOK_SIGNING_SECRET")
    if service == "receipts":
        dev = {DEV_RECEIPT_SECRET, DEV_WEBHOOK_SECRET, DEV_VERIFY_TOKEN}
        found += [
            f"SWITCHBOARD_RECEIPT_SECRETS[{name}]"
            for name, secret in sorted(settings.receipt_secrets.items())
            if secret.get_secret_value() in dev
        ]
        found += [
            f"SWITCHBOARD_RECEIPT_VERIFY_TOKENS[{name}]"
            for name, token in sorted(settings.receipt_verify_tokens.items())
            if token.get_secret_value() in dev or token == settings.receipt_secrets.get(name)
        ]
    return found


def missing_secrets(settings: Settings, service: str) -> list[str]:
    if service == "receipts" and not settings.receipt_secrets:
        return ["SWITCHBOARD_RECEIPT_SECRETS (one secret per provider)"]
    return []


def check_secrets(settings: Settings, service: str, extra_dev: list[str] | None = None) -> None:
    """Raise :class:`InsecureConfiguration` in production; warn (loudly) in development."""
    dev = [*development_secrets(settings, service), *(extra_dev or [])]
    missing = missing_secrets(settings, service)
    log = get_logger("hardening")
    if settings.development:
        log.warning(
            "DEVELOPMENT_MODE",
            message="SWITCHBOARD_ENV=development: development secrets are accepted; never expose this "
            "process. Set SWITCHBOARD_ENV=production in any shared or deployed environment.",
            development_secrets=dev + missing,
        )
        return
    if dev or missing:
        problems = [f"{name} is a development default" for name in dev]
        problems += [f"{name} is required" for name in missing]
        raise InsecureConfiguration(
            f"{service} refuses to start in production: " + "; ".join(problems) + " (docs/security.md)"
        )
