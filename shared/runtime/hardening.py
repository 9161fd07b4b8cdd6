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
from shared.runtime.settings import Settings

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


def development_secrets(settings: Settings) -> list[str]:
    """The secrets the process of ``settings`` uses that still hold a development value (names only):
    its backends' passwords, and those of its own settings class."""
    found: list[str] = []
    if _dev_password(settings.amqp_url()):
        found.append("SWITCHBOARD_RABBITMQ_URL (its password)")
    if (urlsplit(settings.database_dsn()).password or "").startswith(DEV_PASSWORD_PREFIX):
        found.append("SWITCHBOARD_DATABASE_URL (its password)")
    return found + settings.own_development_secrets()


def check_secrets(settings: Settings, service: str) -> None:
    """Raise :class:`InsecureConfiguration` in production; warn (loudly) in development."""
    dev = development_secrets(settings)
    missing = settings.missing_secrets()
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
