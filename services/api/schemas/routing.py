"""Requests and responses of /v1/routing: providers, channel routes and policies, tenant overrides.

These are the rows of migration 0003's tables (``providers``, ``channel_routes``, ``channel_policies``,
``tenant_routes``), which senders and responders read; see docs/providers.md for what each field does.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    field_validator,
    model_validator,
)

from services.api.schemas.common import Text
from shared.core.destinations import DestinationError, normalise_destination
from shared.core.models import Channel
from shared.core.providers import KIND_SETTINGS, SECRET, URL, ProviderKind
from shared.core.retry import RetryMode
from shared.core.routing import Pacing, Strategy

PROVIDER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
MAX_PRIORITY = 1_000_000
MAX_COST = 999_999.999999  # numeric(12, 6)
MAX_RATE = 1_000_000.0
MAX_DELAY_S = 7 * 24 * 3600.0
MASK = "********"


# The kinds, the channels each carries and the settings each adapter reads: shared/core/providers.py.
SETTINGS = KIND_SETTINGS
_ENV_REF = re.compile(r"env:SWITCHBOARD_PROVIDER_[A-Za-z0-9_]{1,107}")
_URL = re.compile(r"https?://[^\s/?#]+[^\s]*")
_SECRET_NAME = re.compile(r"token|password|secret|key", re.IGNORECASE)

SettingValue = StrictBool | StrictInt | StrictFloat | Annotated[Text, Field(max_length=2048)]
SettingKey = Annotated[Text, Field(min_length=1, max_length=64)]


def _check_setting(kind: ProviderKind, key: str, value: Any) -> None:
    expected = SETTINGS[kind].get(key)
    if expected is None:
        known = ", ".join(sorted(SETTINGS[kind]))
        raise ValueError(f"settings.{key}: unknown setting for kind {kind.value} (known: {known})")
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    problem = None
    if expected == SECRET:
        if not (isinstance(value, str) and _ENV_REF.fullmatch(value)):
            problem = (
                'must be a reference to the senders\' environment, "env:SWITCHBOARD_PROVIDER_<NAME>";'
                " the API stores no credentials"
            )
    elif expected == URL:
        if not (isinstance(value, str) and _URL.fullmatch(value)):
            problem = "must be an http:// or https:// URL"
    elif expected == "str":
        if not isinstance(value, str):
            problem = "must be a string"
    elif expected == "bool":
        if not isinstance(value, bool):
            problem = "must be true or false"
    elif expected == "port":
        if not (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535):
            problem = "must be an integer port, 1 to 65535"
    elif expected == "pool":
        if not (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 100):
            problem = "must be an integer, 1 to 100"
    elif expected == "seconds" and not (is_number and 0 < value <= 600):
        problem = "must be a number of seconds, more than 0 and at most 600"
    if problem:
        raise ValueError(f"settings.{key} {problem}")


def shown_settings(settings: Any) -> dict[str, Any]:
    """A provider's settings for an operator's eyes: credentials stored literally (written outside the
    API) are masked; "env:NAME" references are shown, they are not secrets."""
    if not isinstance(settings, dict):
        return {}
    shown: dict[str, Any] = {}
    for key, value in settings.items():
        literal = not (isinstance(value, str) and value.startswith("env:"))
        shown[key] = MASK if _SECRET_NAME.search(key) and literal and value not in (None, "") else value
    return shown


# ---- providers -----------------------------------------------------------------------------------------


class ProviderIn(BaseModel):
    """A provider account: its adapter, limits and settings. Operator keys only."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "kind": "sms_gateway",
                    "rate_per_s": 50,
                    "burst": 100,
                    "settings": {"account_sid": "AC1", "auth_token": "env:SWITCHBOARD_PROVIDER_SMSA_TOKEN"},
                }
            ]
        },
    )

    kind: ProviderKind
    active: bool = Field(True, strict=True)
    rate_per_s: float | None = Field(
        None, gt=0, le=MAX_RATE, strict=True, description="Calls per second across all senders; null: none."
    )
    burst: int | None = Field(
        None, ge=1, le=1_000_000, strict=True, description="Bucket size; null: the rate."
    )
    reserved_share: float = Field(
        0.0, ge=0, lt=1, strict=True, description="Share of the burst kept for priority 0 messages."
    )
    pacing: Pacing = Pacing.NONE
    pacing_gap_ms: int | None = Field(
        None, ge=0, le=3_600_000, strict=True, description="Overrides the pacing preset when set."
    )
    settings: dict[SettingKey, SettingValue] = Field(
        default_factory=dict,
        max_length=32,
        description="Adapter settings by kind (see docs/providers.md); credentials as"
        ' "env:SWITCHBOARD_PROVIDER_<NAME>".',
    )
    idempotency_keys: bool | None = Field(
        None,
        strict=True,
        description="Does the provider de-duplicate by our idempotency key? null: what its kind does"
        " (sms_gateway and mock_json do; smtp, whatsapp_cloud, webhook do not).",
    )
    in_doubt: Literal["hold", "resend"] = Field(
        "hold",
        description="For a provider without idempotency keys, an attempt that may have reached it"
        " (a crash, a timeout): hold the log for an operator (IN_DOUBT), or send it again.",
    )
    receipt_timeout_s: float | None = Field(
        None,
        gt=0,
        le=30 * 86400,
        strict=True,
        description="A SENT log without a delivery report after this long counts as overdue; null: never.",
    )

    @model_validator(mode="after")
    def _settings_fit_the_kind(self) -> ProviderIn:
        for key, value in self.settings.items():
            _check_setting(self.kind, key, value)
        if self.burst is not None and self.rate_per_s is None:
            raise ValueError("burst needs rate_per_s (a burst without a rate limits nothing)")
        return self


