"""Service users' RabbitMQ passwords, from ``SWITCHBOARD_RABBITMQ_<SERVICE>_PASSWORD`` (never from files)."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.bus.topology import ServiceRole


class ServicePasswords(BaseSettings):
    """e.g. ``SWITCHBOARD_RABBITMQ_POLLER_PASSWORD``; unset: keep the user's password, or use the dev one."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_RABBITMQ_", extra="ignore")

    poller_password: SecretStr | None = None
    sender_password: SecretStr | None = None
    responder_password: SecretStr | None = None
    receipts_password: SecretStr | None = None
    dlq_password: SecretStr | None = None
    monitor_password: SecretStr | None = None

    def by_role(self) -> dict[ServiceRole, str | None]:
        values: dict[ServiceRole, str | None] = {}
        for role in ServiceRole:
            secret: SecretStr | None = getattr(self, f"{role.value}_password")
            values[role] = secret.get_secret_value() if secret else None
        return values

    @staticmethod
    def variable(role: ServiceRole) -> str:
        return f"SWITCHBOARD_RABBITMQ_{role.value.upper()}_PASSWORD"
