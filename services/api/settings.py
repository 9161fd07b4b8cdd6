"""The API's settings: ``SWITCHBOARD_API_*`` and the shared groups it reads (routing, outbound, attempts)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr

from shared.runtime.settings import AttemptBudget, OutboundPolicy, ProviderChains

DEV_PEPPER = "switchboard-dev-pepper"


class ApiSettings(ProviderChains, OutboundPolicy, AttemptBudget):
    """Where the API listens, how it hashes keys, and the limits it enforces."""

    api_host: str = "127.0.0.1"
    api_port: int = Field(8080, ge=0, le=65535)
    # Mixed into every key hash; set it in production (a leaked table alone then reveals nothing).
    api_key_pepper: SecretStr = SecretStr(DEV_PEPPER)
    # How long a verified key is trusted without asking the database again (revocation delay).
    api_key_cache_s: float = Field(30.0, ge=0)

    # Failed authentications per source address and API process: past this many within the window,
    # the source gets 429 until the window ends (services/api/auththrottle.py).
    api_auth_failures_per_window: int = Field(20, ge=1)
    api_auth_failure_window_s: float = Field(60.0, gt=0)

    # Per key, per API process: a token bucket of `rate` requests per second and `burst` capacity.
    api_rate_limit_per_s: float = Field(50.0, gt=0)
    api_rate_limit_burst: int = Field(100, ge=1)
    # High-priority sends may go past the limit by this share, drawing on a reserve bucket.
    api_priority_bypass_share: float = Field(0.2, ge=0, le=1)

    api_max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    api_max_upload_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    api_batch_max: int = Field(1000, ge=1, le=1000)
    api_max_contacts: int = Field(100_000, ge=1)
    api_idempotency_ttl_s: float = Field(24 * 3600.0, gt=0)
    api_stats_max_days: int = Field(93, ge=1)

    api_db_pool_size: int = Field(10, ge=1)
    api_db_connect_timeout_s: float = Field(2.0, gt=0)
    api_db_command_timeout_s: float = Field(15.0, gt=0)

    # The campaign scheduler runs inside the API process (any number of replicas may run it).
    api_scheduler_enabled: bool = True
    api_scheduler_interval_s: float = Field(1.0, gt=0)

    def own_development_secrets(self) -> list[str]:
        found = super().own_development_secrets()
        if self.api_key_pepper.get_secret_value() == DEV_PEPPER:
            found.append("SWITCHBOARD_API_KEY_PEPPER")
        return found


@lru_cache(maxsize=1)
def get_api_settings() -> ApiSettings:
    return ApiSettings()