class ProviderOut(BaseModel):
    name: str
    kind: str
    active: bool
    rate_per_s: float | None
    burst: int | None
    reserved_share: float
    pacing: str
    pacing_gap_ms: int | None
    settings: dict[str, Any] | None = Field(
        description="Only for operator keys (literal credentials masked); null for tenant keys."
    )
    idempotency_keys: bool | None
    in_doubt: str
    receipt_timeout_s: float | None
    channels: list[Channel] = Field(description="The channels that route to this provider.")
    updated_at: datetime


class ProviderList(BaseModel):
    items: list[ProviderOut]


# ---- channels: routes and policy -----------------------------------------------------------------------


class ChannelRouteIn(BaseModel):
    """A provider in a channel's routing. Operator keys only."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"priority": 0, "cost": 0.0075}]}
    )

    priority: int = Field(0, ge=-MAX_PRIORITY, le=MAX_PRIORITY, strict=True, description="Lower goes first.")
    weight: int = Field(100, ge=0, le=10_000, strict=True, description="For the weighted strategy.")
    cost: float = Field(
        0.0, ge=0, le=MAX_COST, strict=True, description="Per message; kept to 6 decimal places."
    )
    active: bool = Field(True, strict=True)
    destinations: list[Annotated[Text, Field(min_length=1, max_length=32)]] = Field(
        default_factory=list,
        max_length=100,
        description="Countries (ISO 3166 alpha-2, e.g. GB) and E.164 prefixes (e.g. +4477) this route"
        " serves; empty: every destination. The most specific match wins (phone channels only).",
    )

    @field_validator("destinations")
    @classmethod
    def _destinations(cls, values: list[str]) -> list[str]:
        try:
            normalised = [normalise_destination(v) for v in values]
        except DestinationError as exc:
            raise ValueError(str(exc)) from exc
        return sorted(set(normalised), key=normalised.index)


class ChannelRouteOut(BaseModel):
    provider: str
    kind: str
    priority: int
    weight: int
    cost: float
    active: bool
    destinations: list[str]
    provider_active: bool
    updated_at: datetime


class PolicyIn(BaseModel):
    """How a channel picks among its routes, and how its failed attempts are retried. Operator keys only."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "strategy": "least_cost",
                    "retry_mode": "custom",
                    "retry_delays_s": [1, 5, 30],
                    "retry_max_attempts": 4,
                }
            ]
        },
    )

    strategy: Strategy = Strategy.FALLBACK
    retry_mode: RetryMode | None = Field(None, description="null: the global backoff settings.")
    retry_initial_s: float | None = Field(None, ge=0, le=MAX_DELAY_S, strict=True)
    retry_max_s: float | None = Field(None, ge=0, le=MAX_DELAY_S, strict=True)
    retry_max_attempts: int | None = Field(None, ge=1, le=100, strict=True)
    retry_delays_s: list[Annotated[float, Field(ge=0, le=MAX_DELAY_S, strict=True)]] | None = Field(
        None, min_length=1, max_length=50, description="The delays of retry_mode custom."
    )
    max_cost: float | None = Field(None, ge=0, le=MAX_COST, strict=True)
    min_success_rate: float | None = Field(None, ge=0, le=1, strict=True)
    failover_after: int | None = Field(
        None,
        ge=1,
        le=100,
        strict=True,
        description="Consecutive transient failures of one message on one provider before its next"
        " attempt goes to the next provider (null: SWITCHBOARD_FAILOVER_AFTER, default 2).",
    )
    retry_after_tolerance_s: float | None = Field(
        None,
        ge=0,
        le=MAX_DELAY_S,
        strict=True,
        description="A 429 asking to wait longer than this moves to the next provider at once (null:"
        " SWITCHBOARD_RETRY_AFTER_TOLERANCE_S, default 30).",
    )

    @model_validator(mode="after")
    def _retry_fields_fit_the_mode(self) -> PolicyIn:
        tuning = {
            "retry_initial_s": self.retry_initial_s,
            "retry_max_s": self.retry_max_s,
            "retry_max_attempts": self.retry_max_attempts,
            "retry_delays_s": self.retry_delays_s,
        }
        if self.retry_mode is None:
            given = [k for k, v in tuning.items() if v is not None]
            if given:
                verb = "needs" if len(given) == 1 else "need"
                raise ValueError(
                    f"{', '.join(given)} {verb} retry_mode (without it the global backoff applies)"
                )
            return self
        if self.retry_mode == RetryMode.CUSTOM and not self.retry_delays_s:
            raise ValueError("retry_mode custom needs retry_delays_s")
        if self.retry_mode != RetryMode.CUSTOM and self.retry_delays_s is not None:
            raise ValueError("retry_delays_s is only used with retry_mode custom")
        if (
            self.retry_initial_s is not None
            and self.retry_max_s is not None
            and self.retry_max_s < self.retry_initial_s
        ):
            raise ValueError("retry_max_s must not be less than retry_initial_s")
        return self


class PolicyOut(BaseModel):
    strategy: Strategy
    retry_mode: RetryMode | None
    retry_initial_s: float | None
    retry_max_s: float | None
    retry_max_attempts: int | None
    retry_delays_s: list[float] | None
    max_cost: float | None
    min_success_rate: float | None
    failover_after: int | None = None
    retry_after_tolerance_s: float | None = None
    configured: bool = Field(description="False: no row for this channel, the defaults shown apply.")
    updated_at: datetime | None


class ChannelOut(BaseModel):
    channel: Channel
    policy: PolicyOut
    routes: list[ChannelRouteOut] = Field(description="Every route of the channel, by priority.")
    chain: list[str] = Field(
        description="The providers the caller's messages may use, in priority order, with the caller's"
        " overrides applied; the strategy then orders them per message."
    )
    source: Literal["database", "settings"] = Field(
        description="settings: no provider is configured in the database yet, so the senders use"
        " SWITCHBOARD_PROVIDER_CHAINS (strategy fallback) and the tables do not apply."
    )


class ChannelList(BaseModel):
    items: list[ChannelOut]


# ---- tenant overrides ----------------------------------------------------------------------------------


class OverrideIn(BaseModel):
    """The caller's own priority for one of a channel's providers, or its exclusion (active false)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"priority": -1}, {"active": False}]}
    )

    priority: int | None = Field(
        None,
        ge=-MAX_PRIORITY,
        le=MAX_PRIORITY,
        strict=True,
        description="Replaces the route's priority for the caller; null: keep the route's own.",
    )
    active: bool = Field(True, strict=True, description="false: never use this provider for the caller.")


class OverrideOut(BaseModel):
    channel: Channel
    provider: str
    priority: int
    active: bool
    routed: bool = Field(
        description="False: the channel no longer routes this provider; no effect until it does."
    )


class OverrideList(BaseModel):
    items: list[OverrideOut]


class ChannelFallbackIn(BaseModel):
    """Where the caller's messages of a channel go when they cannot be delivered on it."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"fallback_channels": ["sms"]}]}
    )

    fallback_channels: list[Channel] = Field(
        min_length=1,
        max_length=4,
        description="In order; each reachable with the same address (a phone number serves sms, mms,"
        " whatsapp and signal). A message's own fallback_channels win over these.",
    )


class ChannelFallbackOut(BaseModel):
    channel: Channel
    fallback_channels: list[Channel]
    updated_at: datetime


class ChannelFallbackList(BaseModel):
    items: list[ChannelFallbackOut]
